"""The fast keepalived profile (conf/keepalived-fast-server{1,2}.conf) in the namespace lab.

kill -9 of the master's mariadbd with a writer through the VIP: vrrp_track_process puts
the master in FAULT at once, VRRPv3 with advert_int 0.2 moves the VIP, orch promotes; no
acknowledged row lost, healed afterwards (timings printed, not asserted: the machine is
shared). And the false-failover risk: both cores busy for 30 s must not move the VIP.
The drills of tests/test_drills.py and tests/test_partitions.py run with this profile too.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import time
from typing import List, Optional

import pytest

from orchestrator.lab import LabError, netns
from orchestrator.lab.hosts import CONF_DIR, Host
from orchestrator.lab.probes import Sampler
from orchestrator.lab.proc import tail, wait_for

from .orchtest import write_report

pytestmark = pytest.mark.netns


@functools.lru_cache(maxsize=None)
def skip_reason() -> Optional[str]:
    return netns.unavailable_reason()


@pytest.mark.parametrize("name", ["server1", "server2"])
def test_fast_conf_is_the_default_design_with_sub_second_detection(name):
    body = "\n".join(line.split("#", 1)[0] for line in (CONF_DIR / f"keepalived-fast-{name}.conf").read_text().splitlines())
    default = "\n".join(line.split("#", 1)[0] for line in (CONF_DIR / f"keepalived-{name}.conf").read_text().splitlines())
    assert re.search(r"^\s*vrrp_version 3\s*$", body, re.M)
    assert re.search(r"^\s*advert_int 0\.2\s*$", body, re.M)
    assert re.search(r'track_file mysqld_down\s*{\s*file "/var/lib/orch/mysqld.track"\s*weight 0', body)
    assert re.search(r"track_file\s*{\s*orch_handover\s*mysqld_down\s*}", body)
    # Everything else of the default design is kept: the health check, the witness, the track file, nopreempt.
    assert re.search(r'script "/usr/bin/ping -n -q -c 3 -i 0.2 -w 1 10.0.0.254"\s*interval 1\s*timeout 2\s*fall 1', body)
    for kept in ("chk_mysql", "chk_witness", "track_file orch_handover", "nopreempt", "state BACKUP", "enable_script_security",
                 "vrrp_higher_prio_send_advert true", "priority"):
        assert kept in body and kept in default, kept
    assert re.findall(r"^\s*weight\s+(\S+)", body, re.M) == ["0", "0"]


def test_lab_renders_the_fast_conf_with_its_own_server(tmp_path):
    host = Host("server1", 1, str(tmp_path / "server1"), "10.213.0.1", 3306, 2345, netns="x")
    text = netns.render_keepalived("server1", tmp_path / "hooks", host, tmp_path / "hooks" / "keepalived-notify", "fast")
    assert f'file "{tmp_path}/server1/state/mysqld.track"' in text
    assert "advert_int 0.2" in text and "/etc/orch" not in text
    # Events through orch notify-fifo: the host's FIFO, and no notify script (never both).
    assert f"vrrp_notify_fifo {tmp_path}/server1/state/keepalived.fifo\n" in text
    assert not re.search(r'^\s*notify\s', text, re.M) and "/run/orch" not in text
    # The benchmark's floor (no orch): the no-op hook as the notify script, no FIFO.
    floor = netns.render_keepalived("server1", tmp_path / "hooks", host, tmp_path / "hooks" / "noop-notify", "fast", fifo=False)
    assert "vrrp_notify_fifo" not in floor
    assert re.findall(r'^\s*notify\s+"([^"]*)"', floor, re.M) == [f"{tmp_path}/hooks/noop-notify"]


def test_watcher_writes_the_track_file_the_moment_the_process_exits(tmp_path):
    """orch watch-mysqld: 0 while the pid file's process runs, 1 within a fraction of a second of its exit, 0 again for a new one."""
    from .orchtest import ORCH

    pid_file, track = tmp_path / "mysqld.pid", tmp_path / "mysqld.track"

    def value() -> str:
        try:
            return track.read_text().strip()
        except OSError:
            return ""

    server = subprocess.Popen(["sleep", "60"])
    pid_file.write_text(f"{server.pid}\n")
    watcher = subprocess.Popen([ORCH, "watch-mysqld", "--pid-file", str(pid_file), "--track-file", str(track)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the watcher to write 0", lambda: value() == "0", 10)
        server.kill()
        killed = time.monotonic()
        server.wait()
        wait_for("the watcher to write 1", lambda: value() == "1", 5, interval=0.005)
        took = time.monotonic() - killed
        assert took < 0.3, f"the track file said 1 only {took:.2f}s after the exit"
        again = subprocess.Popen(["sleep", "60"])
        try:
            pid_file.write_text(f"{again.pid}\n")
            wait_for("the watcher to write 0 for the restarted server", lambda: value() == "0", 5)
        finally:
            again.kill()
            again.wait()
    finally:
        server.kill()
        watcher.terminate()
        assert watcher.wait(5) == 0, watcher.stderr.read() if watcher.stderr else ""


def test_watcher_refuses_relative_paths(tmp_path):
    from .orchtest import ORCH

    r = subprocess.run([ORCH, "watch-mysqld", "--pid-file", "mysqld.pid", "--track-file", str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--pid-file must be an absolute path" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def lab(tmp_path_factory, mariadb_template):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    netns.cleanup_stale()
    lab = netns.NetnsLab(str(tmp_path_factory.mktemp("fast")), template=mariadb_template, profile="fast")
    lab.up()
    yield lab
    lab.down()


@pytest.fixture(scope="module")
def report(request):
    lines: List[str] = []
    yield lines
    write_report(request, "fast keepalived profile (seconds):", lines)


def test_kill_master_mariadbd_fast_profile(lab, report):
    lab.wait_healthy(30)
    old = lab.master()
    new = lab.peer_of(old)
    writer = lab.writer("fast-kill", connect_timeout=0.05)
    sampler = Sampler(lab.dbs)
    try:
        wait_for(f"{old}'s semi-sync to be on", lambda: lab.semisync_on(old), 30)
        writer.start()
        sampler.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        lab.kill_mysqld(old)
        t_vip = wait_for(f"the VIP to move to {new}", lambda: lab.vip_holders() == [new] and time.monotonic(), 15, interval=0.005)
        t_ack = wait_for("writes through the VIP", lambda: writer.acked_since(t_vip), 15, interval=0.005)[0][1]
        lab.start_mysqld(old)
        time.sleep(0.3)
        writer.stop()
        acked = [a[0] for a in writer.acked()]
        lab.wait_healthy(40, acked, sampler)
    except LabError as exc:
        pytest.fail(f"fast profile failover: {exc}{lab.logs_hint()}\nwriter: {tail(writer.log_path, 3)}", pytrace=False)
    finally:
        writer.stop()
        sampler.stop()
    before = [a[1] for a in writer.acked() if a[1] < t0]
    report.append(f"kill -9 mariadbd: VIP on {new} after {t_vip - t0:.2f}, write outage {t_ack - (before[-1] if before else t0):.2f}, "
                  f"{len(acked)} acked, none lost")


def test_two_busy_cores_for_30s_move_nothing(lab, report):
    """The false-failover risk of a 0.2 s advert: a CPU hog on the master host must not fail over."""
    lab.wait_healthy(30)
    old = lab.master()
    host = lab.hosts[old]
    started = time.monotonic()
    hogs = [subprocess.Popen(["ip", "netns", "exec", host.netns or "", sys.executable, "-c",
                              "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"])
            for _ in range(2)]
    holders = set()
    states = set()
    try:
        while any(h.poll() is None for h in hogs):
            holders.add(tuple(lab.vip_holders()))
            states.add(lab.keepalived_state(host))
            time.sleep(0.05)
    finally:
        for h in hogs:
            if h.poll() is None:
                h.kill()
            h.wait(5)
    assert holders == {(old,)}, f"the VIP moved under CPU load: holders seen {holders}; keepalived states {states}"
    assert states == {"MASTER"}, states
    report.append(f"two busy cores on {old}'s host for {time.monotonic() - started:.0f}s: VIP stayed, keepalived MASTER throughout")
