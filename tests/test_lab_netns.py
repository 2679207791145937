"""The lab itself: the health check hook, the keepalived configs, the namespace topology,
its teardown (also after a failed start and after an aborted run), and `orch lab`.

Tests marked ``netns`` need root, permission to create network namespaces and
keepalived; without them they are skipped with the reason, never passed.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from orchestrator.lab import mariadb, netns
from orchestrator.lab.hosts import CONF_DIR, HOOKS_DIR, Host, write_host_files
from orchestrator.lab.proc import Proc, run, wait_for

from . import orchtest as t

CHECK = str(HOOKS_DIR / "check-mysql")


@functools.lru_cache(maxsize=None)
def netns_skip_reason() -> Optional[str]:
    return netns.unavailable_reason()


def require_netns() -> None:
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)


def host_network() -> tuple:
    """The host namespace's interfaces, addresses and routes: the lab must never change them."""
    links = run(["ip", "-o", "link", "show"]).stdout
    names = tuple(sorted(re.findall(r"^\d+: ([^:@]+)", links, re.M)))
    return names, run(["ip", "-o", "addr", "show"]).stdout, run(["ip", "route", "show", "table", "all"]).stdout


def lab_namespaces() -> list:
    return [ns for ns in run(["ip", "netns", "list"]).stdout.split() if ns.startswith(netns.PREFIX + "-")]


# ---------------------------------------------------------------------------- hooks/check-mysql


@pytest.fixture
def check_cnf(mariadb_pair, tmp_path):
    server1, server2 = mariadb_pair
    h1 = Host("server1", 1, str(tmp_path / "server1"), server1.host, server1.port, 1)
    h2 = Host("server2", 2, str(tmp_path / "server2"), server2.host, server2.port, 2)
    write_host_files(h1, h2)
    return server1, h1.file("check.cnf")


def run_check(cnf: Path, env: Optional[dict] = None) -> tuple:
    start = time.perf_counter()
    proc = subprocess.run([CHECK, str(cnf)], capture_output=True, text=True, timeout=10, env={**os.environ, **(env or {})})
    return proc.returncode, time.perf_counter() - start, proc.stderr


@pytest.mark.mariadb
def test_check_mysql_passes_fast_on_a_running_server(check_cnf):
    _, cnf = check_cnf
    assert oct(cnf.stat().st_mode & 0o777) == "0o600"
    timings = []
    for _ in range(20):
        code, elapsed, err = run_check(cnf)
        assert code == 0, err
        timings.append(elapsed)
    # keepalived runs it every second: it must cost a few milliseconds, not an interpreter start.
    median = statistics.median(timings)
    print(f"check-mysql: median {median * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms over 20 runs")
    assert median < 0.1


@pytest.mark.mariadb
def test_check_mysql_fails_when_the_server_is_down_or_hung(check_cnf):
    server, cnf = check_cnf
    server.pause()
    try:
        code, elapsed, _ = run_check(cnf)
        assert code != 0
        assert elapsed < 2.5, f"a hung server must fail the check within connect_timeout, took {elapsed:.2f}s"
    finally:
        server.resume()
    assert run_check(cnf)[0] == 0
    server.kill()
    code, elapsed, _ = run_check(cnf)
    assert code != 0 and elapsed < 1


@pytest.mark.mariadb
def test_check_mysql_fails_on_wrong_password(check_cnf):
    _, cnf = check_cnf
    cnf.write_text(cnf.read_text().replace(mariadb.ORCH_CREDENTIALS.password, "wrong-password"))
    assert run_check(cnf)[0] != 0


def test_check_mysql_keeps_the_password_out_of_argv(tmp_path):
    # A stand-in client records its argv: the hook may pass only the defaults file.
    fake = tmp_path / "client"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path}/argv\n")
    fake.chmod(0o755)
    cnf = tmp_path / "check.cnf"
    cnf.write_text("[client]\nuser=orch\npassword=s3cret-pw\n")
    assert run_check(cnf, {"ORCH_MYSQL_CLIENT": str(fake)})[0] == 0
    argv = (tmp_path / "argv").read_text()
    assert "s3cret-pw" not in argv
    assert f"--defaults-file={cnf}" in argv.splitlines()


# ---------------------------------------------------------------------------- conf/keepalived-*.conf


@pytest.mark.parametrize("name", ["server1", "server2"])
def test_keepalived_conf_is_what_the_measurements_require(name):
    text = (CONF_DIR / f"keepalived-{name}.conf").read_text()
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert re.search(r"^\s*state BACKUP\s*$", body, re.M)
    assert re.search(r"^\s*nopreempt\s*$", body, re.M)
    assert re.search(r"^\s*enable_script_security\s*$", body, re.M)
    assert re.search(r"^\s*script_user root\s*$", body, re.M), "without script_user keepalived silently drops the check"
    weights = re.findall(r"^\s*weight\s+(\S+)", body, re.M)
    assert weights == ["0"], "a weight on a check with nopreempt never fails over; only the track file's weight 0 (FAULT)"
    assert re.search(r'track_file orch_handover\s*{\s*file "/var/lib/orch/keepalived.track"\s*weight 0', body)
    assert re.search(r'script "/usr/bin/ping -n -q -c 1 -W 1 10.0.0.254"', body), "the witness check (partitions)"
    for setting in ("vrrp_garp_lower_prio_repeat", "vrrp_higher_prio_send_advert true", "vrrp_garp_master_refresh"):
        assert setting in body, f"{setting}: clients must not keep the loser's MAC after a heal"
    assert "vrrp_strict" not in body
    assert re.search(r"^\s*advert_int 1\s*$", body, re.M)
    for setting in ("interval 1", "fall 2", "rise 2"):
        assert re.search(rf"^\s*{setting}\s*$", body, re.M)
    assert re.search(r'notify "/usr/local/lib/orch/keepalived-notify -c /etc/orch/orch.yaml --node ' + name, body)
    assert re.search(r'script "/usr/local/lib/orch/check-mysql /etc/orch/check.cnf"', body)
    assert re.search(r"track_script\s*{\s*chk_mysql\s*chk_witness\s*}", body)


def test_lab_renders_the_conf_files_it_runs(tmp_path):
    host = Host("server1", 1, str(tmp_path / "server1"), "10.213.0.1", 3306, 2345, netns="x")
    text = netns.render_keepalived("server1", tmp_path / "hooks", host, tmp_path / "hooks" / "keepalived-notify")
    assert f"{netns.VIP}/{netns.PREFIXLEN} dev eth0" in text
    assert f'notify "{tmp_path}/hooks/keepalived-notify -c {host.file("orch.yaml")} --node server1' in text
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "/etc/orch" not in body and "/usr/local" not in body and "/var/log" not in body


@pytest.mark.parametrize("name", ["server1", "server2"])
def test_keepalived_accepts_the_rendered_conf(tmp_path, name):
    if not os.access(netns.KEEPALIVED, os.X_OK):
        pytest.skip(f"keepalived not installed at {netns.KEEPALIVED}")
    host = Host(name, 1, str(tmp_path / name), "10.213.0.1", 3306, 2345, netns="x")
    conf = tmp_path / "k.conf"
    conf.write_text(netns.render_keepalived(name, HOOKS_DIR, host, HOOKS_DIR / "keepalived-notify"))
    proc = subprocess.run([netns.KEEPALIVED, "--config-test", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unavailable_reason_names_missing_root():
    if not shutil.which("setpriv") or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the probe as an unprivileged user")
    code = "from orchestrator.lab.netns import unavailable_reason; print(unavailable_reason())"
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30, cwd=str(Path(__file__).parent.parent))
    assert "needs root" in proc.stdout, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- the namespace lab


@pytest.fixture(scope="module")
def built_lab(tmp_path_factory, mariadb_template):
    require_netns()
    netns.cleanup_stale()
    before = host_network()
    lab = netns.NetnsLab(str(tmp_path_factory.mktemp("netns-lab")), template=mariadb_template)
    lab.up()
    yield lab, before
    lab.down()


@pytest.mark.netns
def test_lab_builds_two_hosts_a_client_and_a_bridge_in_its_own_namespaces(built_lab):
    lab, before = built_lab
    assert set(lab.namespaces) <= set(lab_namespaces())
    assert host_network() == before, "the lab changed the host namespace's interfaces, addresses or routes"
    for host in lab.hosts.values():
        addrs = run(["ip", "-n", host.netns, "-o", "-4", "addr", "show", "dev", netns.IFACE]).stdout
        assert f"{host.address}/{netns.PREFIXLEN}" in addrs
    assert lab.vip_holders() == ["server1"]
    assert [lab.keepalived_state(h) for h in lab.hosts.values()] == ["MASTER", "BACKUP"]
    assert lab.health() == []


@pytest.mark.netns
def test_each_daemon_runs_inside_its_hosts_namespace(built_lab):
    lab, _ = built_lab
    for key, proc in lab.procs.items():
        host = lab.hosts[key.split(".")[0]]
        assert proc.alive(), key
        ns_inode = os.stat(f"/run/netns/{host.netns}").st_ino
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == ns_inode, f"{key} is not in {host.netns}"
    for name, db in lab.dbs.items():
        assert os.stat(f"/proc/{db.pid}/ns/net").st_ino == os.stat(f"/run/netns/{lab.hosts[name].netns}").st_ino


@pytest.mark.netns
def test_keepalived_kept_the_health_check_and_runs_the_hook(built_lab):
    lab, _ = built_lab
    for host in lab.hosts.values():
        log = host.file("keepalived.log").read_text()
        assert "chk_mysql" in log and "succeeded" in log, "keepalived dropped or never ran the vrrp_script"
        assert "SECURITY VIOLATION" not in log and "disabling" not in log.lower(), log[-2000:]
    # keepalived ran the real hook, which ran orch with this host's config.
    assert "decision (MASTER on server1)" in lab.hosts["server1"].file("notify.log").read_text()
    assert "decision (BACKUP on server2)" in lab.hosts["server2"].file("notify.log").read_text()


@pytest.mark.netns
def test_client_namespace_writes_through_the_vip_as_the_app_account(built_lab):
    lab, _ = built_lab
    with lab.writer("smoke") as writer:
        wait_for("ten writes acknowledged through the VIP", lambda: len(writer.acked()) > 10, 15, interval=0.05)
    ids = {a[0] for a in writer.acked()}
    assert ids <= {int(r["id"]) for r in lab.dbs["server1"].sql("SELECT id FROM test.drill")}


@pytest.mark.netns
def test_teardown_after_a_failed_start_leaves_nothing(tmp_path):
    require_netns()
    lab = netns.NetnsLab(str(tmp_path / "broken"), template=str(tmp_path / "no-such-template"))
    with pytest.raises(Exception):
        lab.up()
    assert not set(lab.namespaces) & set(lab_namespaces())
    assert not lab.run_dir.exists()


@pytest.mark.netns
def test_cleanup_stale_removes_the_lab_of_a_dead_run(tmp_path, mariadb_template):
    require_netns()
    # A run that died (SIGKILL) after building: its owner pid no longer exists.
    code = (
        "import os, sys; from orchestrator.lab import netns;"
        f"lab = netns.NetnsLab({str(tmp_path / 'dead')!r}, template={mariadb_template!r}); lab.up();"
        "print(lab.lab_id, flush=True); os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).parent.parent))
    lab_id = proc.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{6}", lab_id), proc.stdout + proc.stderr
    state = json.loads((netns.RUN_ROOT / lab_id / "lab.json").read_text())
    leftover = [Proc(**p) for p in state["procs"].values()]
    assert any(p.alive() for p in leftover)
    assert lab_id in netns.cleanup_stale()
    assert not [ns for ns in lab_namespaces() if ns.startswith(f"{netns.PREFIX}-{lab_id}-")]
    assert not any(p.alive() for p in leftover)
    assert not any(Proc(**p).alive() for p in state["mariadbd"].values())


# ---------------------------------------------------------------------------- orch lab


def orch_lab(*args: str, timeout: float = 180) -> t.Result:
    argv = [t.ORCH, "lab", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return t.Result(argv, proc.returncode, proc.stdout, proc.stderr)


def _sandbox_round_trip(workdir: Path, mode: str) -> None:
    r = orch_lab("up", "--dir", str(workdir), "--mode", mode)
    try:
        assert r.code == 0, r
        assert f"{mode} lab" in r.stdout and "lab ready" in r.stdout
        r = orch_lab("status", "--dir", str(workdir))
        assert r.code == 0 and "health: ok" in r.stdout, r
        r = orch_lab("failover", "--dir", str(workdir))
        assert r.code == 0, r
        assert "kill -9 mysqld on server1" in r.stdout and "healed" in r.stdout, r
        r = orch_lab("status", "--dir", str(workdir))
        assert r.code == 0 and "server2: writable" in r.stdout, r
        t.assert_no_secrets(r.stdout, r.stderr)
    finally:
        down = orch_lab("down", "--dir", str(workdir))
    assert down.code == 0, down
    assert not (workdir / "lab.json").exists()


@pytest.mark.mariadb
def test_orch_lab_loopback_up_failover_down(tmp_path):
    _sandbox_round_trip(tmp_path / "lab", "loopback")
    assert orch_lab("status", "--dir", str(tmp_path / "lab")).code == 1


@pytest.mark.netns
def test_orch_lab_netns_up_failover_down(tmp_path):
    require_netns()
    before = set(lab_namespaces())
    _sandbox_round_trip(tmp_path / "lab", "netns")
    assert set(lab_namespaces()) <= before
    # No process of the lab is left (the state file recorded them).
    assert "orchlab" not in run(["ps", "-eo", "args"]).stdout.replace("pytest", "")
