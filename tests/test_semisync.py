"""failover.semi_sync: semi-synchronous replication without fallback, and what orch does about it.

Real MariaDB pairs: a promotion switches the new master's wait off (its peer cannot
acknowledge yet), the maintainer switches it back on once the peer replicates and has
caught up, and switches it off when the replica dies while the witness answers (the
write stall that costs is measured and printed). The pure decisions are tested beside.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pymysql
import pytest

from orchestrator import semisync
from orchestrator.config import parse
from orchestrator.invariants import decide_semisync, needs_witness
from orchestrator.lab import mariadb as lab
from orchestrator.model import ClusterView, NodeState, ReplicaStatus, SemiSync, ThreadState
from orchestrator.plan import ACT, NOOP, SemiSyncReplica, SemiSyncWait

from . import orchtest as t

NO_FALLBACK = {"rpl_semi_sync_master_enabled": "ON", "rpl_semi_sync_master_timeout": str(semisync.NO_FALLBACK_MS),
               "rpl_semi_sync_master_wait_no_slave": "ON", "rpl_semi_sync_master_wait_point": "AFTER_SYNC"}


def enable(master: lab.MariaDBInstance, replica: lab.MariaDBInstance) -> None:
    for name, value in NO_FALLBACK.items():
        master.sql(f"SET GLOBAL {name} = {value if value.isdigit() or value in ('ON', 'OFF') else repr(value)}")
    replica.sql("SET GLOBAL rpl_semi_sync_slave_enabled = ON")
    replica.sql("STOP SLAVE IO_THREAD")
    replica.sql("START SLAVE IO_THREAD")
    deadline = time.monotonic() + 10
    while clients(master) < 1:
        assert time.monotonic() < deadline, "the replica never connected as a semi-sync client"
        time.sleep(0.05)


def clients(server: lab.MariaDBInstance) -> int:
    return int(server.sql("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")[0]["Value"])


def wait_enabled(server: lab.MariaDBInstance) -> bool:
    return bool(int(server.query_value("SELECT @@global.rpl_semi_sync_master_enabled")))


def semi_config(tmp_path: Path, s1, s2, state: str) -> str:
    return t.write_config(tmp_path / "semi.yaml", t.config_dict(
        s1, s2, state, failover={"catchup_timeout": 5, "semi_sync": True, "witness": "127.0.0.1"},
        maintainer={"interval": 1, "max_lag": 10}))


def insert_in_thread(server: lab.MariaDBInstance, row: int, out: dict) -> threading.Thread:
    def run() -> None:
        conn = pymysql.connect(unix_socket=server.socket, user="root", autocommit=True)
        try:
            conn.cursor().execute("INSERT INTO test.t VALUES (%s, 'x')", (row,))
            out[row] = time.monotonic()
        except pymysql.MySQLError as exc:
            out[row] = exc
        finally:
            conn.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_promotion_switches_the_wait_off_and_the_maintainer_back_on(cluster, tmp_path):
    s1, s2, _, state = cluster
    cfg = semi_config(tmp_path, s1, s2, state)
    enable(s1, s2)
    s1.sql("INSERT INTO test.t VALUES (1, 'acked')")
    lab.wait_gtid_equal(s1, s2)
    # server2's own master side is configured like server1's (both nodes' my.cnf alike).
    for name, value in NO_FALLBACK.items():
        s2.sql(f"SET GLOBAL {name} = {value if value.isdigit() or value in ('ON', 'OFF') else repr(value)}")
    s1.kill()

    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER")
    assert r.code == 0, r
    assert not t.read_only(s2)
    assert not wait_enabled(s2), "the new master must not wait for a replica that is not there"
    record = semisync.read_record(state)
    assert record is not None and record["wait"] == "off" and record["node"] == "server2"
    steps = [s for rec in t.journal(state) if rec.get("phase") == "end" for s in rec["steps"]]
    assert any(s["step"] == "SemiSyncWait" and s["result"] == "ok" for s in steps), steps
    shown = t.orch(cfg, "server2", "status")
    assert "wait OFF (async)" in shown.stdout and "orch switched server2's wait off" in shown.stdout, shown
    started = time.monotonic()
    s2.sql("INSERT INTO test.t VALUES (2, 'after promotion')")
    assert time.monotonic() - started < 1.0

    # The old master comes back read-only and rejoins as a replica that acknowledges.
    s1.extra_options["read_only"] = "ON"
    s1.start()
    s1.sql("SET GLOBAL rpl_semi_sync_slave_enabled = OFF")  # as if its my.cnf lacked it: orch enables it
    r = t.orch(cfg, "server1", "demote", "--yes")
    assert r.code == 0, r
    assert s1.query_value("SELECT @@global.rpl_semi_sync_slave_enabled") in (1, "1")
    lab.wait_gtid_equal(s1, s2)
    deadline = time.monotonic() + 10
    while clients(s2) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The maintainer on server2's host switches the wait back on: the peer has caught up.
    r = t.orch(cfg, "server2", "maintain", "--once")
    assert r.code == 0, r
    assert wait_enabled(s2), r.stderr
    assert int(s2.query_value("SELECT @@global.rpl_semi_sync_master_timeout")) >= semisync.NO_FALLBACK_MIN_MS
    record = semisync.read_record(state)
    assert record is not None and record["wait"] == "on"
    shown = t.orch(cfg, "server2", "status", "--format", "json")
    doc = json.loads(shown.stdout)
    master = next(n for n in doc["nodes"] if n["name"] == "server2")
    assert master["semi_sync"]["wait"] and master["semi_sync"]["no_fallback"], master
    assert doc["semi_sync_policy"]["record"]["wait"] == "on"
    assert "SEMISYNC" in {rec.get("event") for rec in t.journal(state)}
    # A second pass changes nothing.
    before = len(t.journal(state))
    assert t.orch(cfg, "server2", "maintain", "--once").code == 0
    assert len(t.journal(state)) == before


def test_replica_death_stalls_writes_until_the_maintainer_sees_the_witness(cluster, tmp_path, capsys):
    s1, s2, _, state = cluster
    cfg = semi_config(tmp_path, s1, s2, state)
    enable(s1, s2)
    s1.sql("INSERT INTO test.t VALUES (1, 'acked')")
    s2.kill()
    out: dict = {}
    died = time.monotonic()
    th = insert_in_thread(s1, 2, out)
    time.sleep(0.5)
    assert 2 not in out, "with no fallback a commit waits for the replica"
    # The maintainer's loop: a pass every second (maintainer.interval) in the foreground.
    proc = subprocess.Popen([t.ORCH, "-c", cfg, "--node", "server1", "maintain"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        th.join(15)
        assert isinstance(out.get(2), float), f"the writer stayed blocked: {out}"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    stall = out[2] - died
    with capsys.disabled():
        print(f"\nsemi-sync, replica killed: a writer on the master stalled {stall:.2f}s "
              f"(maintainer interval 1s + witness ping), then went on without the replica")
    assert not wait_enabled(s1)
    assert "witness 127.0.0.1 answers" in err, err
    record = semisync.read_record(state)
    assert record is not None and record["wait"] == "off"


# ---------------------------------------------------------------- pure decisions


def _cfg(semi: bool = True):
    return parse({
        "cluster": "c", "self": "a", "nodes": {"a": {"host": "10.0.0.1"}, "b": {"host": "10.0.0.2"}},
        "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
        "failover": {"semi_sync": semi, "witness": "10.0.0.254"} if semi else {},
        "keepalived": {"vip": "10.0.0.100"},
    })


def _master(semi: SemiSync) -> NodeState:
    return NodeState("a", "10.0.0.1", 3306, True, version="10.11.6-MariaDB", flavor="mariadb", executed="0-1-10",
                     binlog_pos="0-1-10", binlog_state="0-1-10", semisync=semi)


def _replica(io: ThreadState = ThreadState.RUNNING, lag: int = 0) -> NodeState:
    r = ReplicaStatus("10.0.0.1", 3306, io, ThreadState.RUNNING, lag, "0-1-10", True)
    return NodeState("b", "10.0.0.2", 3306, True, version="10.11.6-MariaDB", flavor="mariadb", read_only=True,
                     executed="0-1-10", binlog_pos="0-1-10", binlog_state="0-1-10", replica=r,
                     semisync=SemiSync(replica_enabled=True))


ON = SemiSync(enabled=True, timeout_ms=semisync.NO_FALLBACK_MS, wait_no_replica=True, wait_point="AFTER_SYNC", clients=1)
GONE = replace(ON, clients=0)
DOWN_PEER = NodeState("b", "10.0.0.2", 3306, False, error="connection refused")


def test_isolated_master_never_stops_waiting():
    view = ClusterView(_master(GONE), DOWN_PEER, holds_vip=True)
    assert needs_witness(view, _cfg())
    plan = decide_semisync(view, _cfg(), witness=False)
    assert plan is not None and plan.outcome == NOOP and not plan.steps and "may be isolated" in plan.reason
    assert decide_semisync(view, _cfg(), witness=None).outcome == NOOP  # unknown counts as unreachable


def test_dead_replica_with_witness_switches_off():
    plan = decide_semisync(ClusterView(_master(GONE), DOWN_PEER, holds_vip=True), _cfg(), witness=True)
    assert plan is not None and plan.outcome == ACT and plan.steps == (SemiSyncWait("a", False, plan.steps[0].why),)


def test_connected_replica_keeps_the_wait_and_needs_no_ping():
    view = ClusterView(_master(ON), _replica(), holds_vip=True)
    assert not needs_witness(view, _cfg())
    assert decide_semisync(view, _cfg(), witness=True) is None
    # Reconnecting (IO thread Connecting, no client): gone, as far as acknowledgements go.
    view = ClusterView(_master(GONE), _replica(io=ThreadState.CONNECTING), holds_vip=True)
    assert needs_witness(view, _cfg())


def test_wait_back_on_only_once_caught_up():
    off = replace(ON, enabled=False)
    assert decide_semisync(ClusterView(_master(off), _replica(lag=30), holds_vip=True), _cfg()) is None
    plan = decide_semisync(ClusterView(_master(off), _replica(lag=0), holds_vip=True), _cfg())
    assert plan is not None and plan.steps[0] == SemiSyncWait("a", True, plan.steps[0].why)
    # A fallback timeout (misconfigured) is corrected the same way.
    short = replace(ON, timeout_ms=10_000)
    plan = decide_semisync(ClusterView(_master(short), _replica(), holds_vip=True), _cfg())
    assert plan is not None and plan.steps[0].on is True


def test_policy_off_or_not_the_vip_holder_does_nothing():
    view = ClusterView(_master(GONE), DOWN_PEER, holds_vip=True)
    assert decide_semisync(view, _cfg(semi=False), witness=True) is None
    assert decide_semisync(replace(view, holds_vip=False), _cfg(), witness=True) is None


def test_replica_that_does_not_acknowledge_gets_its_side_enabled():
    cfg = parse({**json.loads(json.dumps({
        "cluster": "c", "self": "b", "nodes": {"a": {"host": "10.0.0.1"}, "b": {"host": "10.0.0.2"}},
        "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
        "failover": {"semi_sync": True, "witness": "10.0.0.254"}, "keepalived": {"vip": "10.0.0.100"}}))})
    me = replace(_replica(), semisync=SemiSync(replica_enabled=False))
    plan = decide_semisync(ClusterView(me, _master(ON), holds_vip=False), cfg)
    assert plan is not None and plan.steps == (SemiSyncReplica("b"),)


def test_config_needs_a_witness_with_semi_sync():
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="failover.witness"):
        parse({"cluster": "c", "self": "a", "nodes": {"a": {"host": "10.0.0.1"}, "b": {"host": "10.0.0.2"}},
               "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
               "failover": {"semi_sync": True}, "keepalived": {"vip": "10.0.0.100"}})


def test_fence_ends_commits_waiting_for_an_acknowledgement_at_once(cluster, tmp_path):
    """An isolated master's FAULT: its waiting commits end with an error (never acknowledged),
    and the fence does not wait failover.fence_timeout behind them."""
    s1, s2, _, state = cluster
    cfg = t.write_config(tmp_path / "semi.yaml", t.config_dict(
        s1, s2, state, failover={"catchup_timeout": 5, "semi_sync": True, "witness": "127.0.0.1", "fence_timeout": 10}))
    enable(s1, s2)
    s2.sql("STOP SLAVE")  # the replica is gone (as seen from an isolated master)
    out: dict = {}
    th = insert_in_thread(s1, 7, out)
    time.sleep(0.5)
    assert 7 not in out
    started = time.monotonic()
    r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "FAULT")
    took = time.monotonic() - started
    th.join(5)
    assert r.code == 0, r
    assert t.read_only(s1)
    assert took < 5, f"the fence waited {took:.1f}s behind a commit waiting for an acknowledgement"
    assert isinstance(out.get(7), pymysql.MySQLError), f"the waiting commit must end with an error, got {out.get(7)!r}"
    end = [rec for rec in t.journal(state) if rec.get("phase") == "end"][-1]
    fence = next(s for s in end["steps"] if s["step"] == "Fence")
    assert "semi-sync acknowledgement" in fence["detail"] and "INSERT" not in fence["detail"].split("digest")[0]
