"""The orch account needs only the privileges docs/install.md lists (MariaDB 10.11)."""

import re
import threading
from pathlib import Path

import pytest

from orchestrator.lab import mariadb as lab

from . import orchtest as t

pytestmark = pytest.mark.mariadb

INSTALL_PAGE = Path(__file__).resolve().parent.parent / "docs" / "install.md"  # its Accounts step holds the GRANT lines


def readme_grant() -> str:
    m = re.search(r"^GRANT (.+) ON \*\.\* TO 'orch'@", INSTALL_PAGE.read_text(), re.M)
    assert m, "docs/install.md lost the orch GRANT line"
    return m.group(1)


def test_least_privilege_account_can_fail_over_and_rejoin(mariadb_pair, tmp_path):
    s1, s2 = mariadb_pair
    privileges = readme_grant()
    for s in (s1, s2):
        conn = s.connect()
        with conn.cursor() as cur:
            cur.execute("SET sql_log_bin = 0")  # account set-up is local to each server
            cur.execute("CREATE USER 'orchmin'@'%' IDENTIFIED BY 'orchmin-pw'")
            cur.execute(f"GRANT {privileges} ON *.* TO 'orchmin'@'%'")
        conn.close()
    d = t.config_dict(s1, s2, str(tmp_path / "state"))
    d["mysql"] = {"user": "orchmin", "password": "orchmin-pw", "connect_timeout": 1}
    cfg = t.write_config(tmp_path / "orch.yaml", d)
    s1.sql("CREATE TABLE test.t (id INT PRIMARY KEY)")
    s1.sql("INSERT INTO test.t VALUES (1)")
    lab.wait_gtid_equal(s1, s2)
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")  # fences the live server1 too
    assert r.code == 0, r
    r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 0, r
    s2.sql("INSERT INTO test.t VALUES (2)")
    lab.wait_gtid_equal(s1, s2)
    assert t.read_only(s1) and not t.read_only(s2)
    assert t.orch(cfg, "server1", "status").code == 0


def test_failed_fence_of_live_peer_refuses_promotion_even_forced(mariadb_pair, tmp_path):
    s1, s2 = mariadb_pair
    privileges = readme_grant()
    for s, grant in ((s1, privileges.replace("READ_ONLY ADMIN, ", "")), (s2, privileges)):
        conn = s.connect()
        with conn.cursor() as cur:
            cur.execute("SET sql_log_bin = 0")
            cur.execute("CREATE USER 'orchmin'@'%' IDENTIFIED BY 'orchmin-pw'")
            cur.execute(f"GRANT {grant} ON *.* TO 'orchmin'@'%'")  # server1 cannot be fenced by orch
        conn.close()
    d = t.config_dict(s1, s2, str(tmp_path / "state"))
    d["mysql"] = {"user": "orchmin", "password": "orchmin-pw", "connect_timeout": 1}
    cfg = t.write_config(tmp_path / "orch.yaml", d)
    for args in (("notify", "INSTANCE", "VI_1", "MASTER", "100"), ("promote", "--force", "--yes")):
        r = t.orch(cfg, "server2", *args)
        assert r.code == 1, r
        assert "fence server1" in r.output and "READ_ONLY ADMIN" in r.output
        assert t.read_only(s2) and not t.read_only(s1), "never two writable masters"
    assert t.journal(str(tmp_path / "state"))[-1]["result"] == "failed"


def _least_privilege(servers, grant_for):
    for s in servers:
        conn = s.connect()
        with conn.cursor() as cur:
            cur.execute("SET sql_log_bin = 0")
            cur.execute("CREATE USER 'orchmin'@'%' IDENTIFIED BY 'orchmin-pw'")
            cur.execute(f"GRANT {grant_for(s)} ON *.* TO 'orchmin'@'%'")
            # The application's account: no privilege that read_only would not stop.
            cur.execute("CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'")
            cur.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON test.* TO 'app'@'%'")
        conn.close()


def _long_app_update(server, errors):
    import pymysql

    conn = pymysql.connect(host=server.host, port=server.port, user="app", password="app-pw", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("UPDATE test.t SET id = id WHERE SLEEP(30) = 0")
    except Exception as exc:
        errors.append(exc)


@pytest.mark.parametrize("missing", [None, "CONNECTION ADMIN", "PROCESS"])
def test_fence_behind_a_long_write_needs_process_and_connection_admin(mariadb_pair, tmp_path, missing):
    """The install checklist's grant fences a master busy with another user's long write (by killing it);
    without PROCESS the blocker is invisible, without CONNECTION ADMIN it cannot be killed."""
    s1, s2 = mariadb_pair
    privileges = readme_grant()
    reduced = privileges.replace(f"{missing}, ", "") if missing else privileges
    _least_privilege((s1, s2), lambda s: reduced if s is s1 else privileges)
    s1.sql("CREATE TABLE test.t (id INT PRIMARY KEY)")
    s1.sql("INSERT INTO test.t VALUES (1)")
    lab.wait_gtid_equal(s1, s2)
    d = t.config_dict(s1, s2, str(tmp_path / "state"))
    d["mysql"] = {"user": "orchmin", "password": "orchmin-pw", "connect_timeout": 1}
    d["failover"] = {"catchup_timeout": 5, "fence_timeout": 1, "block_seconds": 0}
    cfg = t.write_config(tmp_path / "orch.yaml", d)
    errors = []
    th = threading.Thread(target=_long_app_update, args=(s1, errors), daemon=True)
    th.start()
    t.wait_running(s1, "UPDATE test.t SET id = id WHERE SLEEP(30)")
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100", timeout=60)
    if missing is None:
        assert r.code == 0, r
        assert t.read_only(s1) and not t.read_only(s2)
        th.join(10)
        assert errors, "the application's long write was not killed"
    else:
        assert r.code == 1, r
        assert t.read_only(s2) and not t.read_only(s1), "never two writable masters"
        assert "killing the client sessions" in r.output and "CONNECTION ADMIN to kill them" in r.output, r.output
        for row in s1.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'"):
            s1.sql(f"KILL {int(row['ID'])}")
        th.join(10)


def readme_meta_grant() -> str:
    m = re.search(r"^GRANT (.+) ON orch_meta\.\* TO 'orch'@", INSTALL_PAGE.read_text(), re.M)
    assert m, "docs/install.md lost the orch_meta GRANT line (anti-flapping record)"
    return m.group(1)


@pytest.mark.parametrize("meta", [True, False])
def test_anti_flapping_record_needs_the_orch_meta_grant_and_never_fails_a_promotion(mariadb_pair, tmp_path, meta):
    """CREATE (the schema and table, once), INSERT (the record) and SELECT (observing it): with
    the install checklist's orch_meta line the promotion is recorded and blocks the next one; without it the
    promotion still happens (best effort, a warning) and nothing blocks."""
    s1, s2 = mariadb_pair
    for s in (s1, s2):
        conn = s.connect()
        with conn.cursor() as cur:
            cur.execute("SET sql_log_bin = 0")
            cur.execute("CREATE USER 'orchmin'@'%' IDENTIFIED BY 'orchmin-pw'")
            cur.execute(f"GRANT {readme_grant()} ON *.* TO 'orchmin'@'%'")
            if meta:
                cur.execute(f"GRANT {readme_meta_grant()} ON orch_meta.* TO 'orchmin'@'%'")
        conn.close()
    state = str(tmp_path / "state")
    d = t.config_dict(s1, s2, state)
    d["mysql"] = {"user": "orchmin", "password": "orchmin-pw", "connect_timeout": 1}
    d["failover"] = {"catchup_timeout": 5, "block_seconds": 600}
    cfg = t.write_config(tmp_path / "orch.yaml", d)
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0 and not t.read_only(s2), r
    step = [s for s in t.journal(state)[-1]["steps"] if s["step"] == "RecordPromotion"][0]
    if meta:
        assert step["result"] == "ok", step
        assert s2.query_value("SELECT COUNT(*) FROM orch_meta.promotions") == 1
        # server1 back as server2's replica (the record replicates to it); server2 dies: opening
        # server1 moves writes back, the second failover within block_seconds: blocked.
        s1.start()
        r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "100")
        assert r.code == 0, r
        lab.wait_gtid_equal(s2, s1)
        s2.kill()
        r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 1 and "anti-flapping block" in r.output, r
    else:
        assert step["result"] == "warning" and "denied" in step["detail"], step
