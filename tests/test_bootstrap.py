"""orch bootstrap: a server with data and an empty one become the pair; then a full failover."""

from __future__ import annotations

import pytest

from orchestrator.commands.bootstrap import Side, decide_bootstrap
from orchestrator.lab import mariadb as lab

from . import orchtest as t

# --- the pure decision ---------------------------------------------------------------------------


def side(name: str, tables: int = 0, binlog: str = "", writable: bool = True, account: bool = True, inc: int = 1, off: int = 1) -> Side:
    return Side(name, "10.0.0.1" if name == "s1" else "10.0.0.2", 3306, tables, ("app",) if tables else (), binlog,
                writable, account, inc, off)


HOSTS = {"s1": "10.0.0.2", "s2": "10.0.0.1"}


def test_the_server_with_data_is_the_source():
    plan = decide_bootstrap(side("s1"), side("s2", tables=3, binlog="0-2-9"), None, {"s1": "", "s2": "0-2-9"}, "repl", HOSTS)
    assert not plan.refused and (plan.source, plan.target) == ("s2", "s1")
    assert [s.action for s in plan.steps] == ["auto_increment", "auto_increment", "fence", "seed", "replicate"]


def test_refusals():
    both = decide_bootstrap(side("s1", tables=1), side("s2", tables=1), None, {}, "repl", HOSTS)
    assert both.refused and "both" in both.reason
    errant = decide_bootstrap(side("s1", tables=1, binlog="0-1-5"), side("s2", binlog="0-2-1"), None,
                              {"s1": "0-1-5", "s2": "0-2-1"}, "repl", HOSTS)
    assert errant.refused and "0-2-1" in errant.reason and not errant.steps


def test_a_made_pair_needs_nothing_and_missing_accounts_are_created():
    done = decide_bootstrap(side("s1", tables=1, inc=2, off=1), side("s2", tables=1, writable=False, inc=2, off=2), "s2", {}, "repl", HOSTS)
    assert done.steps == () and done.reason.endswith("nothing to do")
    plan = decide_bootstrap(side("s1", tables=1, account=False, inc=2, off=1), side("s2", account=False, inc=2, off=2),
                            None, {}, "repl", HOSTS)
    accounts = [s for s in plan.steps if s.action == "account"]
    assert [(s.node, "repl@" + HOSTS[s.node] in s.detail) for s in accounts] == [("s1", True), ("s2", True)]


# --- real servers --------------------------------------------------------------------------------


@pytest.fixture
def unpaired(mariadb_template, tmp_path_factory, tmp_path):
    """server1 and server2 from the template, not replicating; an orch config for both."""
    base = tmp_path_factory.mktemp("boot")
    s1 = lab.MariaDBInstance("server1", str(base / "server1"), lab.free_port(), 1)
    s2 = lab.MariaDBInstance("server2", str(base / "server2"), lab.free_port(), 2)
    try:
        lab.start_together((s1, s2), mariadb_template)
        state = str(tmp_path / "state")
        cfg = t.write_config(tmp_path / "orch.yaml", t.config_dict(s1, s2, state))
        yield s1, s2, cfg, state
    finally:
        for s in (s1, s2):
            s.discard()


def fill(server: lab.MariaDBInstance) -> None:
    server.sql("CREATE DATABASE app")
    server.sql("CREATE TABLE app.orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40), price DECIMAL(8,2))")
    server.sql("CREATE VIEW app.cheap AS SELECT * FROM app.orders WHERE price < 10")
    for i in range(50):
        server.sql("INSERT INTO app.orders (item, price) VALUES (%s, %s)", (f"item {i}", i))
    server.sql("CREATE TABLE test.t (id INT PRIMARY KEY, v VARCHAR(40))")


def rows(server: lab.MariaDBInstance) -> list:
    return server.sql("SELECT id, item, price FROM app.orders ORDER BY id")


@pytest.mark.mariadb
def test_bootstrap_then_a_second_run_then_a_full_failover(unpaired):
    s1, s2, cfg, state = unpaired
    fill(s1)
    conn = s2.connect()
    with conn.cursor() as cur:  # the empty server has no replication account yet (and no GTID of its own)
        cur.execute("SET sql_log_bin = 0")
        cur.execute("DROP USER 'repl'@'%'")
    conn.close()
    r = t.orch(cfg, "server1", "bootstrap", "--dry-run")
    assert r.code == 0 and "dry run: nothing changed" in r.stdout, r
    assert s2.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app'") == 0
    r = t.orch(cfg, "server1", "bootstrap", "--yes", timeout=180)
    assert r.code == 0, r
    assert "server1 has the data; server2 is empty" in r.stdout
    assert "create the replication account repl@127.0.0.1" in r.stdout
    assert [(j["event"], j["phase"], j.get("result")) for j in t.journal(state)] == [("BOOTSTRAP", "begin", None), ("BOOTSTRAP", "end", "act")]
    t.assert_no_secrets(r.stdout, r.stderr)
    lab.wait_gtid_equal(s1, s2)
    assert rows(s2) == rows(s1) and len(rows(s2)) == 50
    assert s2.sql("SELECT COUNT(*) AS n FROM app.cheap")[0]["n"] == 10, "the view came along"
    assert t.read_only(s2) and not t.read_only(s1)
    status = t.slave_status(s2)
    assert status is not None and status["Slave_IO_Running"] == "Yes" and status["Using_Gtid"] == "Slave_Pos"
    # The load added no GTID of server2's own, and its binary log starts at the seed.
    assert t.gtid(s2, "gtid_binlog_pos") == t.gtid(s1, "gtid_binlog_pos") == t.gtid(s2)
    assert s1.query_value("SELECT @@global.auto_increment_offset") != s2.query_value("SELECT @@global.auto_increment_offset")

    # A second run finds the pair made and changes nothing.
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server2", "bootstrap", "--yes", timeout=120)
    assert r.code == 0, r
    assert "server2 already replicates from server1: nothing to do" in r.stdout
    assert t.snapshot(s1, s2) == before

    # Then the failover this was all for, before anything else was written: server2 serves
    # server1 from the seeded position.
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0, r
    assert not t.read_only(s2) and len(rows(s2)) == 50
    s2.sql("INSERT INTO test.t VALUES (2, 'on the new master')")
    s1.start()
    r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "100")
    assert r.code == 0, r
    lab.wait_gtid_equal(s1, s2)
    assert s1.query_value("SELECT v FROM test.t WHERE id = 2") == "on the new master"
    assert t.read_only(s1) and t.slave_status(s1)["Slave_IO_Running"] == "Yes"


@pytest.mark.mariadb
def test_refused_when_the_second_server_has_data_nothing_changed(unpaired):
    s1, s2, cfg, state = unpaired
    fill(s1)
    s2.sql("CREATE TABLE test.mine (id INT PRIMARY KEY)")
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server1", "bootstrap", "--yes")
    assert r.code == 1 and "refused: both server1 and server2 hold tables" in r.stdout, r
    assert t.snapshot(s1, s2) == before and t.slave_status(s2) is None


@pytest.mark.mariadb
def test_refused_when_the_empty_server_has_gtids_the_source_lacks(unpaired):
    s1, s2, cfg, state = unpaired
    fill(s1)
    s2.sql("CREATE DATABASE scratch")
    s2.sql("DROP DATABASE scratch")  # no tables, but two transactions of its own
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server1", "bootstrap", "--yes")
    assert r.code == 1 and "server2 has transactions server1 lacks (0-2-2)" in r.stdout, r
    assert t.snapshot(s1, s2) == before


@pytest.mark.mariadb
def test_refused_without_a_binary_log(unpaired):
    s1, s2, cfg, state = unpaired
    s2.stop()
    s2.extra_options["log_bin"] = None
    s2.start()
    r = t.orch(cfg, "server1", "bootstrap", "--yes")
    assert r.code == 1 and "server2: binary log" in r.stderr and "nothing changed" in r.stderr, r


def test_bootstrap_needs_confirmation_or_yes(tmp_path):
    config = tmp_path / "orch.yaml"
    config.write_text("cluster: x\n")
    r = t.orch(str(config), None, "bootstrap", "--bogus")
    assert r.code == 2 and "unrecognized arguments" in r.stderr, r


def test_the_plan_as_json_has_every_plans_keys():
    """Pure: --dry-run --format json prints the plan with the keys of every other dry run."""
    from orchestrator.errors import EXIT_FAILED, EXIT_OK

    plan = decide_bootstrap(side("s1"), side("s2", tables=3, binlog="0-2-9"), None, {"s1": "", "s2": "0-2-9"}, "repl", HOSTS)
    doc = plan.as_dict()
    assert set(doc) == {"reason", "outcome", "exit_code", "warnings", "steps"}
    assert doc["outcome"] == "act" and doc["exit_code"] == EXIT_OK and doc["reason"] == plan.reason
    assert [s["step"] for s in doc["steps"]] == ["AutoIncrement", "AutoIncrement", "Fence", "Seed", "Replicate"]
    assert all(set(s) == {"step", "description"} for s in doc["steps"])
    refused = decide_bootstrap(side("s1", tables=1), side("s2", tables=1), None, {}, "repl", HOSTS).as_dict()
    assert refused["outcome"] == "refused" and refused["exit_code"] == EXIT_FAILED and refused["steps"] == []
    made = decide_bootstrap(side("s1", tables=1, inc=2, off=1), side("s2", tables=1, writable=False, inc=2, off=2), "s2", {},
                            "repl", HOSTS).as_dict()
    assert made["outcome"] == "noop" and made["exit_code"] == EXIT_OK


@pytest.mark.mariadb
def test_dry_run_as_json_changes_nothing(unpaired):
    """bootstrap --dry-run --format json: one JSON object (the seed planned), nothing changed, no
    state_dir; a refusal is the same object with outcome refused, exit 1; --format json without
    --dry-run is bad input (exit 2)."""
    import json
    import os

    s1, s2, cfg, state = unpaired
    fill(s1)
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server1", "bootstrap", "--dry-run", "--format", "json")
    assert r.code == 0, r
    doc = json.loads(r.stdout)
    assert doc["command"] == "bootstrap" and doc["node"] == "server1" and doc["dry_run"] is True, doc
    assert doc["outcome"] == "act" and doc["exit_code"] == 0 and "Seed" in [s["step"] for s in doc["steps"]], doc
    assert t.snapshot(s1, s2) == before and t.slave_status(s2) is None and not os.path.exists(state)
    r = t.orch(cfg, "server1", "bootstrap", "--format", "json", "--yes")
    assert r.code == 2 and r.stdout == "" and "--dry-run" in r.stderr, r
    s2.sql("CREATE TABLE test.mine (id INT PRIMARY KEY)")
    r = t.orch(cfg, "server1", "bootstrap", "--dry-run", "--format", "json")
    doc = json.loads(r.stdout)
    assert r.code == 1 and doc["outcome"] == "refused" and doc["exit_code"] == 1 and "both" in doc["reason"], r
    t.assert_no_secrets(r.output)
