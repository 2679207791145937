"""orch doctor: real servers configured right and wrong, keepalived samples, JSON output."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from orchestrator.clientfile import client_options_of
from orchestrator.commands import doctor as d
from orchestrator.config import Keepalived
from orchestrator.flavors import mariadb
from orchestrator.flavors.common import parse_grants
from orchestrator.keepalived import conf
from orchestrator.lab import mariadb as lab

from . import orchtest as t

ROOT = Path(__file__).resolve().parent.parent
INSTALL_PAGE = ROOT / "docs" / "install.md"  # its Accounts step holds the GRANT lines


def run(cfg: str, *extra: str, node: str = "server1") -> Tuple[int, Dict[str, Any], t.Result]:
    r = t.orch(cfg, node, "doctor", "--format", "json", *extra, timeout=60)
    doc = json.loads(r.stdout)
    assert doc["exit"] == r.code, r
    t.assert_no_secrets(r.stdout, r.stderr)
    return r.code, doc, r


def statuses(doc: Dict[str, Any], name: str) -> List[str]:
    return [c["status"] for c in doc["checks"] if c["name"] == name]


def check(doc: Dict[str, Any], name: str) -> Dict[str, str]:
    found = [c for c in doc["checks"] if c["name"] == name]
    assert len(found) == 1, (name, [c["name"] for c in doc["checks"]])
    return found[0]


# --- real servers ------------------------------------------------------------------------------


@pytest.mark.mariadb
def test_healthy_pair_passes_and_auto_increment_is_a_warning(cluster):
    s1, s2, cfg, state = cluster
    code, doc, r = run(cfg)
    assert code == 0, r
    assert doc["summary"]["fail"] == 0
    for name in ("roles", "server2: replication threads", "server2: replication lag", "server2: errant GTIDs",
                 "server1: binary log", "server2: binlog_row_image", "server1: orch account privileges",
                 "server1: replication account", "server2: replication account", "server_id",
                 "server2: read_only in the configuration"):
        assert check(doc, name)["status"] == "pass", check(doc, name)
    assert check(doc, "server1: replication account")["detail"].endswith("and server2 replicates from it")
    # The lab's master has no read_only in its my.cnf: it would come back writable after a restart.
    assert check(doc, "server1: read_only in the configuration")["status"] == "warn"
    # Same auto_increment settings on both: a warning, exit still 0.
    ai = check(doc, "auto_increment")
    assert ai["status"] == "warn" and "same keys" in ai["detail"] and ai["fix"]
    s1.sql("SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 1")
    s2.sql("SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 2")
    code, doc, r = run(cfg)
    assert code == 0 and check(doc, "auto_increment")["status"] == "pass", r
    # The table output: one line per check, the fix under each warning, a summary.
    r = t.orch(cfg, "server1", "doctor")
    assert r.code == 0, r
    assert re.search(r"^PASS +roles +server1 is the writable master", r.stdout, re.M)
    assert re.search(r"^WARN +server1: read_only in the configuration", r.stdout, re.M)
    assert re.search(r"^ +fix: put read_only=ON", r.stdout, re.M)
    assert re.search(r"^\d+ pass, \d+ warn, 0 fail$", r.stdout, re.M)


@pytest.mark.mariadb
def test_each_server_setting_seen_failing(cluster):
    s1, s2, cfg, state = cluster
    s2.sql("SET GLOBAL binlog_row_image = 'MINIMAL'")
    code, doc, r = run(cfg)
    assert code == 1, r
    c = check(doc, "server2: binlog_row_image")
    assert c["status"] == "fail" and "MINIMAL" in c["detail"] and "FULL" in c["fix"]
    s2.sql("SET GLOBAL binlog_row_image = 'FULL'")
    s1.sql("SET GLOBAL binlog_format = 'STATEMENT'")
    s2.sql("SET GLOBAL gtid_strict_mode = OFF")
    s2.sql("SET GLOBAL server_id = 1")
    s2.sql("SET GLOBAL read_only = 1")  # set again at runtime: where my.cnf stands is unknown now
    code, doc, r = run(cfg)
    assert code == 1, r
    assert check(doc, "server1: binlog_format")["status"] == "fail"
    assert check(doc, "server2: GTIDs")["status"] == "warn"
    assert check(doc, "server_id")["status"] == "fail"
    ro = check(doc, "server2: read_only in the configuration")
    assert ro["status"] == "warn" and "cannot read my.cnf" in ro["detail"]
    assert doc["summary"]["fail"] == 2, doc


@pytest.mark.mariadb
def test_log_bin_and_log_slave_updates_need_a_restart_to_break(cluster):
    s1, s2, cfg, state = cluster
    s2.stop()
    s2.extra_options["log_slave_updates"] = "OFF"
    s2.start()
    lab.wait_replica_running(s2)
    code, doc, r = run(cfg)
    assert code == 1 and check(doc, "server2: log_slave_updates")["status"] == "fail", r
    s2.stop()
    s2.extra_options.update({"log_bin": None, "log_slave_updates": None})
    s2.start()
    code, doc, r = run(cfg)
    assert code == 1 and check(doc, "server2: binary log")["status"] == "fail", r


@pytest.mark.mariadb
def test_replication_problems_fail(cluster):
    s1, s2, cfg, state = cluster
    s2.sql("STOP SLAVE SQL_THREAD")
    code, doc, r = run(cfg)
    assert code == 1, r
    c = check(doc, "server2: replication threads")
    assert c["status"] == "fail" and "SQL thread stopped" in c["detail"]
    s2.sql("START SLAVE SQL_THREAD")
    lab.wait_replica_running(s2)
    s2.sql("INSERT INTO test.t VALUES (99, 'written on the replica')")  # root bypasses read_only: errant
    code, doc, r = run(cfg)
    assert code == 1, r
    c = check(doc, "server2: errant GTIDs")
    assert c["status"] == "fail" and "0-2-" in c["detail"]
    s2.sql("SET GLOBAL read_only = 0")
    code, doc, r = run(cfg)
    assert code == 1 and check(doc, "roles")["status"] == "fail" and "split brain" in check(doc, "roles")["detail"], r
    s1.sql("SET GLOBAL read_only = 1")
    s2.sql("SET GLOBAL read_only = 1")
    code, doc, r = run(cfg)
    assert code == 1 and "no server is writable" in check(doc, "roles")["detail"], r
    s2.kill()
    code, doc, r = run(cfg)
    assert code == 1 and check(doc, "server2: reachable")["status"] == "fail", r


@pytest.mark.mariadb
def test_replication_lag_is_a_warning(cluster, tmp_path):
    s1, s2, cfg, state = cluster
    s2.sql("STOP SLAVE")
    s2.sql("CHANGE MASTER TO MASTER_DELAY = 60")  # the replica applies a minute late
    s2.sql("START SLAVE")
    lab.wait_replica_running(s2)
    s1.sql("INSERT INTO test.t VALUES (1, 'late')")
    lagging = t.write_config(tmp_path / "lag.yaml", t.config_dict(s1, s2, state, maintainer={"max_lag": 1}))

    def lag_seen():
        code, doc, r = run(lagging)
        return doc if check(doc, "server2: replication lag")["status"] == "warn" else None

    doc = None
    for _ in range(50):
        doc = lag_seen()
        if doc:
            break
    assert doc is not None, "no lag warning"
    c = check(doc, "server2: replication lag")
    assert "behind (maintainer.max_lag is 1s)" in c["detail"] and doc["exit"] == 0


@pytest.mark.mariadb
def test_wrong_replication_password_fails_and_is_never_printed(cluster, tmp_path):
    s1, s2, cfg, state = cluster
    wrong = "wrong-repl-password-123"
    raw = t.config_dict(s1, s2, state)
    raw["replication"] = {"user": lab.REPL_CREDENTIALS.user, "password": wrong}
    bad = t.write_config(tmp_path / "bad.yaml", raw)
    code, doc, r = run(bad)
    assert code == 1, r
    for node in ("server1", "server2"):
        c = check(doc, f"{node}: replication account")
        assert c["status"] == "fail" and "Access denied" in c["detail"], c
    table = t.orch(bad, "server1", "doctor")
    assert table.code == 1
    t.assert_no_secrets(r.stdout, r.stderr, table.stdout, table.stderr, extra=(wrong,))


@pytest.mark.mariadb
@pytest.mark.parametrize("missing", [None, "READ_ONLY ADMIN", "SLAVE MONITOR"])
def test_orch_account_privileges_against_readme(mariadb_pair, tmp_path, missing):
    s1, s2 = mariadb_pair
    grant = readme_grant()
    reduced = grant.replace(f"{missing}, ", "").replace(f", {missing}", "") if missing else grant
    for s in (s1, s2):
        s.create_account(lab.Credentials("orchmin", "orchmin-pw"), reduced if s is s1 else grant)
    raw = t.config_dict(s1, s2, str(tmp_path / "state"))
    raw["mysql"] = {"user": "orchmin", "password": "orchmin-pw", "connect_timeout": 1}
    cfg = t.write_config(tmp_path / "orch.yaml", raw)
    code, doc, r = run(cfg)
    assert check(doc, "server2: orch account privileges")["status"] == "pass", r
    c = check(doc, "server1: orch account privileges")
    if missing is None:
        assert c["status"] == "pass" and code == 0, r
    else:
        assert c["status"] == "fail" and code == 1, r
        assert c["detail"].startswith(f"missing {missing} (") and c["fix"].startswith(f"GRANT {missing} ON *.*")
    t.assert_no_secrets(r.stdout, extra=("orchmin-pw",))


@pytest.mark.mariadb
def test_semi_sync_policy(cluster, tmp_path):
    s1, s2, cfg, state = cluster
    code, doc, r = run(cfg)
    assert check(doc, "semi-sync")["status"] == "warn" and "asynchronous" in check(doc, "semi-sync")["detail"]
    s2.sql("SET GLOBAL rpl_semi_sync_slave_enabled = ON")
    s2.sql("STOP SLAVE IO_THREAD")
    s2.sql("START SLAVE IO_THREAD")
    s1.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON, rpl_semi_sync_master_timeout = 2000")
    code, doc, r = run(cfg)
    assert check(doc, "semi-sync")["status"] == "pass" and "after 2000 ms" in check(doc, "semi-sync")["detail"], r
    # No fallback, but orch does not manage the wait: writes would hang without the replica.
    s1.sql("SET GLOBAL rpl_semi_sync_master_timeout = 31536000000")
    code, doc, r = run(cfg)
    assert code == 1 and check(doc, "semi-sync")["status"] == "fail", r
    assert "failover.semi_sync" in check(doc, "semi-sync")["fix"]
    # Managed by orch: then the replica must acknowledge.
    raw = t.config_dict(s1, s2, state, failover={"catchup_timeout": 5, "semi_sync": True, "witness": "127.0.0.1"})
    managed = t.write_config(tmp_path / "semi.yaml", raw)
    code, doc, r = run(managed)
    assert code == 0, r
    assert check(doc, "semi-sync: server1 fallback")["status"] == "pass"
    assert check(doc, "semi-sync: server2 acknowledges")["status"] == "pass"
    s2.sql("SET GLOBAL rpl_semi_sync_slave_enabled = OFF")
    code, doc, r = run(managed)
    assert code == 1 and check(doc, "semi-sync: server2 acknowledges")["status"] == "fail", r
    s1.sql("SET GLOBAL rpl_semi_sync_master_enabled = OFF")  # the lab's teardown must not wait on it


@pytest.mark.mariadb
def test_atlas_reachable_with_the_expected_backends(cluster, tmp_path):
    from orchestrator.lab.atlas_standin.standin import AtlasStandin

    s1, s2, cfg, state = cluster
    conf = tmp_path / "atlas.cnf"
    conf.write_text("[mysql-proxy]\nadmin-username = user\nadmin-password = atlas-pw\nadmin-address = 127.0.0.1:2345\n"
                    f"proxy-backend-addresses = 127.0.0.1:3999\nproxy-read-only-backend-addresses = {s2.host}:{s2.port}\n")
    standin = AtlasStandin(str(conf), host="127.0.0.1", port=0, check_interval=None).start()
    try:
        host, port = standin.address
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed = sock.getsockname()[1]
        atlas = [{"name": "local", "admin": {"host": host, "port": port, "user": "user", "password": "atlas-pw"}},
                 {"name": "gone", "admin": {"host": "127.0.0.1", "port": closed, "user": "user", "password": "atlas-pw"}}]
        with_atlas = t.write_config(tmp_path / "atlas.yaml", t.config_dict(s1, s2, state, atlas=atlas))
        code, doc, r = run(with_atlas)
        assert code == 1, r
        assert check(doc, "atlas local read backends")["status"] == "pass"
        assert check(doc, "atlas gone")["status"] == "fail"
        s2.sql("STOP SLAVE SQL_THREAD")  # no longer a healthy read backend: the maintainer would remove it
        code, doc, r = run(with_atlas)
        c = check(doc, "atlas local read backends")
        assert c["status"] == "warn" and f"remove read-only backend {s2.host}:{s2.port}" in c["detail"], c
        t.assert_no_secrets(r.stdout, extra=("atlas-pw",))
    finally:
        standin.stop()


def test_bad_input_is_a_one_line_error(tmp_path):
    config = tmp_path / "orch.yaml"
    config.write_text("cluster: x\n")
    r = t.orch(str(config), None, "doctor", "--keepalived-config", str(tmp_path / "missing.conf"))
    assert r.code == 2 and "cannot read" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    r = t.orch(str(config), None, "doctor", "--format", "yaml")
    assert r.code == 2 and "--format" in r.stderr, r


# --- pure checks -------------------------------------------------------------------------------


def readme_grant() -> str:
    m = re.search(r"^GRANT (.+) ON \*\.\* TO 'orch'@", INSTALL_PAGE.read_text(), re.M)
    assert m, "docs/install.md lost the orch GRANT line"
    return m.group(1)


def test_required_privileges_are_readmes_grant_line():
    assert [p for p, _ in mariadb.PRIVILEGES] == [p.strip() for p in readme_grant().split(",")]


def test_parse_grants_keeps_names_never_lines():
    lines = ["GRANT RELOAD, PROCESS ON *.* TO `orch`@`%` IDENTIFIED BY PASSWORD '*ABCDEF'",
             "GRANT SELECT ON `test`.* TO `orch`@`%`", "GRANT `ops` TO `orch`@`%`"]
    assert parse_grants(lines) == (("RELOAD", "PROCESS"), True)


def mysql_facts(name: str, **variables: str) -> d.ServerFacts:
    base = {"log_bin": "ON", "gtid_mode": "ON", "enforce_gtid_consistency": "ON", "log_replica_updates": "ON",
            "binlog_format": "ROW", "binlog_row_image": "FULL", "server_id": "1", "server_uuid": "u1"}
    return d.ServerFacts(name, True, flavor="mysql", variables={**base, **variables})


def test_mysql_gtids_and_uuid():
    ok = d.check_binlog(mysql_facts("a"))
    assert all(c.status == "pass" for c in ok)
    bad = {c.name: c.status for c in d.check_binlog(mysql_facts("a", gtid_mode="OFF_PERMISSIVE", log_replica_updates="OFF"))}
    assert bad["a: GTIDs"] == "fail" and bad["a: log_slave_updates"] == "fail"
    same = {c.name: c.status for c in d.check_server_ids(mysql_facts("a"), mysql_facts("b", server_id="2"))}
    assert same == {"server_id": "pass", "server_uuid": "fail"}


def test_privileges_mysql_super_covers_dynamic_ones():
    f = d.ServerFacts("a", True, flavor="mysql", grants=("SUPER", "REPLICATION CLIENT", "RELOAD", "PROCESS"))
    assert d.check_privileges(f, semi_sync=False)[0].status == "pass"
    f = d.ServerFacts("a", True, flavor="mysql", grants=("REPLICATION CLIENT", "RELOAD", "PROCESS"))
    c = d.check_privileges(f, semi_sync=False)[0]
    assert c.status == "fail" and "SYSTEM_VARIABLES_ADMIN" in c.detail and "CONNECTION_ADMIN" in c.detail


# --- keepalived ---------------------------------------------------------------------------------

KA = Keepalived(instance="VI_1", vip="10.0.0.100")


def ka_checks(text: str, ka: Keepalived = KA) -> Dict[str, d.Check]:
    return {c.name: c for c in d.check_keepalived(conf.parse(text), ka, "keepalived.conf")}


@pytest.mark.parametrize("sample", ["keepalived-server1.conf", "keepalived-server2.conf", "keepalived-fifo-server1.conf"])
def test_shipped_keepalived_samples_pass(sample):
    checks = ka_checks((ROOT / "conf" / sample).read_text())
    assert {n: c.status for n, c in checks.items() if c.status != "pass"} == {}
    assert set(checks) >= {"keepalived events", "keepalived nopreempt", "keepalived weight trap",
                           "keepalived script security", "keepalived VIP"}


SAMPLE = (ROOT / "conf" / "keepalived-server1.conf").read_text()


def test_keepalived_weight_trap_fails():
    text = SAMPLE.replace("    rise 2\n", "    rise 2\n    weight -20\n")
    assert ka_checks(text)["keepalived weight trap"].status == "fail"
    text = SAMPLE.replace("        chk_mysql\n", "        chk_mysql weight -10\n")
    c = ka_checks(text)["keepalived weight trap"]
    assert c.status == "fail" and "weight -10" in c.detail


def test_keepalived_without_notify_or_with_a_foreign_one_fails():
    no_notify = re.sub(r"\n    notify .*\n", "\n", SAMPLE)
    assert ka_checks(no_notify)["keepalived events"].status == "fail"
    foreign = re.sub(r'notify ".*"', 'notify "/usr/local/bin/send-mail"', SAMPLE)
    assert ka_checks(foreign)["keepalived events"].status == "fail"
    both = SAMPLE.replace("global_defs {\n", "global_defs {\n    vrrp_notify_fifo /run/orch/keepalived.fifo\n")
    assert ka_checks(both)["keepalived events"].status == "warn"


def test_keepalived_script_security_nopreempt_and_vip():
    text = SAMPLE.replace("    script_user root", "    # no script user")
    assert ka_checks(text)["keepalived script security"].status == "warn"
    text = SAMPLE.replace("    enable_script_security\n", "")
    assert ka_checks(text)["keepalived script security"].status == "warn"
    text = SAMPLE.replace("    state BACKUP\n", "    state MASTER\n")
    assert ka_checks(text)["keepalived nopreempt"].status == "fail"
    text = SAMPLE.replace("    nopreempt\n", "")
    assert ka_checks(text)["keepalived nopreempt"].status == "warn"
    assert ka_checks(SAMPLE, Keepalived(instance="VI_1", vip="10.0.0.200"))["keepalived VIP"].status == "fail"
    assert ka_checks(SAMPLE, Keepalived(instance="VI_9", vip="10.0.0.100"))["keepalived instance"].status == "fail"


def test_fifo_sample_is_the_notify_sample_with_the_fifo():
    """conf/keepalived-fifo-server1.conf stays conf/keepalived-server1.conf but for how events reach orch."""
    def statements(name: str, drop: str) -> list:
        def walk(block: conf.Block) -> list:
            return [(tuple(b.words), walk(b) if b.children is not None else None)
                    for b in block.children or [] if b.words[0] != drop]
        return walk(conf.parse((ROOT / "conf" / name).read_text()))

    assert statements("keepalived-fifo-server1.conf", "vrrp_notify_fifo") == statements("keepalived-server1.conf", "notify")


def test_keepalived_track_file_of_the_shipped_sample():
    ka = Keepalived(instance="VI_1", vip="10.0.0.100", track_file="/var/lib/orch/keepalived.track")
    for sample in ("keepalived-server1.conf", "keepalived-fifo-server1.conf"):
        assert ka_checks((ROOT / "conf" / sample).read_text(), ka)["keepalived track file"].status == "pass"


def test_keepalived_track_file():
    ka = Keepalived(instance="VI_1", vip="10.0.0.100", track_file="/run/orch/handover")
    assert ka_checks(SAMPLE, ka)["keepalived track file"].status == "fail"
    declared = SAMPLE.replace("vrrp_instance VI_1 {", "vrrp_track_file orch {\n    file /run/orch/handover\n}\n\nvrrp_instance VI_1 {")
    c = ka_checks(declared, ka)["keepalived track file"]
    assert c.status == "fail" and "not in vrrp_instance VI_1" in c.detail
    tracked = declared.replace("    track_script {", "    track_file {\n        orch weight 0\n    }\n    track_script {")
    assert ka_checks(tracked, ka)["keepalived track file"].status == "pass"
    weighted = declared.replace("    track_script {", "    track_file {\n        orch weight -50\n    }\n    track_script {")
    assert ka_checks(weighted, ka)["keepalived track file"].status == "fail"


def with_check_cnf(text: str, path: Path) -> str:
    """A keepalived.conf whose chk_mysql reads ``path`` instead of /etc/orch/check.cnf."""
    assert "/etc/orch/check.cnf" in text
    return text.replace("/etc/orch/check.cnf", str(path))


@pytest.mark.mariadb
def test_doctor_checks_a_keepalived_file_from_the_command_line(cluster, tmp_path):
    s1, s2, cfg, state = cluster
    check_cnf = tmp_path / "check.cnf"
    check_cnf.write_text(s1.client_defaults())
    check_cnf.chmod(0o600)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(with_check_cnf(SAMPLE, check_cnf).replace("        chk_mysql\n", "        chk_mysql weight -10\n"))
    code, doc, r = run(cfg, "--keepalived-config", str(conf))
    assert code == 1 and check(doc, "keepalived weight trap")["status"] == "fail", r
    conf.write_text(with_check_cnf(SAMPLE, check_cnf))
    code, doc, r = run(cfg, "--keepalived-config", str(conf))
    assert code == 0 and check(doc, "keepalived events")["status"] == "pass", r
    for name in ("keepalived notify node", "keepalived health check login", "keepalived health check server",
                 "keepalived health check at max_connections", "server1: host is this machine"):
        assert check(doc, name)["status"] == "pass", check(doc, name)
    # The test config sets no failover.witness while the sample pings one: said, not failed.
    assert check(doc, "keepalived witness")["status"] == "warn" and "failover.witness: 10.0.0.254" in check(doc, "keepalived witness")["fix"]


def test_semi_sync_needs_replication_master_admin_on_mariadb():
    readme = tuple(p.strip() for p in readme_grant().split(","))
    f = d.ServerFacts("a", True, flavor="mariadb", grants=readme)
    assert d.check_privileges(f, semi_sync=False)[0].status == "pass"
    c = d.check_privileges(f, semi_sync=True)[0]
    assert c.status == "fail" and c.detail.startswith("missing REPLICATION MASTER ADMIN")
    f = d.ServerFacts("a", True, flavor="mariadb", grants=readme + ("REPLICATION MASTER ADMIN",))
    assert d.check_privileges(f, semi_sync=True)[0].status == "pass"


@pytest.mark.parametrize("v1, v2, status", [
    ("10.11.6-MariaDB-0+deb12u1", "10.11.11-MariaDB", "pass"), ("10.11.6-MariaDB", "11.4.2-MariaDB", "warn"),
    ("8.0.36", "8.0.40-log", "pass"), ("8.4.2", "8.0.36", "warn"),
])
def test_release_series_of_the_pair(v1, v2, status):
    """Both directions of replication are used (each failover reverses it): one release series on both."""
    from orchestrator.model import ClusterView, NodeState

    view = ClusterView(NodeState("server1", "10.0.0.1", 3306, True, version=v1), NodeState("server2", "10.0.0.2", 3306, True, version=v2))
    [c] = d.check_release_series(view)
    assert c.status == status and (("not supported" in c.detail) == (status == "warn")), c


# --- what must match across files ---------------------------------------------------------------

SAMPLE2 = (ROOT / "conf" / "keepalived-server2.conf").read_text()


def cross(text: str, cfg: Any, host: "d.HostFacts | None" = None) -> Dict[str, d.Check]:
    root = conf.parse(text)
    checks = d.check_notify_node(root, cfg.keepalived, cfg.self_name, "keepalived.conf")
    checks += d.check_witness_ping(root, cfg.keepalived, cfg.failover.witness)
    return {c.name: c for c in checks}


def shipped_cfg(**changes: Any) -> Any:
    """conf/orch.yaml as parsed, with ``changes`` (self, failover...) made."""
    import yaml

    from orchestrator.config import parse

    raw = yaml.safe_load((ROOT / "conf" / "orch.yaml").read_text())
    raw["mysql"] = {"user": "orch", "password": "pw1"}
    raw["replication"] = {"user": "repl", "password": "pw2"}
    raw["atlas"][0]["admin"] = {"host": "127.0.0.1", "port": 2345, "user": "user", "password": "pw3"}
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return parse(raw, "conf/orch.yaml")


def test_notify_node_is_this_hosts_self():
    assert cross(SAMPLE, shipped_cfg())["keepalived notify node"].status == "pass"
    c = cross(SAMPLE2, shipped_cfg())["keepalived notify node"]  # server2's conf on server1's host
    assert c.status == "fail" and "--node server2" in c.detail and "self on this host is server1" in c.detail, c
    assert "--node server1" in c.fix
    assert cross(SAMPLE2, shipped_cfg(self="server2"))["keepalived notify node"].status == "pass"
    equals = SAMPLE.replace("--node server1", "--node=server2")
    assert cross(equals, shipped_cfg())["keepalived notify node"].status == "fail"
    # The FIFO carries no node (orch notify-fifo runs with this host's config): nothing to compare.
    fifo = (ROOT / "conf" / "keepalived-fifo-server1.conf").read_text()
    assert "keepalived notify node" not in cross(fifo, shipped_cfg(self="server2"))


def test_witness_ping_is_failover_witness():
    assert cross(SAMPLE, shipped_cfg())["keepalived witness"].status == "pass"  # both ship 10.0.0.254
    c = cross(SAMPLE.replace("-W 1 10.0.0.254", "-W 1 10.9.9.9"), shipped_cfg())["keepalived witness"]
    assert c.status == "fail" and "pings 10.9.9.9" in c.detail and "failover.witness is 10.0.0.254" in c.detail, c
    assert "10.0.0.254" in c.fix
    c = cross(SAMPLE, shipped_cfg(failover={"semi_sync": False, "witness": ""}))["keepalived witness"]
    assert c.status == "warn" and "failover.witness: 10.0.0.254" in c.fix, c
    untracked = SAMPLE.replace("        chk_witness\n", "")  # defined, not tracked: it decides nothing
    c = cross(untracked, shipped_cfg())["keepalived witness"]
    assert c.status == "warn" and "no tracked vrrp_script pings" in c.detail, c


def test_self_host_is_an_address_of_this_machine():
    cfg = shipped_cfg()  # server1 10.0.0.1, server2 10.0.0.2
    here = d.HostFacts({"server1": (("10.0.0.1", True),), "server2": (("10.0.0.2", False),)})
    assert d.check_self_address(cfg, here)[0].status == "pass"
    swapped = d.HostFacts({"server1": (("10.0.0.1", False),), "server2": (("10.0.0.2", True),)})
    [c] = d.check_self_address(cfg, swapped)
    assert c.status == "fail" and "10.0.0.1 is not an address of this host" in c.detail and "self (or --node) to server2" in c.fix, c
    nowhere = d.HostFacts({"server1": (("10.0.0.1", False),), "server2": (("10.0.0.2", False),)})
    [c] = d.check_self_address(cfg, nowhere)
    assert c.status == "fail" and "correct nodes.server1.host" in c.fix, c
    [c] = d.check_self_address(cfg, d.HostFacts({}, {"server1": "cannot tell: Name or service not known"}))
    assert c.status == "warn", c


def test_gather_host_asks_this_hosts_addresses():
    """Loopback is this host's; TEST-NET-1 (192.0.2.0/24) is nobody's. Nothing is configured."""
    from orchestrator.config import parse

    def cfg(host1: str) -> Any:
        return parse({"self": "server1", "nodes": {"server1": {"host": host1}, "server2": {"host": "192.0.2.2"}},
                      "mysql": {"user": "o", "password": "p"}, "replication": {"user": "r", "password": "q"},
                      "keepalived": {"vip_check": False}})

    for host, status in (("127.0.0.1", "pass"), ("127.0.0.5", "pass"), ("localhost", "pass"), ("192.0.2.1", "fail")):
        facts, _ = d.gather_host(cfg(host), None)
        assert d.check_self_address(cfg(host), facts)[0].status == status, (host, facts)
    facts, _ = d.gather_host(cfg("no-such-host.invalid"), None)
    assert d.check_self_address(cfg("no-such-host.invalid"), facts)[0].status == "warn"


def test_metrics_off_means_no_alert_can_fire():
    [c] = d.check_metrics(shipped_cfg())
    assert c.status == "pass" and "9105" in c.detail  # conf/orch.yaml ships them on, for conf/orch-alerts.yml
    [c] = d.check_metrics(shipped_cfg(maintainer={"metrics_port": 0}))
    assert c.status == "warn" and "orch-alerts.yml" in c.detail and "metrics_port: 9105" in c.fix, c
    assert "orch_" in (ROOT / "conf" / "orch-alerts.yml").read_text()


def test_client_options_read_as_the_client_reads_them():
    text = ('[mysqld]\nport=1\n[client]\nhost = 10.0.0.1\nport=3307 # extra_port\nuser="orch"\n'
            'password="p\\"w#1\\\\"\n[mysql]\nconnect_timeout=1\n')
    assert client_options_of(text) == {"host": "10.0.0.1", "port": "3307", "user": "orch", "password": 'p"w#1\\'}


def health(cluster: Any, tmp_path: Path, cnf_text: "str | None", mode: int = 0o600, **cfg_changes: Any) -> Tuple[int, Dict[str, Any], t.Result]:
    """orch doctor with server1's shipped keepalived.conf whose chk_mysql reads a check.cnf holding ``cnf_text``."""
    s1, s2, _, state = cluster
    check_cnf = tmp_path / "check.cnf"
    if cnf_text is not None:
        check_cnf.write_text(cnf_text)
        check_cnf.chmod(mode)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(with_check_cnf(SAMPLE, check_cnf))
    cfg = t.write_config(tmp_path / "orch-ka.yaml", t.config_dict(s1, s2, state, **cfg_changes))
    return run(cfg, "--keepalived-config", str(conf))


@pytest.mark.mariadb
def test_health_check_account_logs_in_and_reaches_this_nodes_server(cluster, tmp_path):
    s1, s2, _, _ = cluster
    code, doc, r = health(cluster, tmp_path, s1.client_defaults())
    assert check(doc, "keepalived health check login")["status"] == "pass", r
    assert check(doc, "keepalived health check server")["status"] == "pass", r
    assert "keepalived health check file mode" not in {c["name"] for c in doc["checks"]}
    # A wrong password: what keepalived would see, a FAULT; the password never printed.
    wrong = s1.client_defaults().replace(lab.option_value(lab.ORCH_CREDENTIALS.password), '"not-the-pw-1"')
    code, doc, r = health(cluster, tmp_path, wrong)
    c = check(doc, "keepalived health check login")
    assert code == 1 and c["status"] == "fail" and "Access denied" in c["detail"] and "FAULT" in c["detail"], c
    t.assert_no_secrets(r.stdout, r.stderr, extra=("not-the-pw-1",))
    # No file at all (keepalived.conf names one this host lacks).
    (tmp_path / "check.cnf").unlink()
    code, doc, r = health(cluster, tmp_path, None)
    assert code == 1 and check(doc, "keepalived health check login")["status"] == "fail", r
    # server2's check.cnf on server1's host: the check would judge server1 by server2's health.
    code, doc, r = health(cluster, tmp_path, s2.client_defaults(), mode=0o644)
    c = check(doc, "keepalived health check server")
    assert code == 1 and c["status"] == "fail" and "reaches server2, not server1" in c["detail"] and str(s1.port) in c["fix"], c
    assert check(doc, "keepalived health check file mode")["status"] == "warn"


@pytest.mark.mariadb
def test_health_check_account_without_connection_admin_is_a_warning(cluster, tmp_path):
    s1, s2, _, _ = cluster
    plain = lab.Credentials("checker", "checker-pw-9")
    s1.create_account(plain)  # USAGE only: SELECT 1 works, max_connections does not
    code, doc, r = health(cluster, tmp_path, s1.client_defaults(plain))
    assert check(doc, "keepalived health check login")["status"] == "pass", r
    c = check(doc, "keepalived health check at max_connections")
    assert c["status"] == "warn" and "lacks CONNECTION ADMIN" in c["detail"], c
    t.assert_no_secrets(r.stdout, extra=("checker-pw-9",))
    s1.sql("GRANT CONNECTION ADMIN ON *.* TO 'checker'@'%'")
    code, doc, r = health(cluster, tmp_path, s1.client_defaults(plain))
    assert check(doc, "keepalived health check at max_connections")["status"] == "pass", r


@pytest.mark.mariadb
def test_cross_file_checks_through_the_cli(cluster, tmp_path):
    """server2's keepalived.conf and a foreign witness on server1's host; then a self whose host is not this host."""
    s1, s2, _, state = cluster
    check_cnf = tmp_path / "check.cnf"
    check_cnf.write_text(s1.client_defaults())
    check_cnf.chmod(0o600)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(with_check_cnf(SAMPLE2, check_cnf))
    cfg = t.write_config(tmp_path / "w.yaml", t.config_dict(s1, s2, state, failover={"block_seconds": 0, "witness": "10.9.9.9"}))
    code, doc, r = run(cfg, "--keepalived-config", str(conf))
    assert code == 1, r
    assert check(doc, "keepalived notify node")["status"] == "fail" and "--node server2" in check(doc, "keepalived notify node")["detail"]
    assert check(doc, "keepalived witness")["status"] == "fail"
    assert check(doc, "metrics")["status"] == "warn"
    code, doc, r = run(cfg, "--keepalived-config", str(conf), node="server2")  # the same files are right for server2
    assert check(doc, "keepalived notify node")["status"] == "pass", r
    # self's host is not this host's (TEST-NET-1: nobody's), as when server2's orch.yaml was copied with self unchanged.
    d2 = t.config_dict(s1, s2, state)
    d2["nodes"]["server1"]["host"] = "192.0.2.1"
    code, doc, r = run(t.write_config(tmp_path / "far.yaml", d2))
    c = check(doc, "server1: host is this machine")
    assert code == 1 and c["status"] == "fail" and "192.0.2.1 is not an address of this host" in c["detail"], c
    assert "server2" in c["fix"]  # server2's host (127.0.0.1) is this host's


# --- maintenance mode ---------------------------------------------------------------------------


def test_doctor_warns_of_a_pause_in_force_with_who_why_and_until():
    from dataclasses import replace

    from .test_decide import MASTER2, REPLICA1, cfg, view
    from .test_pause import paused_rec

    base = view(REPLICA1, MASTER2)
    [off] = d.check_maintenance(base)
    assert (off.name, off.status, off.detail) == ("maintenance mode", d.PASS, "off (no pause on record)")

    [until_resume] = d.check_maintenance(replace(base, pause=paused_rec()))
    assert until_resume.status == d.WARN
    assert "PAUSED: paused by alice on server2 30s ago (until orch resume): kernel upgrade" in until_resume.detail
    assert until_resume.fix == "orch resume once the work is done"

    [bounded] = d.check_maintenance(replace(base, pause=paused_rec(remaining=600.0)))
    assert bounded.status == d.WARN and "(600s left)" in bounded.detail and "--for" in bounded.fix

    [ran_out] = d.check_maintenance(replace(base, pause=paused_rec(remaining=-5.0)))
    assert ran_out.status == d.PASS and "ran out 5s ago" in ran_out.detail

    [resumed] = d.check_maintenance(replace(base, pause=paused_rec(kind="resume")))
    assert resumed.status == d.PASS and "resumed by alice" in resumed.detail

    [local_resume] = d.check_maintenance(replace(base, pause=paused_rec(kind="resume", seen_on="state_dir"),
                                                 pause_shared=paused_rec()))
    assert local_resume.status == d.WARN and "the other host follows" in local_resume.detail

    [unreadable] = d.check_maintenance(replace(base, pause_error="server1: (1142) SELECT command denied"))
    assert unreadable.status == d.WARN and "orch_meta" in unreadable.fix

    # A warning, never a failure: a paused pair is still one that can be resumed.
    checks = d.run_checks(cfg(), replace(base, pause=paused_rec()), {}, None)
    assert [c.status for c in checks if c.name == "maintenance mode"] == [d.WARN]
