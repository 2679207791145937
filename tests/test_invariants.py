"""Pure: which repairs the maintainer runs for the invariants (VIP holder writes, nobody else)."""

from dataclasses import replace

import pytest

from orchestrator.invariants import SPLIT_BRAIN, decide_invariant
from orchestrator.plan import REFUSED, ChangeSource, Fence, SetWritable

from .test_decide import MASTER1, MASTER2, REPLICA1, REPLICA2, cfg, down, node, repl, view


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
    # A leftover VIP (keepalived killed -9) on a node fenced by the real new master: leave it.
    ("VIP holder read-only next to a writable peer: never take writes away", view(REPLICA1, MASTER2, holds_vip=True)),
    ("both writable and this one holds the VIP: the other fences itself", view(MASTER1, MASTER2, holds_vip=True)),
    ("writable without the VIP, peer read-only: the VIP holder's repair fences this one", view(MASTER1, REPLICA2, holds_vip=False)),
    ("own server down", view(down("server1"), MASTER2, holds_vip=True)),
])
def test_no_repair(name, v):
    assert decide_invariant(v, cfg()) is None


def test_refusals_stay_refusals():
    v = view(node("server1", executed="0-1-11"), node("server2", executed="0-2-20", binlog_state="0-1-10,0-2-20"), holds_vip=True)
    event, plan = decide_invariant(v, cfg())
    assert event == "MASTER" and plan.outcome == REFUSED and "diverged" in plan.reason
