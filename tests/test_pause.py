"""Maintenance mode (orch pause / orch resume), pure: what a pause withholds from keepalived's
events and the maintainer's passes, what it still lets through (this node's fences, an
operator's command, the switchover's planned MASTER), the pause and resume plans, and --for.
The real pair: tests/test_pause_mariadb.py; the namespace lab: tests/test_drills.py."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from orchestrator import pauses
from orchestrator.alerts import PAUSE, RESUME, WITHHELD, classify
from orchestrator.cli import main
from orchestrator.decide import BACKUP, FAULT, MASTER, STOP, decide
from orchestrator.errors import EXIT_OK, EXIT_USAGE
from orchestrator.invariants import STALE
from orchestrator.model import PauseRecord, PromotionRecord
from orchestrator.pass_choice import PassFacts, choose_action
from orchestrator.pause import decide_pause, decide_resume, parse_duration, paused_plan
from orchestrator.plan import (
    ACT, EXIT_CODES, INCOMPLETE, NOOP, PAUSED, REFUSED, Fence, PauseLocally, Plan, RecordPause, SetWritable,
)

from .test_decide import MASTER1, MASTER2, REPLICA1, REPLICA2, cfg, down, node, view
from .test_invariants import _semi_cfg, _waiting
from .test_pass_choice import STALE_VIEW, UNFINISHED_REJOIN


def paused_rec(remaining=None, kind="pause", age=30.0, seen_on="server2") -> PauseRecord:
    return PauseRecord(kind=kind, run_id="20261126T170000-abcdef", node="server2", by="alice", reason="kernel upgrade",
                       at=1_000_000.0, age=age, remaining=remaining, seen_on=seen_on)


def paused(v, **kw):
    return replace(v, pause=paused_rec(**kw))


# server1 holds the VIP, read-only, replicating from server2, which is down: MASTER would promote it.
VIP_HOLDER_ALONE = view(REPLICA1, down("server2"), holds_vip=True)


def test_paused_master_does_not_promote_and_says_what_it_would_have_done():
    unpaused = decide(VIP_HOLDER_ALONE, MASTER, cfg())
    assert unpaused.outcome == ACT and any(isinstance(s, SetWritable) for s in unpaused.steps)
    plan = decide(paused(VIP_HOLDER_ALONE), MASTER, cfg())
    assert plan.outcome == PAUSED and plan.steps == (), plan.render()
    assert plan.reason.startswith("paused (paused by alice on server2 30s ago (until orch resume): kernel upgrade)")
    assert "would have: promoting server1" in plan.reason
    assert plan.withheld == tuple(s.describe() for s in unpaused.steps)  # journaled: what would have been done
    assert "paused, not done: make server1 writable" in plan.render() or "paused, not done:" in plan.render()
    assert EXIT_CODES[PAUSED] == EXIT_OK


def test_paused_backup_does_not_rejoin_but_fences_this_node():
    v = view(MASTER1, MASTER2, holds_vip=False)  # this node writable next to a writable peer: BACKUP fences and rejoins
    unpaused = decide(v, BACKUP, cfg())
    assert [type(s).__name__ for s in unpaused.steps][:1] == ["Fence"] and len(unpaused.steps) > 1
    plan = decide(paused(v), BACKUP, cfg())
    assert plan.steps == (Fence("server1"),) and plan.outcome == ACT, plan.render()
    assert "fencing server1 only" in plan.reason and plan.withheld and "point server1 at server2" in " ".join(plan.withheld)


def test_paused_backup_of_a_healthy_replica_withholds_nothing():
    plan = decide(paused(view(REPLICA1, MASTER2, holds_vip=False)), BACKUP, cfg())
    assert plan.outcome == NOOP and not plan.reason.startswith("paused"), plan.render()


@pytest.mark.parametrize("event", [FAULT, STOP])
def test_paused_fault_still_fences_the_master_but_leaves_atlas_alone(event):
    """The safety decision: a FAULT fences even in maintenance mode (a fence never forks data nor
    makes a second writer; an unfenced failing node is one the resumed VIP holder may open next to)."""
    v = view(MASTER1, REPLICA2, holds_vip=True)
    unpaused = decide(v, event, cfg(atlas=True))
    assert Fence("server1") in unpaused.steps and len(unpaused.steps) > 1  # Atlas offline and the own backend
    plan = decide(paused(v), event, cfg(atlas=True))
    assert plan.steps == (Fence("server1"),) and plan.outcome == ACT, plan.render()
    assert plan.withheld and all("atlas" in w.lower() or "backend" in w.lower() for w in plan.withheld), plan.withheld


def test_paused_fault_of_an_unreachable_server_keeps_its_outcome_and_withholds_atlas():
    v = view(down("server1"), MASTER2, holds_vip=False)
    plan = decide(paused(v), FAULT, cfg(atlas=True))
    assert plan.outcome == INCOMPLETE and plan.steps == () and plan.withheld, plan.render()


def test_a_refusal_with_nothing_to_withhold_stays_as_it_was():
    v = view(node("server1", executed="0-1-11"), node("server2", executed="0-2-20", binlog_state="0-1-10,0-2-20"), holds_vip=True)
    assert decide(paused(v), MASTER, cfg()) == decide(v, MASTER, cfg())


def test_operator_commands_run_while_paused_with_a_warning():
    unpaused = decide(VIP_HOLDER_ALONE, MASTER, cfg(), operator=True)
    plan = decide(paused(VIP_HOLDER_ALONE), MASTER, cfg(), operator=True)
    assert plan.steps == unpaused.steps and plan.outcome == ACT
    assert any("maintenance mode" in w and "your word" in w for w in plan.warnings)
    demote = decide(paused(view(MASTER1, MASTER2, holds_vip=False)), BACKUP, cfg(), operator=True)
    assert len(demote.steps) > 1 and demote.outcome == ACT


def test_the_planned_master_of_a_switchover_runs_while_paused():
    row = PromotionRecord(run_id="r1", kind="switchover", node="server1", at=1.0, age=3.0, seen_on="server2")
    v = replace(paused(VIP_HOLDER_ALONE), last_promotion=row)
    assert any(isinstance(s, SetWritable) for s in decide(v, MASTER, cfg()).steps)
    old = replace(v, last_promotion=replace(row, age=3600.0))  # a switchover long ago lets nothing through
    assert decide(old, MASTER, cfg()).outcome == PAUSED


def test_an_expired_pause_or_a_resume_withholds_nothing():
    for rec in (paused_rec(remaining=-1.0), paused_rec(kind="resume")):
        v = replace(VIP_HOLDER_ALONE, pause=rec)
        assert v.paused is None and decide(v, MASTER, cfg()).outcome == ACT
    assert paused(VIP_HOLDER_ALONE, remaining=60.0).paused is not None


def test_paused_plan_is_idempotent():
    v = paused(view(MASTER1, MASTER2, holds_vip=False))
    once = decide(v, BACKUP, cfg())
    assert paused_plan(v, once, "server1") == once
    pausedone = decide(paused(VIP_HOLDER_ALONE), MASTER, cfg())
    assert paused_plan(paused(VIP_HOLDER_ALONE), pausedone, "server1") == pausedone


# The maintainer: each rule's plan, paused. (id, view, config, facts, event run or None, steps kept)
PASSES = [
    ("the VIP holder's promotion is withheld", VIP_HOLDER_ALONE, cfg(), PassFacts(), None, ()),
    ("an unfinished rejoin is withheld", UNFINISHED_REJOIN, cfg(), PassFacts(), None, ()),
    ("a stale writer still fences itself; the rest is withheld", STALE_VIEW, _semi_cfg(), PassFacts(track="0"), STALE,
     (Fence("server1"),)),
    ("a split brain: the VIP holder does not fence its peer", view(MASTER1, MASTER2, holds_vip=True), cfg(),
     PassFacts(vip_elsewhere=()), None, ()),
    ("the semi-sync switch is withheld", view(_waiting(MASTER1), down("server2"), holds_vip=True), _semi_cfg(),
     PassFacts(witness=True, witness_asked=True), None, ()),
]


@pytest.mark.parametrize("case, v, config, facts, event, kept", PASSES, ids=[p[0] for p in PASSES])
def test_maintainer_pass_while_paused(case, v, config, facts, event, kept):
    unpaused = choose_action(v, config, facts)
    assert unpaused.action is not None and unpaused.action[1].steps, f"{case}: acts when not paused"
    choice = choose_action(paused(v), config, facts)
    if event is None:
        assert choice.action is None and not choice.acting, case
        assert "paused (paused by alice" in choice.said and "would have:" in choice.said, choice.said
    else:
        assert choice.action is not None and choice.action[0] == event and choice.action[1].steps == kept, case
    assert choice.atlas is not None and choice.atlas.steps == ()
    assert not choice.recheck_soon or choice.action is not None


def test_maintainer_leaves_atlas_backends_alone_while_paused():
    from orchestrator.model import AtlasState, Backend

    c = cfg(atlas=True)
    listed = (Backend(1, c.nodes[0].atlas_address, "up", "rw"), Backend(2, c.nodes[1].atlas_address, "up", "ro"))
    # server2, listed as a read-only backend, is not replicating: Atlas would drop it.
    v = replace(view(MASTER1, node("server2", ro=True), holds_vip=True), atlas=(AtlasState("local", True, backends=listed),))
    unpaused = choose_action(v, c, PassFacts())
    assert unpaused.atlas is not None and unpaused.atlas.steps, unpaused
    choice = choose_action(paused(v), c, PassFacts())
    assert choice.action is None and choice.atlas is not None and choice.atlas.steps == () and choice.atlas.outcome == PAUSED
    assert choice.atlas.withheld and not choice.acting


def test_handed_over_master_is_decided_paused():
    choice = choose_action(paused(VIP_HOLDER_ALONE), cfg(), PassFacts(handed_over=MASTER))
    assert choice.event == MASTER and choice.plan.outcome == PAUSED  # journaled by the run, like the notify's


def test_pause_plan_writes_on_the_writable_server_else_this_host():
    c = cfg(state_dir="/var/lib/orch")
    plan = decide_pause(view(REPLICA1, MASTER2), c, 1800.0, "upgrade", "alice")
    assert plan.steps == (RecordPause("server2", "pause", 1800.0, "upgrade", "alice"),) and plan.outcome == ACT
    assert "for 1800s" in plan.reason
    alone = decide_pause(view(REPLICA1, down("server2")), c, 0.0, "", "bob")
    assert alone.steps == (PauseLocally("/var/lib/orch", "pause", 0.0, "", "bob"),)
    assert "on this host only" in alone.reason and "until orch resume" in alone.reason
    assert "replacing" in decide_pause(paused(view(REPLICA1, MASTER2)), c, 60.0, "", "a").reason


def test_resume_plan():
    c = cfg(state_dir="/var/lib/orch")
    nothing = decide_resume(view(REPLICA1, MASTER2), c, "alice", local_pause=False)
    assert nothing.outcome == NOOP and "nothing to resume" in nothing.reason
    plan = decide_resume(paused(view(REPLICA1, MASTER2)), c, "alice", local_pause=False)
    assert plan.steps == (RecordPause("server2", "resume", 0.0, "", "alice"),)
    both = decide_resume(paused(view(REPLICA1, MASTER2)), c, "alice", local_pause=True)
    assert both.steps == (RecordPause("server2", "resume", 0.0, "", "alice"), PauseLocally("/var/lib/orch", "resume", 0.0, "", "alice"))
    alone = decide_resume(paused(view(REPLICA1, down("server2"))), c, "alice", local_pause=False)
    assert alone.steps == (PauseLocally("/var/lib/orch", "resume", 0.0, "", "alice"),)
    # Resumed on this host alone while nothing was writable; the databases still hold the pause.
    carried = replace(view(REPLICA1, MASTER2), pause=paused_rec(kind="resume", seen_on="state_dir"), pause_shared=paused_rec())
    assert decide_resume(carried, c, "alice", local_pause=False).steps == (RecordPause("server2", "resume", 0.0, "", "alice"),)
    unreadable = decide_resume(replace(view(REPLICA1, MASTER2), pause_error="server2: denied"), c, "a", local_pause=False)
    assert unreadable.outcome == REFUSED


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1d", 86400.0), ("45s", 45.0),
                                           ("1.5h", 5400.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "3x", "m", "2 h", "400d", "1h30m"])
def test_bad_durations_are_a_usage_error_with_one_line(text, capsys):
    assert main(["-c", "/nonexistent.yaml", "pause", f"--for={text}", "--yes"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--for" in err and "duration" in err, err
    with pytest.raises(ValueError):
        parse_duration(text)


def test_local_record_and_combine(tmp_path):
    assert pauses.combine({}, str(tmp_path)) == (None, None, "")
    pauses.write_local(str(tmp_path), "pause", "server1", "run-1", 600.0, "disk", "alice")
    data = json.loads((tmp_path / "pause.json").read_text())
    rec, shared, errors = pauses.combine({"server1": (None, ""), "server2": (None, "server2: denied")}, str(tmp_path),
                                         now=data["at"] + 60)
    assert shared is None
    assert rec is not None and rec.active and rec.seen_on == "state_dir" and rec.by == "alice" and errors == "server2: denied"
    assert rec.remaining == pytest.approx(540.0) and rec.age == pytest.approx(60.0)
    expired, _, _ = pauses.combine({}, str(tmp_path), now=data["at"] + 601)
    assert expired is not None and not expired.active
    newer = paused_rec(kind="resume")
    newer = replace(newer, at=data["at"] + 1)
    rec2, shared2, _ = pauses.combine({"server2": (newer, "")}, str(tmp_path), now=data["at"] + 2)
    assert rec2 == newer == shared2  # the latest record wins, wherever it is kept
    assert pauses.local_pause(str(tmp_path))


def test_alert_kinds():
    assert classify({"event": "PAUSE", "result": "act", "steps": []}) == PAUSE
    assert classify({"event": "RESUME", "result": "act", "steps": []}) == RESUME
    assert classify({"event": "MASTER", "result": "paused", "steps": []}) == WITHHELD
    assert classify({"event": "PAUSE", "result": "failed", "steps": []}) != PAUSE


def test_metric(tmp_path):
    from orchestrator.metrics import Metrics

    m = Metrics(cfg(state_dir=str(tmp_path)))
    m.update_view(paused(view(REPLICA1, MASTER2)))
    assert m.registry.get_sample_value("orch_paused") == 1.0
    m.update_view(view(REPLICA1, MASTER2))
    assert m.registry.get_sample_value("orch_paused") == 0.0


def test_status_summary():
    from orchestrator.statusdoc import pause_summary

    on = pause_summary(paused(view(REPLICA1, MASTER2), remaining=600.0))
    assert on["paused"] and on["text"].startswith("PAUSED") and "alice" in on["text"] and "kernel upgrade" in on["text"]
    assert "600s left" in on["text"]
    assert not pause_summary(view(REPLICA1, MASTER2))["paused"]
    assert "PAUSED" not in pause_summary(paused(view(REPLICA1, MASTER2), remaining=-5.0))["text"]
    _ = Plan  # the plan type, for readers
