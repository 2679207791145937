"""A switchover with the write token (etcd: configured), pure: the plan hands the token over
between the catch-up and the VIP's move, and the preflight refuses, before anything is fenced,
a hand-over the candidate could not use (tests/test_etcd_switchover.py runs it in the lab)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.commands.switchover import LocalFacts, plan_switchover
from orchestrator.config import parse
from orchestrator.model import TokenState
from orchestrator.plan import ACT, REFUSED, CatchUp, Fence, HandOver, HandOverToken

from .test_switchover import MASTER1, REPLICA2, TRACK, VIP, view

ETCD = {"endpoints": ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.254:2379"], "ttl": 5}


def ecfg():
    return parse({
        "self": "server1",
        "nodes": {"server1": {"host": "10.0.0.1", "port": 3306}, "server2": {"host": "10.0.0.2", "port": 3306}},
        "mysql": {"user": "orch", "password": "x"},
        "replication": {"user": "repl", "password": "y"},
        "failover": {"catchup_timeout": 30, "block_seconds": 0},
        "keepalived": {"vip": VIP, "track_file": TRACK},
        "etcd": ETCD,
    })


def tview(holder="server1", error=""):
    return replace(view(MASTER1, REPLICA2), token=TokenState(holder, 4.0, 7, 42, error))


def facts(left=5.0, error=""):
    return LocalFacts(keepalived_running=True, track="0", candidate_lease=left, candidate_lease_error=error)


def test_the_token_moves_after_the_catch_up_and_before_the_vip():
    plan = plan_switchover(tview(), ecfg(), facts())
    assert plan.outcome == ACT, plan.reason
    kinds = [type(s) for s in plan.steps]
    assert kinds.index(Fence) < kinds.index(CatchUp) < kinds.index(HandOverToken) < kinds.index(HandOver)
    assert plan.steps[kinds.index(HandOverToken)] == HandOverToken("server1", "server2")


@pytest.mark.parametrize("holder", ["server1", ""])
def test_from_the_holder_or_when_nobody_holds_it(holder):
    assert plan_switchover(tview(holder), ecfg(), facts(3.0)).outcome == ACT


@pytest.mark.parametrize("name, v, f, fragment", [
    ("candidate names no lease", tview(), facts(None), "server2's host names no lease in etcd"),
    ("candidate's lease not renewed for two rounds", tview(), facts(2.0), "has 2s left of 5s"),
    ("candidate's lease gone", tview(), facts(-1.0), "has 0s left of 5s"),
    ("candidate's lease unreadable", tview(), facts(None, "etcd get: no member answered"), "cannot be read (etcd get"),
    ("token unreadable", tview("", "no member answered within 1s"), facts(), "the write token cannot be read"),
    ("token held by the candidate", tview("server2"), facts(), "not by server1"),
])
def test_refused_before_anything_is_fenced(name, v, f, fragment):
    plan = plan_switchover(v, ecfg(), f)
    assert plan.outcome == REFUSED and not plan.steps, name
    assert fragment in plan.reason, plan.reason


def test_without_etcd_the_lease_is_not_asked_for():
    from .test_switchover import OK, cfg

    plan = plan_switchover(view(), cfg(), OK)
    assert plan.outcome == ACT and not any(isinstance(s, HandOverToken) for s in plan.steps)
