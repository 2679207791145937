"""Pure: what a maintainer pass chooses (observed view + facts -> event and plan), and the
refusal throttle. No servers: the order (handed-over event, invariants, semi-sync, rejoin,
Atlas) is checked on views alone."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.invariants import HANDOVER, SEMISYNC, SPLIT_BRAIN, STALE
from orchestrator.pass_choice import (
    MAINTAIN, REFUSAL_RETRY_EVERY, REJOIN, PassFacts, Refusal, choose_action, refusal_key, still_refused,
)
from orchestrator.plan import ACT, NOOP, REFUSED, ChangeSource, Fence, HandOver, Plan, SemiSyncWait

from .test_decide import MASTER1, MASTER2, REPLICA1, REPLICA2, STOPPED, cfg, down, node, repl, view
from .test_invariants import _semi_cfg, _track_cfg, _waiting

NONE = PassFacts()
# A master whose replica is gone (server2 down) and whose semi-sync wait is on: the witness decides.
ALONE_WAITING = view(_waiting(MASTER1), down("server2"), holds_vip=True)
STALE_VIEW = view(_waiting(node("server1", ro=False, executed="0-1-10")),
                  node("server2", ro=True, executed="0-2-15", binlog_state="0-1-9,0-2-15"), holds_vip=True)
# A fenced ex-master left without replication next to the writable new master (an incomplete BACKUP).
UNFINISHED_REJOIN = view(node("server1", ro=True, executed="0-1-10"),
                         node("server2", ro=False, executed="0-2-3", binlog_state="0-1-10,0-2-3"), holds_vip=False)

# (id, view, config, facts, chosen event, outcome, reason fragment, first step type or None, noticed events)
SCENARIOS = [
    ("healthy: the Atlas plan, nothing to do", view(MASTER1, REPLICA2, holds_vip=True), cfg(), NONE,
     MAINTAIN, NOOP, "no change", None, ()),
    ("handed-over event first, decided on this view", view(REPLICA1, down("server2"), holds_vip=True), cfg(),
     PassFacts(handed_over="MASTER"), "MASTER", ACT, "handed-over MASTER event: promoting server1", None, ()),
    ("handed-over BACKUP even while the VIP holder's invariant would promote", view(REPLICA1, down("server2"), holds_vip=True),
     cfg(), PassFacts(handed_over="BACKUP"), "BACKUP", None, "handed-over BACKUP event", None, ()),
    ("invariant: the read-only VIP holder next to a dead peer is promoted", view(REPLICA1, down("server2"), holds_vip=True),
     cfg(), NONE, "MASTER", ACT, "holds VIP", None, ()),
    ("invariant: a refused promotion stays a refusal",
     view(node("server1", executed="0-1-11"), node("server2", executed="0-2-20", binlog_state="0-1-10,0-2-20"), holds_vip=True),
     cfg(), NONE, "MASTER", REFUSED, "diverged", None, ()),
    ("split brain, the holder alone answers for the VIP: fence the peer", view(MASTER1, MASTER2, holds_vip=True), cfg(),
     PassFacts(vip_elsewhere=()), SPLIT_BRAIN, ACT, "alone answers for VIP", Fence, ()),
    ("split brain, no ARP check: noticed (alert), then the Atlas plan", view(MASTER1, MASTER2, holds_vip=True), cfg(), NONE,
     MAINTAIN, NOOP, "no change", None, (SPLIT_BRAIN,)),
    ("hand-over: the VIP has left after track 1", view(REPLICA1, MASTER2, holds_vip=False), _track_cfg(), PassFacts(track="1"),
     HANDOVER, ACT, "the VIP has left server1", HandOver, ()),
    ("hand-over backed off right after a hand-back: noticed, not run",
     view(node("server1", executed="0-1-10"), replace(MASTER2, executed="0-2-15", binlog_pos="0-2-15", binlog_state="0-1-10,0-2-15"),
          holds_vip=True), _track_cfg(), PassFacts(track="0", handback_age=5.0), MAINTAIN, NOOP, "no change", None, (HANDOVER,)),
    ("a stale writer fences itself before anything else (no witness ping)", STALE_VIEW, _semi_cfg(), PassFacts(track="0"),
     STALE, ACT, "", Fence, ()),
    ("semi-sync: the witness answers, the wait goes off", ALONE_WAITING, _semi_cfg(), PassFacts(witness=True, witness_asked=True),
     SEMISYNC, ACT, "witness 10.0.0.254 answers", SemiSyncWait, ()),
    ("semi-sync: no witness, the writers keep waiting: noticed", ALONE_WAITING, _semi_cfg(),
     PassFacts(witness=False, witness_asked=True), MAINTAIN, NOOP, "no change", None, (SEMISYNC,)),
    ("rejoin: an ex-master left fenced without replication", UNFINISHED_REJOIN, cfg(), NONE,
     REJOIN, ACT, "completing an unfinished rejoin", ChangeSource, ()),
]


@pytest.mark.parametrize("name, v, c, facts, event, outcome, reason, first, noticed", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_the_pass_chooses(name, v, c, facts, event, outcome, reason, first, noticed):
    choice = choose_action(v, c, facts)
    plan = choice.plan
    assert choice.event == event, f"{name}: {choice.event}: {plan.render()}"
    if outcome is not None:
        assert plan.outcome == outcome, plan.render()
    assert reason in plan.reason, plan.reason
    if first is not None:
        assert plan.steps and isinstance(plan.steps[0], first), plan.render()
    assert tuple(e for e, _ in choice.noticed) == noticed
    assert all(p.outcome == NOOP for _, p in choice.noticed)
    assert not choice.asks_witness
    if choice.action is not None:
        assert choice.said == plan.reason and choice.acting
    if facts.handed_over:
        assert choice.atlas is None  # a handed-over event's pass runs that event only
    else:
        assert choice.atlas is not None
        assert choice.recheck_soon is (choice.action is not None)  # no Atlas here: only an action re-checks soon


def test_the_witness_is_asked_only_when_the_semi_sync_rule_is_reached_and_needs_it():
    first = choose_action(ALONE_WAITING, _semi_cfg(), NONE)
    assert first.asks_witness, "a master waiting for a replica that is gone: is it isolated?"
    again = choose_action(ALONE_WAITING, _semi_cfg(), PassFacts(witness=True, witness_asked=True))
    assert not again.asks_witness and again.event == SEMISYNC
    # An invariant that acts first: no ping (up to a second) before the stale writer's fence.
    assert not choose_action(STALE_VIEW, _semi_cfg(), PassFacts(track="0")).asks_witness
    assert not choose_action(view(MASTER1, REPLICA2, holds_vip=True), _semi_cfg(), NONE).asks_witness


def test_an_invariant_beats_the_rejoin_and_a_rejoin_beats_atlas():
    c = cfg(atlas=True)
    choice = choose_action(UNFINISHED_REJOIN, c, NONE)
    assert choice.event == REJOIN and choice.atlas is not None, "the Atlas plan is still made (its warnings are said)"
    assert choice.said.startswith("completing an unfinished rejoin")
    # The VIP has just left after a hand-over: taking part in VRRP again comes first, the rejoin next pass.
    handed = choose_action(UNFINISHED_REJOIN, _track_cfg(), PassFacts(track="1"))
    assert handed.event == HANDOVER and isinstance(handed.plan.steps[0], HandOver), handed.plan.render()
    # The same node holding the VIP: no rejoin (the invariant notices it is read-only next to a writer).
    held = choose_action(replace(UNFINISHED_REJOIN, holds_vip=True), c, NONE)
    assert held.event == MAINTAIN and [e for e, _ in held.noticed] == ["MASTER"], held.plan.render()
    assert "not taking writes away" in held.noticed[0][1].reason


def test_a_healthy_pass_says_the_atlas_plan_and_rechecks_at_its_pace():
    choice = choose_action(view(MASTER1, REPLICA2, holds_vip=True), cfg(), NONE)
    assert choice.action is None and choice.said == choice.atlas.reason and not choice.acting and not choice.recheck_soon


def test_a_rejoin_that_cannot_run_is_said_and_atlas_runs():
    """A rejoin refused (or with nothing to do) is the pass's sentence; the Atlas plan is what runs."""
    errant = replace(UNFINISHED_REJOIN, me=node("server1", ro=True, executed="0-1-11"))
    choice = choose_action(errant, cfg(), NONE)
    assert choice.action is None and choice.event == MAINTAIN
    assert choice.said.startswith("completing an unfinished rejoin") and choice.said != choice.atlas.reason


# --------------------------------------------------------------------------- the refusal throttle

CAUGHT_UP = view(node("server2", ro=True, executed="0-1-10", replica=repl("10.0.0.1", io=STOPPED, retrieved="0-1-10")), down("server1"))
BEHIND = view(node("server2", ro=True, executed="0-1-8", replica=repl("10.0.0.1", io=STOPPED, retrieved="0-1-10")), down("server1"))


@pytest.mark.parametrize("last, age, v, quiet", [
    (None, 0.0, BEHIND, False),
    (Refusal(0.0, "anti-flapping block"), 10.0, CAUGHT_UP, True),
    (Refusal(0.0, "anti-flapping block"), REFUSAL_RETRY_EVERY, CAUGHT_UP, False),
    (Refusal(0.0, "catch-up timed out", catch_up=True), 10.0, BEHIND, True),
    (Refusal(0.0, "catch-up timed out", catch_up=True), 10.0, CAUGHT_UP, False),  # retried as soon as it is applied
])
def test_a_refusal_is_said_and_retried_once_a_minute_or_once_caught_up(last, age, v, quiet):
    assert still_refused(last, age, v, cfg()) is quiet


def test_refusal_key_masks_the_numbers():
    a = Plan("refusing: promoted 33s ago (run 20261126T174756-ad66dc)", outcome=REFUSED)
    b = Plan("refusing: promoted 34s ago (run 20261126T174756-ad66dc)", outcome=REFUSED)
    assert refusal_key("MASTER", a) == refusal_key("MASTER", b) != refusal_key("BACKUP", a)
