"""Table-driven scenarios for decide(): observed view + event -> reason + steps.

Plus "interrupted plan" tests: every prefix of a plan is applied to a small model of
the servers, decide runs again on the result, and the end state must be the same.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional, Tuple

import pytest

from orchestrator.config import parse
from orchestrator.decide import BACKUP, FAULT, MASTER, STOP, decide
from orchestrator.model import ClusterView, NodeState, ReplicaStatus, ThreadState
from orchestrator.plan import (
    ACT, INCOMPLETE, NOOP, REFUSED, CatchUp, ChangeSource, Fence, PreserveRelayLog, Recheck, RemoveBackend, ResetReplica,
    SetWritable, StartReplica, StartSqlThread, StopReplica, StopSqlThread,
)

RUN, CONN, STOPPED = ThreadState.RUNNING, ThreadState.CONNECTING, ThreadState.STOPPED
MARIA = "10.11.6-MariaDB"


def cfg(atlas: bool = False, **extra):
    raw = {
        "self": "server1",
        "nodes": {"server1": {"host": "10.0.0.1", "port": 3306}, "server2": {"host": "10.0.0.2", "port": 3306}},
        "mysql": {"user": "orch", "password": "x"},
        "replication": {"user": "repl", "password": "y"},
        "failover": {"catchup_timeout": 30, "block_seconds": 0},  # anti-flapping: tests/test_antiflap.py
        "keepalived": {"vip_check": False},
    }
    if atlas:
        raw["atlas"] = [{"name": "local", "admin": {"host": "127.0.0.1", "port": 2345, "user": "u", "password": "p"}}]
    raw.update(extra)
    return parse(raw)


def repl(source="10.0.0.2", io=RUN, sql=RUN, lag=0, retrieved="", errno=0, error="", auto=True) -> ReplicaStatus:
    return ReplicaStatus(source, 3306, io, sql, lag, retrieved, auto, "", errno, error)


def node(name, ro=True, executed="0-1-10", binlog_pos=None, binlog_state=None, replica: Optional[ReplicaStatus] = None, sid=None) -> NodeState:
    n = int(name[-1])
    return NodeState(
        name=name, host=f"10.0.0.{n}", port=3306, reachable=True, version=MARIA, flavor="mariadb",
        server_id=sid or n, read_only=ro, executed=executed,
        binlog_pos=executed if binlog_pos is None else binlog_pos,
        binlog_state=executed if binlog_state is None else binlog_state, replica=replica,
    )


def down(name) -> NodeState:
    n = int(name[-1])
    return NodeState(name=name, host=f"10.0.0.{n}", port=3306, reachable=False, error="(2003) Can't connect")


def view(me, peer, holds_vip=None) -> ClusterView:
    return ClusterView(me=me, peer=peer, holds_vip=holds_vip)


T = 30.0
# A healthy replica server1 of master server2, and the mirror image.
REPLICA1 = node("server1", ro=True, replica=repl("10.0.0.2"))
MASTER2 = node("server2", ro=False)
MASTER1 = node("server1", ro=False)
REPLICA2 = node("server2", ro=True, replica=repl("10.0.0.1"))

SCENARIOS = [
    # (id, view, event, outcome, reason fragment, steps)
    ("master: peer dead, replica caught up", view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, ACT,
     "promoting server1: server2 is not reachable", (CatchUp("server1", None, T), StopSqlThread("server1"), SetWritable("server1"), StopReplica("server1"), ResetReplica("server1"))),
    ("master: peer alive and writable is fenced first", view(REPLICA1, MASTER2), MASTER, ACT,
     "promoting server1: fencing server2 (still writable) first",
     (Fence("server2"), CatchUp("server1", "server2", T), Recheck("server1", "server2"), StopSqlThread("server1"), SetWritable("server1"), StopReplica("server1"), ResetReplica("server1"))),
    ("master: peer alive read-only", view(REPLICA1, node("server2", ro=True)), MASTER, ACT,
     "server2 is read-only, applying everything received first",
     (CatchUp("server1", "server2", T), Recheck("server1", "server2"), StopSqlThread("server1"), SetWritable("server1"), StopReplica("server1"), ResetReplica("server1"))),
    ("master: stopped SQL thread is started to drain", view(replace(REPLICA1, replica=repl(io=CONN, sql=STOPPED, retrieved="0-2-12")), down("server2")), MASTER, ACT,
     "promoting server1", (StartSqlThread("server1"), CatchUp("server1", None, T), StopSqlThread("server1"), SetWritable("server1"), StopReplica("server1"), ResetReplica("server1"))),
    ("master: stopped replication restarted when the peer answers", view(replace(REPLICA1, replica=repl(io=STOPPED, sql=STOPPED)), MASTER2), MASTER, ACT,
     "fencing server2", (Fence("server2"), StartReplica("server1"), CatchUp("server1", "server2", T), Recheck("server1", "server2"), StopSqlThread("server1"), SetWritable("server1"), StopReplica("server1"), ResetReplica("server1"))),
    ("master: both threads stopped, peer dead: the relay log is kept and applied",
     view(replace(REPLICA1, replica=repl(io=STOPPED, sql=STOPPED, retrieved="0-2-60")), down("server2")), MASTER, ACT,
     "applying the relay log first",
     (PreserveRelayLog("server1"), StartSqlThread("server1"), CatchUp("server1", None, T), StopSqlThread("server1"), SetWritable("server1"), StopReplica("server1"), ResetReplica("server1"))),
    ("master: both threads stopped, peer alive: relay log kept, drained, then re-pointed with GTIDs",
     view(replace(REPLICA1, replica=repl(io=STOPPED, sql=STOPPED, retrieved="0-2-60")), node("server2", ro=True, executed="0-2-70", binlog_state="0-1-10,0-2-70")), MASTER, ACT,
     "server2 is read-only but has 0-2-70 that server1 lacks",
     (PreserveRelayLog("server1"), StartSqlThread("server1"), CatchUp("server1", None, T), StopReplica("server1"),
      ChangeSource("server1", "server2", "10.0.0.2", 3306), StartReplica("server1"), CatchUp("server1", "server2", T), Recheck("server1", "server2"),
      StopSqlThread("server1"), SetWritable("server1"), StopReplica("server1"), ResetReplica("server1"))),
    ("master: read-only peer ahead, no replication: replicate from it first (the VIP on the stale node)",
     view(node("server1", ro=True, executed="0-1-10"), node("server2", ro=True, executed="0-2-40", binlog_state="0-1-10,0-2-40"), holds_vip=True), MASTER, ACT,
     "server2 is read-only but has 0-2-40 that server1 lacks: replicating it first",
     (ChangeSource("server1", "server2", "10.0.0.2", 3306), StartReplica("server1"), CatchUp("server1", "server2", T), Recheck("server1", "server2"),
      StopSqlThread("server1"), SetWritable("server1"), StopReplica("server1"), ResetReplica("server1"))),
    ("master: diverged from a read-only peer refuses, nothing touched",
     view(node("server1", ro=True, executed="0-1-11"), node("server2", ro=True, executed="0-2-40", binlog_state="0-1-10,0-2-40")), MASTER, REFUSED,
     "server1 and server2 have diverged: server1 has 0-1-11 that server2 lacks, and lacks 0-2-40", ()),
    ("master: peer alive but unusable refuses", view(REPLICA1, replace(down("server2"), alive=True, error="(1040) Too many connections")), MASTER, REFUSED,
     "server2 is alive but cannot be fenced ((1040) Too many connections)", ()),
    ("master: own server alive but unusable refuses", view(replace(down("server1"), alive=True, error="(1045) Access denied"), MASTER2), MASTER, REFUSED,
     "its server answers, but unusably ((1045) Access denied)", ()),
    ("backup: own server alive but unusable refuses (it may still take writes)", view(replace(down("server1"), alive=True, error="(1040) Too many connections"), MASTER2), BACKUP, REFUSED,
     "cannot fence server1: its server answers, but unusably", ()),
    ("backup: peer alive but unusable stays fenced", view(MASTER1, replace(down("server2"), alive=True, error="(1045) Access denied")), BACKUP, INCOMPLETE,
     "server2 answers, but unusably", (Fence("server1"),)),
    ("fault: own server alive but unusable refuses", view(replace(down("server1"), alive=True, error="(1045) Access denied"), MASTER2), FAULT, REFUSED,
     "cannot fence server1", ()),
    ("master: SQL error refuses, nothing touched", view(replace(REPLICA1, replica=repl(io=CONN, sql=STOPPED, errno=1062, error="Duplicate entry")), down("server2")), MASTER, REFUSED,
     "refusing to promote server1: server1's SQL thread stopped on error 1062: Duplicate entry", ()),
    ("master: already master is a no-op", view(MASTER1, REPLICA2), MASTER, NOOP, "no action: server1 is already the writable master", ()),
    ("master: already master, peer dead", view(MASTER1, down("server2")), MASTER, NOOP, "no action: server1 is already the writable master", ()),
    ("master: both writable fences the peer", view(MASTER1, MASTER2), MASTER, ACT, "both servers are writable: fencing server2", (Fence("server2"),)),
    ("master: own server down", view(down("server1"), MASTER2), MASTER, REFUSED, "refusing to promote server1: its server is not reachable", ()),
    ("master: stale event without the VIP", view(REPLICA1, MASTER2, holds_vip=False), MASTER, NOOP, "stale MASTER event", ()),
    ("master: writable but replication still configured", view(replace(MASTER1, replica=repl(io=STOPPED, sql=STOPPED)), down("server2")), MASTER, ACT,
     "still has replication configured", (StopReplica("server1"), ResetReplica("server1"))),

    ("backup: healthy replica is a no-op", view(REPLICA1, MASTER2), BACKUP, NOOP, "it already replicates from server2: nothing to do", ()),
    ("backup: old master rejoins", view(MASTER1, node("server2", ro=False, executed="0-2-20", binlog_state="0-1-10,0-2-20")), BACKUP, ACT,
     "server2 is the writable master and has every GTID server1 has",
     (Fence("server1"), ChangeSource("server1", "server2", "10.0.0.2", 3306), StartReplica("server1"))),
    ("backup: errant GTIDs refuse after fencing", view(node("server1", ro=False, executed="0-1-11"), node("server2", ro=False, executed="0-2-11", binlog_state="0-1-10,0-2-11")), BACKUP, REFUSED,
     "refusing to replicate from server2: server1 has errant GTIDs 0-1-11 that server2 lacks", (Fence("server1"),)),
    ("backup: same seq under another server id is errant", view(node("server1", ro=True, executed="0-1-11"), node("server2", ro=False, executed="0-2-11", binlog_state="0-2-11")), BACKUP, REFUSED,
     "errant GTIDs 0-1-11", ()),
    ("backup: peer down stays fenced", view(MASTER1, down("server2")), BACKUP, INCOMPLETE, "server2 is not reachable", (Fence("server1"),)),
    ("backup: peer read-only too", view(node("server1", ro=True), node("server2", ro=True)), BACKUP, INCOMPLETE, "no writable master to follow yet", ()),
    ("backup: own server down", view(down("server1"), MASTER2), BACKUP, INCOMPLETE, "nothing to fence", ()),
    ("backup: stopped replication restarted", view(replace(REPLICA1, replica=repl(io=STOPPED, sql=STOPPED)), MASTER2), BACKUP, ACT,
     "restarting its replication from server2", (StartReplica("server1"),)),
    ("backup: SQL error refuses", view(replace(REPLICA1, replica=repl(io=RUN, sql=STOPPED, errno=1146, error="no table")), MASTER2), BACKUP, REFUSED,
     "stopped by SQL error 1146", ()),
    ("backup: replicating from elsewhere is re-pointed", view(replace(REPLICA1, replica=repl("10.9.9.9")), MASTER2), BACKUP, ACT,
     "replicating from it", (StopReplica("server1"), ChangeSource("server1", "server2", "10.0.0.2", 3306), StartReplica("server1"))),
    ("backup: no GTID auto-position is re-pointed", view(replace(REPLICA1, replica=repl(auto=False)), MASTER2), BACKUP, ACT,
     "replicating from it", (StopReplica("server1"), ChangeSource("server1", "server2", "10.0.0.2", 3306), StartReplica("server1"))),
    ("backup: stale event while holding the VIP", view(MASTER1, REPLICA2, holds_vip=True), BACKUP, NOOP, "stale BACKUP event", ()),

    ("fault: writable node is fenced", view(MASTER1, REPLICA2), FAULT, ACT, "FAULT: fencing server1", (Fence("server1"),)),
    ("fault: server down", view(down("server1"), MASTER2), FAULT, INCOMPLETE, "nothing to fence", ()),
    ("stop: replica already fenced", view(REPLICA1, MASTER2), STOP, NOOP, "no action: STOP, server1 is read-only already", ()),
]


@pytest.mark.parametrize("name, v, event, outcome, reason, steps", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_decide_scenarios(name, v, event, outcome, reason, steps):
    plan = decide(v, event, cfg())
    assert plan.outcome == outcome, plan.render()
    assert reason in plan.reason, plan.render()
    assert plan.steps == steps, plan.render()


def test_force_overrides_sql_error_with_warning():
    v = view(replace(REPLICA1, replica=repl(io=CONN, sql=STOPPED, errno=1062, error="dup")), down("server2"))
    plan = decide(v, MASTER, cfg(), force=True)
    assert plan.outcome == ACT
    assert any("--force" in w for w in plan.warnings)
    assert CatchUp("server1", None, T, True) in plan.steps


def test_operator_promote_without_vip_next_to_a_live_peer_refuses_with_the_command_to_use():
    """keepalived keeps the VIP on the healthy master: opening this node would leave the writer
    without the VIP (measured before: every write through the VIP failed until an operator came)."""
    c = cfg(keepalived={"vip": "10.0.0.100"})
    for peer in (MASTER2, node("server2", ro=True)):
        plan = decide(view(REPLICA1, peer, holds_vip=False), MASTER, c, operator=True)
        assert plan.outcome == REFUSED and plan.steps == (), plan.render()
        assert "orch switchover" in plan.reason and "server2's host" in plan.reason


def test_operator_promote_without_vip_and_a_dead_peer_warns_but_acts():
    plan = decide(view(REPLICA1, down("server2"), holds_vip=False), MASTER, cfg(keepalived={"vip": "10.0.0.100"}), operator=True)
    assert plan.outcome == ACT and any("does not hold VIP" in w for w in plan.warnings)


def test_operator_demote_of_the_writable_vip_holder_refuses_and_changes_nothing():
    """Measured before: fenced, then re-opened 4 s later by its maintainer: a write outage for nothing."""
    master1 = node("server1", ro=False)
    replica2 = node("server2", ro=True, replica=repl("10.0.0.1"))
    plan = decide(view(master1, replica2, holds_vip=True), BACKUP, cfg(keepalived={"vip": "10.0.0.100"}), operator=True)
    assert plan.outcome == REFUSED and plan.steps == () and "orch switchover" in plan.reason, plan.render()
    # Both writable: demoting the VIP holder is still the operator's call (a split brain's end).
    plan = decide(view(master1, MASTER2, holds_vip=True), BACKUP, cfg(keepalived={"vip": "10.0.0.100"}), operator=True)
    assert plan.outcome != REFUSED or "orch switchover" not in plan.reason


def test_errant_on_candidate_is_a_warning_not_a_refusal():
    v = view(replace(REPLICA1, executed="0-1-12", binlog_pos="0-1-12"), node("server2", ro=False, executed="0-1-10"))
    plan = decide(v, MASTER, cfg())
    assert plan.outcome == ACT and any("errant GTIDs 0-1-12" in w for w in plan.warnings)


def test_atlas_backend_removed_on_master_and_unhealthy_backup():
    c = cfg(atlas=True)
    plan = decide(view(replace(REPLICA1, replica=repl(io=CONN)), down("server2")), MASTER, c)
    assert plan.steps[-1] == RemoveBackend("local", "10.0.0.1:3306", "server1 is the master now", after_rw_up=True)
    # A lagging replica's backend is removed on BACKUP, a healthy one's is kept.
    lagging = decide(view(replace(REPLICA1, replica=repl(lag=500)), MASTER2), BACKUP, c)
    assert lagging.steps == (RemoveBackend("local", "10.0.0.1:3306", "server1 is not a healthy replica"),)
    assert decide(view(REPLICA1, MASTER2), BACKUP, c).steps == ()


# --------------------------------------------------------------------------- interrupted plans


def apply(v: ClusterView, step) -> ClusterView:
    """A tiny model of what each step does to the servers (enough to replay plans)."""
    nodes: Dict[str, NodeState] = {v.me.name: v.me, v.peer.name: v.peer}
    n = nodes[step.node]
    if isinstance(step, Fence):
        n = replace(n, read_only=True)
    elif isinstance(step, SetWritable):
        n = replace(n, read_only=False)
    elif isinstance(step, StopReplica):
        n = replace(n, replica=replace(n.replica, io=STOPPED, sql=STOPPED))
    elif isinstance(step, StopSqlThread):
        n = replace(n, replica=replace(n.replica, sql=STOPPED))
    elif isinstance(step, ResetReplica):
        n = replace(n, replica=None)
    elif isinstance(step, (StartReplica, StartSqlThread)):
        r = n.replica
        peer = nodes[v.peer.name if n.name == v.me.name else v.me.name]
        io = RUN if peer.reachable and r.source_host == peer.host else CONN
        n = replace(n, replica=replace(r, io=io if isinstance(step, StartReplica) else r.io, sql=RUN))
    elif isinstance(step, ChangeSource):
        n = replace(n, replica=repl(step.host, io=STOPPED, sql=STOPPED))
    elif isinstance(step, CatchUp):
        pass  # the model's replicas are always applied
    nodes[n.name] = n
    return ClusterView(me=nodes[v.me.name], peer=nodes[v.peer.name], holds_vip=v.holds_vip)


def converge(v: ClusterView, event: str, limit: int = 5) -> Tuple[ClusterView, int]:
    for runs in range(limit):
        plan = decide(v, event, cfg())
        if plan.outcome in (NOOP, REFUSED, INCOMPLETE) and not plan.steps:
            return v, runs
        for step in plan.steps:
            v = apply(v, step)
    raise AssertionError(f"{event} did not converge from {v}")


def key(v: ClusterView):
    return [(n.name, n.read_only, None if n.replica is None else (n.replica.source_host, n.replica.io, n.replica.sql)) for n in (v.me, v.peer)]


INTERRUPTIBLE = [s for s in SCENARIOS if s[3] == ACT]


@pytest.mark.parametrize("name, v, event, outcome, reason, steps", INTERRUPTIBLE, ids=[s[0] for s in INTERRUPTIBLE])
def test_interrupted_plan_converges(name, v, event, outcome, reason, steps):
    plan = decide(v, event, cfg())
    final, _ = converge(v, event)
    for cut in range(len(plan.steps)):
        partial = v
        for step in plan.steps[:cut]:
            partial = apply(partial, step)
        resumed, _ = converge(partial, event)
        assert key(resumed) == key(final), f"cut after {cut} steps"
    # and a second run after success changes nothing
    assert decide(final, event, cfg()).steps == ()


def test_master_end_state_has_one_writer():
    final, _ = converge(view(REPLICA1, MASTER2), MASTER)
    assert not final.me.read_only and final.peer.read_only and final.me.replica is None


# --------------------------------------------------------------------------- MySQL flavor

MYSQL = "8.0.36"
UA = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UB = "4e11fa47-71ca-11e1-9e33-c80aa9429562"


def mnode(name, ro=True, sro=None, executed=f"{UA}:1-10", replica: Optional[ReplicaStatus] = None) -> NodeState:
    n = int(name[-1])
    return NodeState(
        name=name, host=f"10.0.0.{n}", port=3306, reachable=True, version=MYSQL, flavor="mysql", server_id=n,
        read_only=ro, super_read_only=ro if sro is None else sro, executed=executed, binlog_pos=executed,
        binlog_state=executed, replica=replica,
    )


M_REPLICA1 = mnode("server1", replica=repl("10.0.0.2", retrieved=f"{UA}:1-10"))

MYSQL_SCENARIOS = [
    ("mysql master: read_only=1 but super_read_only=0 is not fenced: fence it", view(M_REPLICA1, mnode("server2", ro=True, sro=False)), MASTER, ACT,
     "fencing server2 (still writable) first",
     (Fence("server2"), CatchUp("server1", "server2", T), Recheck("server1", "server2"), StopSqlThread("server1"), SetWritable("server1"),
      StopReplica("server1"), ResetReplica("server1"))),
    ("mysql master: fenced peer is not fenced again", view(M_REPLICA1, mnode("server2", ro=True, sro=True)), MASTER, ACT,
     "server2 is read-only, applying everything received first",
     (CatchUp("server1", "server2", T), Recheck("server1", "server2"), StopSqlThread("server1"), SetWritable("server1"),
      StopReplica("server1"), ResetReplica("server1"))),
    ("mysql master: both threads stopped, peer dead: START SQL_THREAD keeps the relay log, so the flavor has no switch statements",
     view(replace(M_REPLICA1, executed=f"{UA}:1-5", replica=repl(io=STOPPED, sql=STOPPED, retrieved=f"{UA}:1-10")), down("server2")), MASTER, ACT,
     "applying the relay log first",
     (PreserveRelayLog("server1"), StartSqlThread("server1"), CatchUp("server1", None, T), StopSqlThread("server1"), SetWritable("server1"),
      StopReplica("server1"), ResetReplica("server1"))),
    ("mysql master: diverged GTID sets refuse", view(mnode("server1", executed=f"{UA}:1-10,{UB}:1"), mnode("server2", executed=f"{UA}:1-12")), MASTER, REFUSED,
     f"have diverged: server1 has {UB}:1 that server2 lacks, and lacks {UA}:11-12", ()),
    ("mysql backup: old master with super_read_only off is fenced and rejoins", view(mnode("server1", ro=False, sro=False), mnode("server2", ro=False, executed=f"{UA}:1-12")), BACKUP, ACT,
     "replicating from it", (Fence("server1"), ChangeSource("server1", "server2", "10.0.0.2", 3306), StartReplica("server1"))),
    ("mysql backup: read_only without super_read_only is fenced again", view(replace(M_REPLICA1, super_read_only=False), mnode("server2", ro=False)), BACKUP, ACT,
     "fencing server1", (Fence("server1"),)),
    ("mysql backup: errant GTIDs refuse", view(mnode("server1", ro=False, sro=False, executed=f"{UA}:1-10,{UB}:1-2"), mnode("server2", ro=False, executed=f"{UA}:1-12")), BACKUP, REFUSED,
     f"errant GTIDs {UB}:1-2", (Fence("server1"),)),
]


@pytest.mark.parametrize("name, v, event, outcome, reason, steps", MYSQL_SCENARIOS, ids=[s[0] for s in MYSQL_SCENARIOS])
def test_decide_mysql_scenarios(name, v, event, outcome, reason, steps):
    plan = decide(v, event, cfg())
    assert plan.outcome == outcome, plan.render()
    assert reason in plan.reason, plan.render()
    assert plan.steps == steps, plan.render()


def test_backup_keeps_a_replica_that_keeps_up_under_load_in_atlas():
    """keepalived fires BACKUP at every start: a replica with a relay log never quite
    drained under load (but both threads running, no lag) keeps its read backend."""
    c = cfg(atlas=True)
    busy = replace(REPLICA1, replica=repl(retrieved="0-1-15"))
    assert decide(view(busy, MASTER2), BACKUP, c).steps == ()
    stopped = replace(REPLICA1, replica=repl(sql=STOPPED, retrieved="0-1-15"))
    assert RemoveBackend("local", "10.0.0.1:3306", "server1 is not a healthy replica") in decide(view(stopped, MASTER2), BACKUP, c).steps


def test_diverged_node_with_semi_sync_rolls_its_tail_back_then_follows():
    """The peer's extra transactions were acknowledged; this node's tail, if the Rewind step
    proves it, never was: roll it back (saved first), take the peer's history, then open."""
    from orchestrator.plan import Rewind, SemiSyncWait

    v = view(node("server1", ro=True, executed="0-1-11"), node("server2", ro=True, executed="0-2-40", binlog_state="0-1-10,0-2-40"))
    semi = cfg(failover={"catchup_timeout": 30, "semi_sync": True, "witness": "10.0.0.254", "block_seconds": 0})
    plan = decide(v, MASTER, semi)
    assert plan.outcome == ACT, plan.render()
    assert plan.steps[:4] == (Rewind("server1", "server2", "0-1-11", proven=True), ChangeSource("server1", "server2", "10.0.0.2", 3306),
                              StartReplica("server1"), CatchUp("server1", "server2", T)), plan.render()
    assert isinstance(plan.steps[-4], SemiSyncWait) and plan.steps[-3] == SetWritable("server1"), plan.render()
    assert "rolling back server1's 0-1-11 if proven never acknowledged" in " ".join(plan.warnings)
    # Without auto_rewind (or without semi-sync: nothing proves a tail unacknowledged) it refuses as before.
    off = cfg(failover={"catchup_timeout": 30, "semi_sync": True, "witness": "10.0.0.254", "auto_rewind": False})
    assert decide(v, MASTER, off).outcome == REFUSED
    assert decide(v, MASTER, cfg()).outcome == REFUSED


def test_a_node_that_cannot_reach_the_witness_does_not_promote_itself_over_a_silent_peer():
    """Peer silent and witness silent: this node may be the isolated one (the fast profile's
    0.2 s adverts make it MASTER before its witness check puts it in FAULT)."""
    base = view(REPLICA1, down("server2"))
    semi = cfg(failover={"catchup_timeout": 30, "semi_sync": True, "witness": "10.0.0.254"})
    plan = decide(replace(base, witness=False), MASTER, semi)
    assert plan.outcome == REFUSED and not plan.steps and "may be the isolated node" in plan.reason
    assert decide(replace(base, witness=True), MASTER, semi).outcome == ACT
    assert decide(base, MASTER, semi).outcome == ACT  # not asked (no witness configured, or the peer answered)
    assert decide(replace(base, witness=False), MASTER, semi, operator=True).outcome == ACT  # orch promote overrides
