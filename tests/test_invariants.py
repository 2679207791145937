"""Pure: which repairs the maintainer runs for the invariants (VIP holder writes, nobody else)."""

from dataclasses import replace

import pytest

from orchestrator.invariants import HANDOVER, SPLIT_BRAIN, decide_invariant
from orchestrator.plan import REFUSED, ChangeSource, Fence, HandOver, SetWritable

from .test_decide import MASTER1, MASTER2, REPLICA1, REPLICA2, STOPPED, cfg, down, node, repl, view


@pytest.mark.parametrize("name, v, event, first", [
    ("VIP holder read-only, peer dead: promote", view(REPLICA1, down("server2"), holds_vip=True), "MASTER", None),
    ("VIP holder read-only, peer read-only and ahead: follow it, then promote",
     view(node("server1", executed="0-1-10"), node("server2", executed="0-2-20", binlog_state="0-1-10,0-2-20"), holds_vip=True), "MASTER", ChangeSource),
    ("VIP holder writable but still replicating: clean up", view(replace(MASTER1, replica=repl()), REPLICA2, holds_vip=True), "MASTER", None),
    ("writable without the VIP next to a writable peer: fence itself", view(MASTER1, MASTER2, holds_vip=False), SPLIT_BRAIN, Fence),
])
def test_repairs(name, v, event, first):
    got = decide_invariant(v, cfg())
    assert got is not None, name
    assert got[0] == event, got
    if first is not None:
        assert isinstance(got[1].steps[0], first), got[1].render()
    if event == "MASTER":
        assert any(isinstance(s, SetWritable) for s in got[1].steps) or not v.me.read_only, got[1].render()


@pytest.mark.parametrize("name, v", [
    ("no VIP check: nothing can be told", view(REPLICA1, down("server2"), holds_vip=None)),
    ("healthy: VIP holder is the master", view(MASTER1, REPLICA2, holds_vip=True)),
    ("healthy: the replica does not hold the VIP", view(REPLICA1, MASTER2, holds_vip=False)),
    ("writable without the VIP, peer read-only: the VIP holder's repair fences this one", view(MASTER1, REPLICA2, holds_vip=False)),
    ("own server down", view(down("server1"), MASTER2, holds_vip=True)),
])
def test_no_repair(name, v):
    assert decide_invariant(v, cfg()) is None


def test_refusals_stay_refusals():
    v = view(node("server1", executed="0-1-11"), node("server2", executed="0-2-20", binlog_state="0-1-10,0-2-20"), holds_vip=True)
    event, plan = decide_invariant(v, cfg())
    assert event == "MASTER" and plan.outcome == REFUSED and "diverged" in plan.reason


def test_vip_holder_next_to_a_writable_peer_takes_no_writes_away():
    """A VIP left behind by a killed keepalived, on the node the new master fenced."""
    event, plan = decide_invariant(view(REPLICA1, MASTER2, holds_vip=True), cfg())
    assert (event, plan.outcome, plan.steps) == ("MASTER", "noop", ()) and "not taking writes away" in plan.reason


def test_a_refusal_next_to_a_writable_peer_is_still_said_every_pass():
    sql_error = replace(REPLICA1, replica=repl(sql=STOPPED, errno=1062, error="Duplicate entry"))
    event, plan = decide_invariant(view(sql_error, MASTER2, holds_vip=True), cfg())
    assert (event, plan.outcome, plan.steps) == ("MASTER", REFUSED, ()) and "error 1062" in plan.reason


def test_split_brain_vip_holder_fences_the_peer_only_when_it_alone_answers_for_the_vip():
    event, plan = decide_invariant(view(MASTER1, MASTER2, holds_vip=True), cfg(), vip_elsewhere=())
    assert event == SPLIT_BRAIN and plan.steps and plan.steps[0] == Fence("server2"), plan.render()
    assert not any(isinstance(s, Fence) and s.node == "server1" for s in plan.steps)


@pytest.mark.parametrize("elsewhere, why", [(None, "no ARP check"), (("0a:00:00:00:00:02",), "answers ARP for it too")])
def test_split_brain_without_a_known_vip_holder_only_alerts(elsewhere, why):
    """Two hosts that both hold the VIP must not fence each other: alert, change nothing."""
    event, plan = decide_invariant(view(MASTER1, MASTER2, holds_vip=True), cfg(), vip_elsewhere=elsewhere)
    assert event == SPLIT_BRAIN and plan.outcome == "noop" and not plan.steps
    assert "SPLIT BRAIN" in plan.reason and why in plan.reason


def _track_cfg():
    return cfg(keepalived={"vip": "10.0.0.100", "track_file": "/var/lib/orch/keepalived.track"})


def test_read_only_vip_holder_hands_the_vip_to_a_writable_peer_with_more_history():
    """The heal case: the VIP came back to a node that lacks what the writable peer acknowledged."""
    from orchestrator.invariants import HANDOVER
    from orchestrator.plan import HandOver

    me = node("server1", executed="0-1-10")
    peer = replace(MASTER2, executed="0-2-15", binlog_pos="0-2-15", binlog_state="0-1-10,0-2-15")
    event, plan = decide_invariant(view(me, peer, holds_vip=True), _track_cfg(), track="0")
    assert event == HANDOVER and plan.steps == (HandOver("/var/lib/orch/keepalived.track", True, plan.steps[0].why),), plan.render()
    # Written already: wait for keepalived, change nothing.
    event, plan = decide_invariant(view(me, peer, holds_vip=True), _track_cfg(), track="1")
    assert event == HANDOVER and plan.outcome == "noop" and not plan.steps
    # Once the VIP has left: take part again.
    event, plan = decide_invariant(view(me, peer, holds_vip=False), _track_cfg(), track="1")
    assert event == HANDOVER and plan.steps == (HandOver("/var/lib/orch/keepalived.track", False, plan.steps[0].why),)
    # Without a track file: the old behaviour (wait for keepalived's MASTER event or an operator).
    event, plan = decide_invariant(view(me, peer, holds_vip=True), cfg(keepalived={"vip": "10.0.0.100"}))
    assert plan.outcome == "noop" and "not taking writes away" in plan.reason


def test_hand_over_to_a_writable_peer_that_is_not_behind():
    """The VIP follows the newest writable history: a read-only holder next to a writable peer
    that has everything the holder has hands the VIP over (measured before: orch promote on the
    replica's host left the writer without the VIP, and nothing converged)."""
    event, plan = decide_invariant(view(REPLICA1, MASTER2, holds_vip=True), _track_cfg(), track="0")
    assert event == HANDOVER and plan.steps == (HandOver("/var/lib/orch/keepalived.track", True, plan.steps[0].why),), plan.render()
    assert "has everything server1 has" in plan.reason


def test_no_hand_over_to_a_writable_peer_that_is_behind():
    """The holder has transactions the writable peer lacks (and lacks none of the peer's): the
    peer is behind; handing it the VIP would move writes to the older history."""
    me = node("server1", executed="0-1-12")
    peer = node("server2", ro=False, executed="0-1-10")
    event, plan = decide_invariant(view(me, peer, holds_vip=True), _track_cfg(), track="0")
    assert not any(isinstance(s, HandOver) for s in plan.steps), plan.render()


def test_no_second_hand_over_right_after_the_vip_came_back():
    """A peer whose keepalived does not take the VIP: no bouncing it every few seconds."""
    me = node("server1", executed="0-1-10")
    peer = replace(MASTER2, executed="0-2-15", binlog_pos="0-2-15", binlog_state="0-1-10,0-2-15")
    event, plan = decide_invariant(view(me, peer, holds_vip=True), _track_cfg(), track="0", handback_age=5.0)
    assert plan.outcome == "noop" and not plan.steps and "handing over again" in plan.reason
    event, plan = decide_invariant(view(me, peer, holds_vip=True), _track_cfg(), track="0", handback_age=120.0)
    assert plan.steps and plan.steps[0].give_up


def test_the_maintainer_repeats_a_refusal_without_re_running_it():
    """A refused plan (an anti-flapping block, an unprovable rewind) is said every pass but run
    and journaled again only after a minute: the same refusal is recognised through its changing numbers."""
    from orchestrator.pass_choice import refusal_key
    from orchestrator.plan import Plan

    a = Plan("refusing to promote server2: server1 was promoted automatically 33s ago (run 20261126T174756-ad66dc)", outcome=REFUSED)
    b = Plan("refusing to promote server2: server1 was promoted automatically 34s ago (run 20261126T174756-ad66dc)", outcome=REFUSED)
    c = Plan("refusing to promote server2: server2's SQL thread stopped on error 1062", outcome=REFUSED)
    assert refusal_key("MASTER", a) == refusal_key("MASTER", b) != refusal_key("MASTER", c)


# --------------------------------------------------------------------------- a stale writer


def _semi_cfg():
    return cfg(failover={"catchup_timeout": 30, "block_seconds": 0, "semi_sync": True, "witness": "10.0.0.254"},
               keepalived={"vip": "10.0.0.100", "track_file": "/var/lib/orch/keepalived.track"})


def _waiting(n):
    """A master whose semi-sync wait is on, without fallback, nobody acknowledging."""
    from orchestrator.model import SemiSync
    from orchestrator.semisync import NO_FALLBACK_MS

    return replace(n, semisync=SemiSync(enabled=True, timeout_ms=NO_FALLBACK_MS, wait_no_replica=True, wait_point="AFTER_SYNC"))


def test_a_fenced_newer_peer_still_pointed_here_is_newer_history_not_an_errant_replica():
    """A woken master took the VIP back and the promoted peer's BACKUP fenced it, pointed at
    this node, its IO thread stopped (its tail is errant for this node): read-only and pointed
    here like a replica stopped for orch demote --rewind. Only a rewind's mark (the next test)
    tells the two apart; without it the peer's extra transactions may be acknowledged writes,
    so it counts as newer history."""
    from orchestrator.invariants import stale_writer

    me = _waiting(node("server1", ro=False, executed="0-1-10"))
    fenced_newer = node("server2", ro=True, executed="0-1-10,0-2-15", binlog_pos="0-2-15",
                        replica=repl("10.0.0.1", io=STOPPED, sql=STOPPED))
    assert stale_writer(view(me, fenced_newer, holds_vip=True), _semi_cfg()) == "0-2-15"


def test_a_replica_being_rewound_by_orch_is_not_newer_history():
    """orch demote --rewind holds the replica's rewind mark from before its replication stops
    (observed as ``rewinding``): its errant transactions are being rolled back, so a quiet
    master keeps its role; a writable peer never counts as being rewound."""
    from orchestrator.invariants import stale_writer

    me = _waiting(node("server1", ro=False, executed="0-1-10"))
    rewound = replace(node("server2", ro=True, executed="0-1-10,0-2-15", binlog_pos="0-2-15",
                           replica=repl("10.0.0.1", io=STOPPED, sql=STOPPED)), rewinding=True)
    assert stale_writer(view(me, rewound, holds_vip=True), _semi_cfg()) == ""
    assert decide_invariant(view(me, rewound, holds_vip=True), _semi_cfg(), track="0") is None
    writable = replace(rewound, read_only=False)
    assert stale_writer(view(me, writable, holds_vip=True), _semi_cfg()) == "0-2-15"


def test_woken_master_behind_a_promoted_peer_is_stale_fences_itself_and_hands_the_vip_over():
    from orchestrator.invariants import STALE
    from orchestrator.plan import Rewind, StartReplica

    # server1 woke with 0-1-10 (never acknowledged: its wait is on), server2 took 0-2-10..15
    me = _waiting(node("server1", ro=False, executed="0-1-10"))
    peer = node("server2", ro=True, executed="0-2-15", binlog_state="0-1-9,0-2-15")
    event, plan = decide_invariant(view(me, peer, holds_vip=True), _semi_cfg(), track="0")
    assert event == STALE and plan.outcome == "act", plan.render()
    kinds = [type(s).__name__ for s in plan.steps]
    assert kinds[0] == "Fence" and kinds.index("ChangeSource") < kinds.index("HandOver") < kinds.index("Rewind"), kinds
    assert kinds[1] == "MarkRewind", kinds  # marked before its replication stops: the peer keeps its role
    assert isinstance(plan.steps[-1], StartReplica)
    assert [s for s in plan.steps if isinstance(s, Rewind)][0].proven


@pytest.mark.parametrize("why, me, peer", [
    ("the peer replicates from it (a replica's own errant writes are not newer history)",
     _waiting(node("server1", ro=False, executed="0-1-10")),
     node("server2", ro=True, executed="0-1-10,0-2-3", binlog_pos="0-2-3", replica=repl("10.0.0.1"))),
    ("its own tail may have been acknowledged (wait off): a fork for the split-brain watch",
     node("server1", ro=False, executed="0-1-10"),
     node("server2", ro=True, executed="0-2-15", binlog_pos="0-2-15")),
    ("it lacks nothing", _waiting(node("server1", ro=False, executed="0-1-10")), node("server2", ro=True, executed="0-1-10")),
])
def test_not_stale(why, me, peer):
    from orchestrator.invariants import stale_writer

    assert stale_writer(view(me, peer, holds_vip=True), _semi_cfg()) == "", why


def test_the_wait_stays_on_while_the_peer_holds_newer_history():
    from orchestrator.invariants import decide_semisync

    me = _waiting(node("server1", ro=False, executed="0-1-10"))
    for peer, what in ((node("server2", ro=False, executed="0-1-10"), "writable"),
                       (node("server2", ro=True, executed="0-2-15", binlog_pos="0-2-15"), "has 0-2-15")):
        plan = decide_semisync(view(me, peer, holds_vip=True), _semi_cfg(), witness=True)
        assert plan is not None and plan.outcome == "noop" and what in plan.reason, plan


def test_caught_up():
    from orchestrator.invariants import caught_up

    behind = node("server2", ro=True, executed="0-1-8", replica=repl("10.0.0.1", io=STOPPED, retrieved="0-1-10"))
    assert not caught_up(view(behind, down("server1")), cfg())
    applied = replace(behind, executed="0-1-10", binlog_pos="0-1-10")
    assert caught_up(view(applied, down("server1")), cfg())
    assert not caught_up(view(applied, node("server1", ro=True, executed="0-1-11")), cfg())


def test_the_vip_holder_fences_a_stale_writable_peer_but_never_a_peer_with_newer_acknowledged_history():
    """Both writable, this host alone answers for the VIP. A peer whose extra transactions waited
    for a semi-sync acknowledgement (a woken stale master) is fenced; a peer whose extra
    transactions may have been acknowledged (its wait off) is not: an alert, never a fence."""
    # server1 (this host) was promoted and wrote 0-1-11..15 after server2's 0-2-10; server2
    # woke up writable with 0-2-11, which server1 lacks.
    me = node("server1", ro=False, executed="0-1-15", binlog_state="0-2-10,0-1-15")
    acked_peer = node("server2", ro=False, executed="0-2-11")
    stale_peer = _waiting(acked_peer)
    event, plan = decide_invariant(view(me, stale_peer, holds_vip=True), _semi_cfg(), vip_elsewhere=())
    assert event == SPLIT_BRAIN and Fence("server2") in plan.steps, plan.render()
    event, plan = decide_invariant(view(me, acked_peer, holds_vip=True), _semi_cfg(), vip_elsewhere=())
    assert event == SPLIT_BRAIN and plan.outcome == "noop" and "newer history" in plan.reason, plan.render()


def test_stale_even_when_its_own_unacknowledged_tail_has_higher_sequence_numbers():
    """MariaDB: the woken master committed 20 transactions that waited (0-1-11..30), the promoted
    peer only 5 (0-2-11..15). By sequence alone nothing is missing; by the peer's own GTIDs the
    peer has what this node lacks: stale, and its wait stays on."""
    from orchestrator.invariants import decide_semisync, stale_writer

    me = _waiting(node("server1", ro=False, executed="0-1-30"))
    peer = node("server2", ro=True, executed="0-2-15", binlog_state="0-1-10,0-2-15")
    v = view(me, peer, holds_vip=True)
    assert stale_writer(v, _semi_cfg()) == "0-2-15"
    plan = decide_semisync(v, _semi_cfg(), witness=True)
    assert plan is not None and plan.outcome == "noop", plan


def test_a_newer_writer_without_the_vip_does_not_fence_itself_next_to_a_stale_holder():
    """Seen in a whole-host-freeze drill: the woken master took the VIP back (higher priority)
    and the promoted peer, not holding the VIP, fenced itself as the split-brain rule said,
    although it held the newer, acknowledged history. Now it stays open and leaves the stale
    holder to its own maintainer (fence, hand the VIP over); fencing the holder from here would
    leave the VIP on a fenced node that no longer counts as stale (tried: it never converged)."""
    me = node("server1", ro=False, executed="0-1-15", binlog_state="0-2-10,0-1-15")  # promoted, wrote 11..15
    stale_holder = _waiting(node("server2", ro=False, executed="0-2-11"))  # woke with 0-2-11, waiting
    event, plan = decide_invariant(view(me, stale_holder, holds_vip=False), _semi_cfg())
    assert event == SPLIT_BRAIN and plan.outcome == "noop" and not plan.steps, plan.render()
    assert "stale" in plan.reason
    # A holder whose tail may have been acknowledged (wait off): the old rule, this node fences itself.
    event, plan = decide_invariant(view(me, node("server2", ro=False, executed="0-2-11"), holds_vip=False), _semi_cfg())
    assert event == SPLIT_BRAIN and Fence("server1") in plan.steps, plan.render()


def test_a_fenced_node_keeps_its_wait_on_until_its_tail_is_settled():
    """A stale writer fenced and pointed at its peer, its tail not rolled back yet: switching
    its wait off now would make the rewind's proof fail (measured: a tail that landed after the
    STALE decision could not be rolled back)."""
    from orchestrator.invariants import decide_semisync

    fenced = _waiting(node("server1", ro=True, executed="0-1-11", replica=repl("10.0.0.2", io=STOPPED, sql=STOPPED)))
    peer = node("server2", ro=False, executed="0-2-15", binlog_state="0-1-10,0-2-15")
    assert decide_semisync(view(fenced, peer, holds_vip=False), _semi_cfg()) is None
    settled = replace(fenced, executed="0-2-15", binlog_pos="0-2-15", binlog_state="0-1-10,0-2-15")
    plan = decide_semisync(view(settled, peer, holds_vip=False), _semi_cfg())
    assert plan is not None and plan.outcome == "act", "no tail left: the wait goes off as before"


def test_a_stale_writer_with_no_tail_yet_leaves_replication_to_the_rejoin():
    from orchestrator.invariants import decide_stale
    from orchestrator.plan import StartReplica

    me = _waiting(node("server1", ro=False, executed="0-1-10"))
    peer = node("server2", ro=True, executed="0-2-15", binlog_state="0-1-10,0-2-15")
    plan = decide_stale(view(me, peer, holds_vip=True), _semi_cfg())
    assert plan is not None and [type(s).__name__ for s in plan.steps] == ["Fence", "ChangeSource", "HandOver"], plan.render()
    assert not any(isinstance(s, StartReplica) for s in plan.steps) and "rejoins" in plan.reason
