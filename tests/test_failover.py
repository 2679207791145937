"""End-to-end failover on a real MariaDB pair, driving the real `orch` command."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import List, Tuple

import pymysql
import pytest

from orchestrator.lab import mariadb as lab

from . import orchtest as t

pytestmark = pytest.mark.mariadb

N_ROWS = 200


class Sampler:
    """Samples (read_only, row count) on servers every few ms while a command runs."""

    def __init__(self, *servers: lab.MariaDBInstance, interval: float = 0.005) -> None:
        self.servers = servers
        self.interval = interval
        self.samples: List[Tuple[float, Tuple]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conns = {}
        while not self._stop.is_set():
            row = []
            for s in self.servers:
                try:
                    if s.name not in conns:
                        conns[s.name] = s.connect(cursorclass=pymysql.cursors.DictCursor)
                    with conns[s.name].cursor() as cur:
                        cur.execute("SELECT @@global.read_only AS ro, (SELECT COUNT(*) FROM test.t) AS n")
                        r = cur.fetchone()
                        row.append((int(r["ro"]), int(r["n"])))
                except Exception:
                    conns.pop(s.name, None)
                    row.append(None)
            self.samples.append((time.monotonic(), tuple(row)))
            time.sleep(self.interval)
        for c in conns.values():
            c.close()

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def insert_rows(server: lab.MariaDBInstance, first: int, count: int) -> None:
    conn = server.connect()
    with conn.cursor() as cur:
        for i in range(first, first + count):
            cur.execute("INSERT INTO test.t VALUES (%s, %s)", (i, f"row {i}"))
    conn.close()


def count(server: lab.MariaDBInstance) -> int:
    return int(server.query_value("SELECT COUNT(*) FROM test.t"))


def test_failover_applies_relay_log_before_writable_then_old_master_rejoins(cluster):
    s1, s2, cfg, state = cluster
    # Hold the replica's SQL thread while the master writes: the rows sit in its relay log.
    s2.sql("STOP SLAVE SQL_THREAD")
    insert_rows(s1, 1, N_ROWS)
    master_gtid = t.gtid(s1, "gtid_binlog_pos")
    deadline = time.monotonic() + 10
    while t.slave_status(s2)["Gtid_IO_Pos"] != master_gtid:
        assert time.monotonic() < deadline, "replica did not receive the rows"
        time.sleep(0.05)
    assert count(s2) == 0, "SQL thread should not have applied anything yet"
    s1.kill()

    with Sampler(s2) as sampler:
        r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        time.sleep(0.1)  # keep sampling past the command's end
    assert r.code == 0, r
    assert not t.read_only(s2)
    assert count(s2) == N_ROWS
    assert t.slave_status(s2) is None, "replication must be reset on the new master"
    writable_samples = [row[0] for _, row in sampler.samples if row[0] is not None and row[0][0] == 0]
    assert writable_samples, "the sampler never saw server2 writable"
    assert all(n == N_ROWS for _, n in writable_samples), "server2 was writable before its relay log was applied"

    # The new master takes writes; the old master comes back and rejoins as a replica.
    insert_rows(s2, N_ROWS + 1, 10)
    s1.start()
    r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 0, r
    lab.wait_gtid_equal(s1, s2)
    assert t.read_only(s1)
    st = t.slave_status(s1)
    assert st["Slave_IO_Running"] == "Yes" and st["Slave_SQL_Running"] == "Yes"
    assert int(st["Master_Port"]) == s2.port and st["Using_Gtid"] == "Slave_Pos"
    assert t.gtid(s1) == t.gtid(s2) and t.gtid(s1, "gtid_binlog_state") == t.gtid(s2, "gtid_binlog_state")
    assert count(s1) == N_ROWS + 10

    entries = t.journal(state)
    ends = [e for e in entries if e["phase"] == "end"]
    assert [e["event"] for e in ends] == ["MASTER", "BACKUP"] and all(e["result"] == "act" for e in ends)
    steps = [s["step"] for s in ends[0]["steps"]]
    assert steps.index("CatchUp") < steps.index("SetWritable")
    t.assert_no_secrets(r.output, Path(state, "journal.jsonl").read_text())


def test_switch_back_and_forth_keeps_gtids_consistent(cluster):
    """Two role changes each way with the peer alive: MariaDB's slave_pos must follow."""
    s1, s2, cfg, _ = cluster
    for i, (new, old, new_name, old_name) in enumerate([(s2, s1, "server2", "server1"), (s1, s2, "server1", "server2")] * 2):
        insert_rows(old, 1000 + i * 10, 5)
        r = t.orch(cfg, new_name, "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 0, r
        r = t.orch(cfg, old_name, "notify", "INSTANCE", "VI_1", "BACKUP", "90")
        assert r.code == 0, r
        insert_rows(new, 2000 + i * 10, 5)
        lab.wait_gtid_equal(new, old)
        assert not t.read_only(new) and t.read_only(old)
        assert count(new) == count(old) == 10 * (i + 1)


def test_peer_alive_is_fenced_before_promotion(cluster):
    s1, s2, cfg, state = cluster
    insert_rows(s1, 1, 50)
    with Sampler(s1, s2, interval=0.002) as sampler:
        r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        time.sleep(0.1)
    assert r.code == 0, r
    assert t.read_only(s1) and not t.read_only(s2)
    assert count(s2) == 50
    both = [row for _, row in sampler.samples if all(x is not None for x in row)]
    assert both and not any(a[0] == 0 and b[0] == 0 for a, b in both), "both servers were writable at once"
    # the moment server2 became writable, server1 was already read-only
    first_writable = next(i for i, (_, row) in enumerate(sampler.samples) if row[1] is not None and row[1][0] == 0)
    assert all(row[0] is None or row[0][0] == 1 for _, row in sampler.samples[first_writable:])
    end = [e for e in t.journal(state) if e["phase"] == "end"][-1]
    assert [s["step"] for s in end["steps"]][0] == "Fence" and end["steps"][0]["detail"] == "read_only=1 verified"


def test_errant_gtid_blocks_rejoin(cluster):
    s1, s2, cfg, _ = cluster
    s1.kill()
    assert t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100").code == 0
    insert_rows(s2, 1, 3)
    s1.start()
    # A transaction written directly on the old master before it rejoins.
    s1.sql("INSERT INTO test.t VALUES (999, 'errant')")
    errant = t.gtid(s1, "gtid_binlog_pos")
    r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 1, r
    assert errant in r.stderr and "errant GTIDs" in r.stderr
    assert t.read_only(s1), "the node must stay fenced"
    assert t.slave_status(s1) is None, "the node must not replicate"
    assert count(s2) == 3


def test_catchup_timeout_refuses_then_force_overrides(cluster, tmp_path):
    s1, s2, _, state = cluster
    cfg = t.write_config(tmp_path / "short.yaml", t.config_dict(s1, s2, state, failover={"catchup_timeout": 1.5}))
    # A delayed replica cannot apply its relay log within the catch-up timeout.
    s2.sql("STOP SLAVE")
    s2.sql("CHANGE MASTER TO MASTER_DELAY = 3600")
    s2.sql("START SLAVE")
    insert_rows(s1, 1, 5)
    master_gtid = t.gtid(s1, "gtid_binlog_pos")
    deadline = time.monotonic() + 10
    while t.slave_status(s2)["Gtid_IO_Pos"] != master_gtid:
        assert time.monotonic() < deadline, "replica did not receive the rows"
        time.sleep(0.05)
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 1, r
    assert "catch-up timed out after 1.5s" in r.stderr and "stays read-only" in r.stderr and master_gtid in r.stderr
    assert t.read_only(s2)
    assert t.slave_status(s2) is not None, "replication must be left in place"
    end = [e for e in t.journal(state) if e["phase"] == "end"][-1]
    assert end["result"] == "refused" and end["exit"] == 1
    r = t.orch(cfg, "server2", "promote", "--force", "--yes")
    assert r.code == 0, r
    assert "forced although catch-up timed out" in r.stdout
    assert not t.read_only(s2)
    assert count(s2) == 0, "the delayed rows were not applied: --force promoted without them"


def test_replication_error_refuses_promotion(cluster):
    s1, s2, cfg, _ = cluster
    s2.sql("SET sql_log_bin = 0")  # only so the conflicting row is not an errant GTID
    conn = s2.connect()
    with conn.cursor() as cur:
        cur.execute("SET sql_log_bin = 0")
        cur.execute("INSERT INTO test.t VALUES (7, 'conflict')")
    conn.close()
    insert_rows(s1, 7, 1)  # duplicate key on the replica: its SQL thread stops
    deadline = time.monotonic() + 10
    while t.slave_status(s2)["Slave_SQL_Running"] != "No":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 1, r
    assert "SQL thread stopped on error 1062" in r.stderr
    assert t.read_only(s2)


def test_same_event_twice_changes_nothing(cluster):
    s1, s2, cfg, state = cluster
    s1.kill()
    assert t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100").code == 0
    before, entries = t.snapshot(s2), len(t.journal(state))
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0 and "no action: server2 is already the writable master" in r.stderr
    assert t.snapshot(s2) == before and len(t.journal(state)) == entries
    s1.start()
    assert t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90").code == 0
    lab.wait_gtid_equal(s1, s2)
    before, entries = t.snapshot(s1, s2), len(t.journal(state))
    r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 0 and "nothing to do" in r.stderr, r
    assert t.snapshot(s1, s2) == before and len(t.journal(state)) == entries


def _consistent(s1, s2) -> None:
    ro1, ro2 = t.read_only(s1), t.read_only(s2)
    assert ro1 or ro2, "two writable masters"
    for s, ro in ((s1, ro1), (s2, ro2)):
        if not ro:
            assert t.slave_status(s) is None, f"{s.name} is writable and still replicating"


def test_concurrent_master_and_backup_on_one_node(cluster):
    s1, s2, cfg, state = cluster
    for round_ in range(3):
        procs = [
            subprocess.Popen([t.ORCH, "-c", cfg, "--node", "server2", "notify", "INSTANCE", "VI_1", ev, "100"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for ev in ("MASTER", "BACKUP")
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        codes = [p.returncode for p in procs]
        assert all(c in (0, 1, 3) for c in codes), (codes, outs)
        _consistent(s1, s2)
        # put things back: server1 master, server2 replica
        assert t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "MASTER", "100").code == 0
        assert t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "BACKUP", "90").code == 0
        _consistent(s1, s2)
    entries = t.journal(state)
    begins = {e["id"] for e in entries if e["phase"] == "begin"}
    ends = {e["id"] for e in entries if e["phase"] == "end"}
    assert begins == ends, "every journaled run has its end record"


def test_two_masters_at_once_promote_once(cluster):
    s1, s2, cfg, state = cluster
    s1.kill()
    procs = [subprocess.Popen([t.ORCH, "-c", cfg, "--node", "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("already the writable master" in o for o in outs) == 1, outs
    assert len([e for e in t.journal(state) if e["phase"] == "end"]) == 1


def test_dry_run_changes_nothing(cluster):
    s1, s2, cfg, state = cluster
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server2", "notify", "--dry-run", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0 and "1. fence server1" in r.stdout and "dry run: nothing changed" in r.stdout
    r = t.orch(cfg, "server1", "demote", "--dry-run")
    assert r.code == 3 and "fence server1" in r.stdout and "no writable master to follow" in r.stdout
    assert t.snapshot(s1, s2) == before and t.journal(state) == []


def test_operator_commands_need_confirmation(cluster):
    s1, s2, cfg, _ = cluster
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server2", "promote")  # stdin is not a terminal
    assert r.code == 2 and "--yes" in r.stderr
    assert t.snapshot(s1, s2) == before
    r = t.orch(cfg, "server2", "promote", "--yes")
    assert r.code == 0, r
    assert "plan: promoting server2" in r.stdout and "[ok] make server2 writable" in r.stdout
    r = t.orch(cfg, "server1", "demote", "--yes")
    assert r.code == 0, r
    lab.wait_gtid_equal(s1, s2)
    assert t.read_only(s1) and t.slave_status(s1)["Slave_SQL_Running"] == "Yes"


def test_status_table_and_json(cluster):
    s1, s2, cfg, _ = cluster
    r = t.orch(cfg, "server1", "status")
    assert r.code == 0, r
    assert "master" in r.stdout and "replica" in r.stdout and "running / running" in r.stdout
    r = t.orch(cfg, "server1", "status", "--format", "json")
    import json

    doc = json.loads(r.stdout)
    by_name = {n["name"]: n for n in doc["nodes"]}
    assert by_name["server1"]["role"] == "master" and by_name["server2"]["replication"]["relay_log_applied"] is True
    assert by_name["server2"]["errant_gtids"] == ""
    s1.kill()
    r = t.orch(cfg, "server2", "status", "--format", "json")
    assert r.code == 1 and json.loads(r.stdout)["nodes"][1]["reachable"] is False


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, fragment", [
    (["notify", "INSTANCE", "VI_1", "BOGUS"], "STATE must be one of"),
    (["notify", "FOO", "VI_1", "MASTER"], "TYPE must be INSTANCE or GROUP"),
    (["notify", "INSTANCE", "VI_1", "MASTER", "high"], "PRIORITY must be an integer"),
    (["notify", "INSTANCE"], "the following arguments are required"),
    (["notify", "INSTANCE", "VI_1", "MASTER", "100", "extra"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_notify_arguments(cluster, args, fragment):
    s1, s2, cfg, state = cluster
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server2", *args)
    assert r.code == 2, r
    assert fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    assert t.snapshot(s1, s2) == before and t.journal(state) == []


def test_broken_yaml_and_missing_keys(cluster, tmp_path):
    s1, s2, _, _ = cluster
    before = t.snapshot(s1, s2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  server1: {host: 127.0.0.1\n")
    r = t.orch(str(bad), "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 1 and str(bad) in r.stderr and "line" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    missing = tmp_path / "missing.yaml"
    missing.write_text("self: server1\nnodes:\n  server1: {host: 127.0.0.1, port: x}\n  server2: {host: 127.0.0.1}\n")
    r = t.orch(str(missing), None, "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r
    for problem in ("nodes.server1.port: expected an integer", "mysql: missing", "replication: missing"):
        assert problem in r.stderr
    r = t.orch(str(missing), None, "check-config")
    assert r.code == 1 and "nodes.server1.port: expected an integer" in r.stderr
    assert t.snapshot(s1, s2) == before


def test_wrong_password_changes_nothing(cluster, tmp_path):
    s1, s2, _, state = cluster
    d = t.config_dict(s1, s2, state)
    d["mysql"]["password"] = "definitely-wrong-pw"
    cfg = t.write_config(tmp_path / "wrong.yaml", d)
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 1 and "Access denied" in r.stderr, r
    assert t.snapshot(s1, s2) == before
    t.assert_no_secrets(r.output, extra=("definitely-wrong-pw",))


def test_unreachable_peer_on_backup(cluster, tmp_path):
    s1, s2, _, state = cluster
    d = t.config_dict(s1, s2, state, self="server2")
    d["nodes"]["server1"]["port"] = lab.free_port()  # nothing listens there
    cfg = t.write_config(tmp_path / "nopeer.yaml", d)
    before = t.snapshot(s1, s2)
    r = t.orch(cfg, None, "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 3, r
    assert "server1 is not reachable" in r.stderr and "staying read-only" in r.stderr
    assert t.snapshot(s1, s2) == before


def test_config_readable_by_others_warns(cluster, tmp_path):
    s1, s2, _, state = cluster
    cfg = t.write_config(tmp_path / "open.yaml", t.config_dict(s1, s2, state))
    Path(cfg).chmod(0o644)
    r = t.orch(cfg, None, "check-config")
    assert r.code == 0 and "readable by others" in r.stdout
    Path(cfg).chmod(0o600)
    assert "readable by others" not in t.orch(cfg, None, "check-config").stdout


def test_notify_path_stays_light(cluster):
    """No scheduler (nor retry library, nor Atlas code without Atlas, nor the lab) on keepalived's path."""
    s1, s2, cfg, _ = cluster
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.code == 0, r
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "pymysql" in imported and "orchestrator.decide" in imported, "import tracing did not work"
    for heavy in ("apscheduler", "tenacity", "orchestrator.atlas.client", "orchestrator.commands.maintain", "orchestrator.lab"):
        assert heavy not in imported, f"{heavy} is imported on the notify path"
    assert not [m for m in imported if m.startswith("orchestrator.lab.")], "the lab is imported on the notify path"


def test_check_command_answers_for_this_node_only(cluster):
    s1, s2, cfg, _ = cluster
    assert t.orch(cfg, "server1", "check").code == 0
    s1.kill()
    r = t.orch(cfg, "server1", "check", "--timeout", "0.5")
    assert r.code == 1 and "server1" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    assert t.orch(cfg, "server2", "check").code == 0


def test_status_flags_an_unfinished_run(cluster):
    from orchestrator.journal import Journal

    s1, s2, cfg, state = cluster
    Path(state).mkdir(parents=True, exist_ok=True)
    Journal(state).append({"id": "r1", "node": "server2", "event": "MASTER", "phase": "begin", "reason": "promoting server2"})
    r = t.orch(cfg, "server1", "status")
    assert "r1 server2 MASTER: UNFINISHED" in r.stdout, r
    Journal(state).append({"id": "r1", "node": "server2", "event": "MASTER", "phase": "end", "result": "act"})
    assert "UNFINISHED" not in t.orch(cfg, "server1", "status").stdout
