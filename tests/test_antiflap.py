"""Anti-flapping: an automatic promotion too soon after the last one is refused until an
operator acknowledges it (orch ack) or forces it (orch promote --force).

The decisions are pure (the record is a field of the observed view); the real-server test
runs each node with its own state_dir, so what blocks can only come from the databases.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator import antiflap
from orchestrator import promotions as flap_record
from orchestrator.config import parse
from orchestrator.decide import MASTER, decide
from orchestrator.errors import ConfigError
from orchestrator.invariants import decide_invariant, decide_pending
from orchestrator.lab import mariadb as lab
from orchestrator.model import ClusterView, NodeState, PromotionRecord, ReplicaStatus, ThreadState
from orchestrator.plan import ACT, NOOP, REFUSED, AckLocally, RecordPromotion, SetWritable

from . import orchtest as t


def cfg(**failover):
    return parse({
        "self": "server1",
        "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
        "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
        "failover": {"catchup_timeout": 30, **failover}, "keepalived": {"vip": "10.0.0.100"}, "state_dir": "/nonexistent",
    })


def node(name: str, ro: bool, pos: str = "0-2-10", reachable: bool = True) -> NodeState:
    n = int(name[-1])
    if not reachable:
        return NodeState(name=name, host=f"10.0.0.{n}", port=3306, reachable=False, error="connection refused")
    return NodeState(name=name, host=f"10.0.0.{n}", port=3306, reachable=True, version="10.11.6-MariaDB", flavor="mariadb",
                     server_id=n, read_only=ro, executed=pos, binlog_pos=pos, binlog_state=pos)


def rec(age: float, kind: str = "failover", acked: bool = False, who: str = "server2") -> PromotionRecord:
    return PromotionRecord(run_id="20261126T170000-abcdef", kind=kind, node=who, at=1_000_000.0, age=age, acked=acked, seen_on="server1")


def replica_of(n: NodeState, source: str) -> NodeState:
    """``n`` replicating from ``source`` (its IO thread reconnecting: the source is gone)."""
    i = int(source[-1])
    return replace(n, replica=ReplicaStatus(source_host=f"10.0.0.{i}", source_port=3306, io=ThreadState.CONNECTING,
                                            sql=ThreadState.RUNNING, lag=None, retrieved=n.executed, auto_position=True))


# server1 holds the VIP, read-only, a replica of server2 (promoted a minute ago), which is down:
# opening server1 moves writes from server2 to it (a failover).
ALONE = ClusterView(me=replica_of(node("server1", ro=True), "server2"), peer=node("server2", ro=True, reachable=False), holds_vip=True)


def test_recent_automatic_promotion_blocks_the_next_one_and_says_how_to_lift_it():
    plan = decide(replace(ALONE, last_promotion=rec(60)), MASTER, cfg())
    assert plan.outcome == REFUSED and plan.steps == (), plan.render()
    assert "anti-flapping block" in plan.reason and "orch ack" in plan.reason and "orch promote --ignore-anti-flapping" in plan.reason
    assert "server2 was promoted automatically 60s ago" in plan.reason and "stays fenced" in plan.reason


@pytest.mark.parametrize("record, why", [
    (None, "nothing on record"),
    (rec(3600), "as old as block_seconds"),
    (rec(60, acked=True), "acknowledged"),
    (rec(60, kind="operator"), "an operator promoted since"),
    (rec(60, kind="switchover"), "a switchover since"),
])
def test_no_block(record, why):
    plan = decide(replace(ALONE, last_promotion=record), MASTER, cfg())
    assert plan.outcome == ACT, f"{why}: {plan.render()}"


def test_block_off_and_record_step():
    steps = decide(ALONE, MASTER, cfg()).steps
    i = steps.index(SetWritable("server1"))
    assert steps[i + 1] == RecordPromotion("server1", "failover"), "recorded right after writes open"
    off = cfg(block_seconds=0)
    plan = decide(replace(ALONE, last_promotion=rec(1)), MASTER, off)
    assert plan.outcome == ACT and not any(isinstance(s, RecordPromotion) for s in plan.steps)


def test_operator_force_overrides_and_records_an_operator_promotion():
    v = replace(ALONE, last_promotion=rec(60))
    assert decide(v, MASTER, cfg(), operator=True).outcome == REFUSED  # plain orch promote: blocked too
    plan = decide(v, MASTER, cfg(), force=True, operator=True)
    assert plan.outcome == ACT and RecordPromotion("server1", "operator") in plan.steps
    assert any("--force: promoting despite the anti-flapping block" in w for w in plan.warnings)


def test_each_override_skips_only_its_own_gate():
    """--ignore-anti-flapping skips the block, not the catch-up; --ignore-catchup the reverse."""
    from orchestrator.plan import CatchUp

    blocked = replace(ALONE, last_promotion=rec(60))
    plan = decide(blocked, MASTER, cfg(), operator=True, ignore_catchup=True)
    assert plan.outcome == REFUSED and "anti-flapping block" in plan.reason, plan.render()
    plan = decide(blocked, MASTER, cfg(), operator=True, ignore_anti_flapping=True)
    assert plan.outcome == ACT and RecordPromotion("server1", "operator") in plan.steps
    assert any(w.startswith("--ignore-anti-flapping: promoting despite the anti-flapping block") for w in plan.warnings)
    assert not any(isinstance(s, CatchUp) and s.force for s in plan.steps), "the catch-up still refuses"
    # The SQL thread stopped on an error: only --ignore-catchup (or --force) promotes.
    me = replace(ALONE.me, replica=replace(ALONE.me.replica, sql=ThreadState.STOPPED, last_sql_errno=1062, last_sql_error="dup"))
    broken = replace(ALONE, me=me)
    plan = decide(broken, MASTER, cfg(), operator=True, ignore_anti_flapping=True)
    assert plan.outcome == REFUSED and "orch promote --ignore-catchup overrides" in plan.reason, plan.render()
    plan = decide(broken, MASTER, cfg(), operator=True, ignore_catchup=True)
    assert plan.outcome == ACT and any(w.startswith("--ignore-catchup: promoting although") for w in plan.warnings)
    assert all(s.force for s in plan.steps if isinstance(s, CatchUp))
    # --force (deprecated) is both, and its warnings still say --force.
    plan = decide(replace(broken, last_promotion=rec(60)), MASTER, cfg(), operator=True, force=True)
    assert plan.outcome == ACT and all(w.startswith("--force: ") for w in plan.warnings if "promoting" in w), plan.warnings


def test_switchover_candidate_is_not_recorded_as_a_failover():
    v = replace(ALONE, last_promotion=rec(5, kind="switchover", who="server1"))
    plan = decide(v, MASTER, cfg())
    assert plan.outcome == ACT and not any(isinstance(s, RecordPromotion) for s in plan.steps), plan.render()


def test_unreadable_record_does_not_block_but_warns():
    plan = decide(replace(ALONE, promotion_error="server1: (1142) SELECT command denied"), MASTER, cfg())
    assert plan.outcome == ACT and any("anti-flapping record unreadable" in w for w in plan.warnings)


def test_the_maintainers_vip_holder_retry_and_handed_over_events_respect_the_block():
    v = replace(ALONE, last_promotion=rec(60))
    event, plan = decide_invariant(v, cfg())
    assert event == MASTER and plan.outcome == REFUSED and plan.steps == (), plan.render()
    assert "holds VIP 10.0.0.100 but is read-only" in plan.reason and "anti-flapping block" in plan.reason
    pending = decide_pending(v, cfg(), MASTER)
    assert pending.outcome == REFUSED and pending.steps == () and "orch ack" in pending.reason
    # Acknowledged: the next pass promotes.
    event, plan = decide_invariant(replace(v, last_promotion=rec(60, acked=True)), cfg())
    assert event == MASTER and plan.outcome == ACT


def test_decide_ack():
    c = cfg()
    assert antiflap.decide_ack(ALONE, c).outcome == NOOP  # nothing on record
    assert antiflap.decide_ack(replace(ALONE, last_promotion=rec(60, acked=True)), c).outcome == NOOP
    assert antiflap.decide_ack(replace(ALONE, last_promotion=rec(60)), cfg(block_seconds=0)).outcome == NOOP
    # Nobody writable (the block's own result): this host's state_dir, never a row on a read-only server.
    plan = antiflap.decide_ack(replace(ALONE, last_promotion=rec(60)), c)
    assert plan.outcome == ACT and plan.steps == (AckLocally("/nonexistent", "20261126T170000-abcdef"),)
    # A writable master: a row on it, which replicates.
    v = ClusterView(me=node("server1", ro=True), peer=node("server2", ro=False), holds_vip=False, last_promotion=rec(60))
    assert antiflap.decide_ack(v, c).steps == (RecordPromotion("server2", "ack", "20261126T170000-abcdef"),)
    assert antiflap.decide_ack(replace(ALONE, promotion_error="x"), c).outcome == REFUSED


def test_combine_takes_the_latest_copy_and_any_acknowledgement(tmp_path):
    old = replace(rec(100), run_id="a", at=10.0)
    new = replace(rec(50), run_id="b", at=60.0)
    latest, err = flap_record.combine({"server1": (old, ""), "server2": (new, "")}, str(tmp_path))
    assert latest.run_id == "b" and not latest.acked and err == ""
    latest, _ = flap_record.combine({"server1": (new, ""), "server2": (replace(new, acked=True), "")}, str(tmp_path))
    assert latest.acked
    flap_record.write_local_ack(str(tmp_path), "b", "run-x")
    latest, _ = flap_record.combine({"server1": (new, ""), "server2": (None, "server2: denied")}, str(tmp_path))
    assert latest.acked
    assert flap_record.combine({"server1": (None, "")}, str(tmp_path)) == (None, "")


@pytest.mark.parametrize("copies, local_ack, run_id, acked", [
    ({"server1": (replace(rec(100), run_id="a", at=10.0), ""), "server2": (replace(rec(50), run_id="b", at=60.0), "")}, None, "b", False),
    ({"server1": (rec(50), ""), "server2": (rec(50, acked=True), "")}, None, "20261126T170000-abcdef", True),
    ({"server1": (rec(50), "")}, "20261126T170000-abcdef", "20261126T170000-abcdef", True),  # this host's acknowledgement
    ({"server1": (rec(50), "")}, "another-run", "20261126T170000-abcdef", False),
    ({"server1": (rec(50, kind="operator"), "")}, "20261126T170000-abcdef", "20261126T170000-abcdef", False),  # only a failover is acknowledged
])
def test_latest_is_pure_over_both_copies_and_this_hosts_acknowledgement(copies, local_ack, run_id, acked):
    newest, errors = antiflap.latest(copies, local_ack)
    assert (newest.run_id, newest.acked, errors) == (run_id, acked, "")


def test_latest_keeps_the_errors_of_unreadable_copies():
    assert antiflap.latest({"server1": (None, "server1: denied"), "server2": (None, "")}) == (None, "server1: denied")


def test_the_decisions_import_no_input_or_output():
    """decide.py and the pure anti-flapping module never reach the record's SQL or files."""
    from .test_imports import import_graph

    graph = import_graph()
    assert graph["orchestrator.antiflap"] <= {"orchestrator.model", "orchestrator.plan"}, graph["orchestrator.antiflap"]
    assert "orchestrator.promotions" not in graph["orchestrator.decide"]


def test_block_seconds_config():
    assert cfg().failover.block_seconds == 3600
    assert cfg(block_seconds=0).failover.block_seconds == 0
    for bad in (-1, "1h", True):
        with pytest.raises(ConfigError) as e:
            cfg(block_seconds=bad)
        assert "failover.block_seconds" in str(e.value)


# --------------------------------------------------------------------------- real servers

MASTER_ARGS = ("notify", "INSTANCE", "VI_1", "MASTER", "100")
BACKUP_ARGS = ("notify", "INSTANCE", "VI_1", "BACKUP", "90")


def node_configs(s1, s2, tmp_path: Path):
    """One config per host, each with its own state_dir: nothing shared but the databases."""
    out = {}
    for name in ("server1", "server2"):
        d = t.config_dict(s1, s2, str(tmp_path / f"state-{name}"))
        d["self"] = name
        d["failover"] = {"catchup_timeout": 5, "block_seconds": 600}
        out[name] = (t.write_config(tmp_path / f"orch-{name}.yaml", d), str(tmp_path / f"state-{name}"))
    return out


def promotions(server) -> list:
    return server.sql("SELECT kind, node, acks FROM orch_meta.promotions ORDER BY at")


def rejoin(cfgs, name, server, master):
    if not server.is_running():
        server.start()
    r = t.orch(cfgs[name][0], None, *BACKUP_ARGS)
    assert r.code == 0, r
    lab.wait_gtid_equal(master, server)


@pytest.mark.mariadb
def test_flapping_refused_until_forced_or_acknowledged_each_node_on_its_own_state_dir(cluster, tmp_path):
    s1, s2, _, _ = cluster
    cfgs = node_configs(s1, s2, tmp_path)
    c1, c2 = cfgs["server1"][0], cfgs["server2"][0]

    # 1. server1 dies: server2 is promoted automatically and records it.
    s1.kill()
    r = t.orch(c2, None, *MASTER_ARGS)
    assert r.code == 0, r
    assert not t.read_only(s2)
    assert promotions(s2) == [{"kind": "failover", "node": "server2", "acks": ""}]
    record_step = [s for s in t.journal(cfgs["server2"][1])[-1]["steps"] if s["step"] == "RecordPromotion"]
    assert record_step and record_step[0]["result"] == "ok", record_step

    # 2. server1 rejoins (the record replicates to it). A MASTER on server1 now is flapping:
    # refused, nothing changed (server2 stays the writable master); so is a plain orch promote.
    rejoin(cfgs, "server1", s1, s2)
    assert promotions(s1) == promotions(s2)
    before = t.snapshot(s1, s2)
    r = t.orch(c1, None, *MASTER_ARGS)
    assert r.code == 1, r
    assert "anti-flapping block" in r.output and "orch ack" in r.output and "server2 was promoted automatically" in r.output
    r = t.orch(c1, None, "promote", "--yes")
    assert r.code == 1 and "anti-flapping block" in r.output, r
    assert t.snapshot(s1, s2) == before
    shown = t.orch(c1, None, "status")
    assert "anti-flapping: block_seconds" in shown.stdout and "BLOCKED" in shown.stdout, shown

    # 3. server2 dies too: server1 reads the record from its own copy, stays fenced.
    s2.kill()
    r = t.orch(c1, None, *MASTER_ARGS)
    assert r.code == 1 and "anti-flapping block" in r.output, r
    assert t.read_only(s1)
    refusals = [e for e in t.journal(cfgs["server1"][1]) if e.get("event") == MASTER and e["phase"] == "begin"]
    assert refusals and all(e["outcome"] == "refused" and "anti-flapping block" in e["reason"] and e["plan"] == [] for e in refusals)

    # 4. orch ack: nobody is writable, so this host acknowledges it in its state_dir (no row on a
    # read-only server: it would be an errant transaction); then the MASTER promotes.
    r = t.orch(c1, None, "ack", "--dry-run")
    assert r.code == 0 and "dry run" in r.output and t.read_only(s1), r
    r = t.orch(c1, None, "ack", "--yes")
    assert r.code == 0, r
    assert "acknowledg" in r.output and t.gtid(s1, "gtid_binlog_pos") == before[0][1]
    assert [e["result"] for e in t.journal(cfgs["server1"][1]) if e.get("event") == "ACK" and e["phase"] == "end"] == ["act"]
    r = t.orch(c1, None, *MASTER_ARGS)
    assert r.code == 0, r
    assert not t.read_only(s1)
    assert promotions(s1)[-1] == {"kind": "failover", "node": "server1", "acks": ""}

    # 5. server2 rejoins; the block is server1's promotion now. With a writable master, orch ack
    # on server2's host writes a row on server1, which replicates: server2's own copy lifts it.
    rejoin(cfgs, "server2", s2, s1)
    r = t.orch(c2, None, *MASTER_ARGS)
    assert r.code == 1 and "anti-flapping block" in r.output and "server1 was promoted automatically" in r.output, r
    r = t.orch(c2, None, "ack", "--yes")
    assert r.code == 0, r
    lab.wait_gtid_equal(s1, s2)
    assert promotions(s2)[-1]["kind"] == "ack"
    s1.kill()
    r = t.orch(c2, None, *MASTER_ARGS)
    assert r.code == 0, r
    assert not t.read_only(s2)

    # 6. Flapping again; orch promote --force overrides the block (an operator promotion,
    # which ends the block: the next automatic promotion is allowed).
    rejoin(cfgs, "server1", s1, s2)
    r = t.orch(c1, None, *MASTER_ARGS)
    assert r.code == 1 and "anti-flapping block" in r.output, r
    r = t.orch(c1, None, "promote", "--force", "--yes")
    assert r.code == 0, r
    assert "--force: promoting despite the anti-flapping block" in r.output
    assert not t.read_only(s1) and t.read_only(s2)
    assert promotions(s1)[-1] == {"kind": "operator", "node": "server1", "acks": ""}
    t.assert_no_secrets(r.output)


@pytest.mark.mariadb
def test_a_switchover_is_planned_neither_blocked_nor_counted_as_a_failover(cluster, tmp_path):
    """orch switchover records its candidate on the old master before fencing it: the
    candidate's MASTER event then promotes despite a recent failover and records nothing."""
    from orchestrator.config import load
    from orchestrator.db import open_servers

    s1, s2, _, _ = cluster
    cfgs = node_configs(s1, s2, tmp_path)
    servers = open_servers(load(cfgs["server1"][0]))
    try:
        assert flap_record.record(servers["server1"], antiflap.FAILOVER, "server1", "run-earlier").startswith("recorded")
        assert flap_record.record_switchover(servers["server1"], "server2", "run-switchover") == "recorded"
    finally:
        servers["server1"].close()
    lab.wait_gtid_equal(s1, s2)
    s1.sql("SET GLOBAL read_only = 1")  # the switchover's fence of the old master
    r = t.orch(cfgs["server2"][0], None, *MASTER_ARGS)
    assert r.code == 0, r
    assert not t.read_only(s2)
    assert [p["kind"] for p in promotions(s2)] == ["failover", "switchover"]


@pytest.mark.mariadb
def test_a_server_without_the_table_is_asked_whether_it_exists_until_it_does(cluster, tmp_path):
    """A failed read closes the connection: a server kept open (the maintainer's) remembers
    that the table is missing and asks information_schema instead, until a row is recorded."""
    from orchestrator.config import load
    from orchestrator.db import open_servers

    s1, s2, _, _ = cluster
    s1.sql(f"DROP DATABASE IF EXISTS {flap_record.SCHEMA}")
    server = open_servers(load(node_configs(s1, s2, tmp_path)["server1"][0]))["server1"]
    try:
        assert flap_record.read_latest(server, "server1") == (None, "")
        assert flap_record.TABLE in server.missing_tables
        assert flap_record.read_latest(server, "server1") == (None, "") and server.connected, "asked, not failed"
        assert flap_record.record(server, antiflap.FAILOVER, "server1", "run-first") == f"recorded (created {flap_record.TABLE})"
        latest, error = flap_record.read_latest(server, "server1")
        assert error == "" and latest.run_id == "run-first" and latest.kind == antiflap.FAILOVER
        assert flap_record.TABLE not in server.missing_tables
    finally:
        server.close()


def test_doctor_says_whether_the_record_is_readable_and_blocks():
    from orchestrator.commands.doctor import PASS, WARN, check_anti_flapping

    assert check_anti_flapping(ALONE, cfg(block_seconds=0))[0].status == PASS
    assert check_anti_flapping(ALONE, cfg())[0].status == PASS
    c = check_anti_flapping(replace(ALONE, promotion_error="server1: (1142) SELECT command denied"), cfg())[0]
    assert c.status == WARN and "orch_meta" in c.fix
    c = check_anti_flapping(replace(ALONE, last_promotion=rec(60)), cfg())[0]
    assert c.status == WARN and "orch ack" in c.fix


# Anti-flapping counts failovers (writes moving from one server to the other), not openings.
def _fresh_pair(record=None, peer_reachable=True):
    """server1 holds the VIP, read-only, replicating from nobody; server2 replicates from server1."""
    peer = replica_of(node("server2", ro=True), "server1") if peer_reachable else node("server2", ro=True, reachable=False)
    return ClusterView(me=node("server1", ro=True), peer=peer, holds_vip=True, last_promotion=record)


@pytest.mark.parametrize("view, why", [
    (_fresh_pair(), "bring-up: the peer replicates from this node"),
    (_fresh_pair(rec(4, who="server1")), "this node re-opened 4 s after its own failover (a hang, a FAULT, keepalived restarted)"),
    (_fresh_pair(rec(4, who="server2")), "the peer replicates from this node: whatever the record says, this node is its source"),
    (_fresh_pair(rec(4, who="server1"), peer_reachable=False), "the peer is down and this node was the last one promoted"),
    (_fresh_pair(None, peer_reachable=False), "the whole pair restarted, the peer not back yet, nothing on record"),
])
def test_reopening_the_last_writer_is_neither_blocked_nor_recorded(view, why):
    plan = decide(view, MASTER, cfg())
    assert plan.outcome == ACT, f"{why}: {plan.render()}"
    assert SetWritable("server1") in plan.steps, why
    assert not any(isinstance(s, RecordPromotion) for s in plan.steps), f"{why}: a re-opening records nothing"
    assert "a re-opening, not a failover" in plan.reason, plan.reason
    assert antiflap.writes_move(view) == "", why


@pytest.mark.parametrize("view, moving", [
    (ALONE, "server1 replicates from server2"),
    (replace(_fresh_pair(rec(4000)), me=node("server1", ro=True), peer=node("server2", ro=True, reachable=False)),
     "server2 was the last node promoted"),
    (ClusterView(me=replica_of(node("server1", ro=True), "server2"), peer=node("server2", ro=False), holds_vip=True),
     "server2 is writable"),
])
def test_writes_moving_from_the_peer_is_a_failover(view, moving):
    assert antiflap.writes_move(view) == moving
    plan = decide(view, MASTER, cfg())  # nothing on record blocks: each is the first failover
    assert plan.outcome == ACT and "a failover: writes move from server2" in plan.reason, plan.render()
    assert RecordPromotion("server1", "failover") in plan.steps


def test_bring_up_then_two_failovers_only_the_second_is_blocked():
    """The shipped block_seconds: bring-up opens server1 (nothing recorded), server1 dies and
    server2 opens (the first failover, recorded, never blocked by the bring-up), server2 dies
    within the hour and server1's MASTER is the second failover: blocked."""
    up = decide(_fresh_pair(), MASTER, cfg())
    assert up.outcome == ACT and not any(isinstance(s, RecordPromotion) for s in up.steps)
    # server2's MASTER: it replicates from server1, which is dead; nothing on record.
    first = ClusterView(me=replica_of(node("server2", ro=True), "server1"), peer=node("server1", ro=True, reachable=False),
                        holds_vip=True, last_promotion=None)
    plan = decide(first, MASTER, replace(cfg(), self_name="server2"))
    assert plan.outcome == ACT and RecordPromotion("server2", "failover") in plan.steps, plan.render()
    second = replace(ALONE, last_promotion=rec(20, who="server2"))
    plan = decide(second, MASTER, cfg())
    assert plan.outcome == REFUSED and "anti-flapping block" in plan.reason
