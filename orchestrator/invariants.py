"""Pure: what must hold whatever keepalived's events did (an event comes once, or never).

The VIP holder is the writable master; nobody else writes. keepalived sends no second
event after a refused or failed MASTER, and a frozen keepalived that wakes up holding
the VIP sends none at all: the maintainer re-derives these on every pass and runs the
plan that repairs them, with the same refusals as an event would meet.
"""

from __future__ import annotations

from typing import Optional, Tuple

from .config import Config
from .decide import MASTER, decide, decide_fault, flavor_of
from .model import ClusterView
from .plan import NOOP, REFUSED, Plan

SPLIT_BRAIN = "SPLIT-BRAIN"


def decide_invariant(view: ClusterView, cfg: Config) -> Optional[Tuple[str, Plan]]:
    """(event, plan) repairing a broken invariant on this node, or None when both hold.

    Needs the VIP check: without it, this host cannot tell which node should write. A
    host can hold the VIP without being keepalived's MASTER (a killed keepalived leaves
    its addresses behind; two partitioned ones both hold it), so the VIP holder never
    takes writes away from a peer that has them: it promotes itself only while the peer
    is read-only or down (the peer's own notify or maintainer handles the rest), and a
    writable server that does not hold the VIP fences itself only next to a writable peer.
    """
    me, peer = view.me, view.peer
    if view.holds_vip is None or not me.reachable:
        return None
    peer_open = peer.reachable and not flavor_of(peer, cfg).is_fenced(peer)
    if view.holds_vip:
        replicating = me.replica is not None and me.replica.configured
        if me.writable and not replicating:
            return None
        plan = decide(view, MASTER, cfg)
        if (peer_open or peer.alive) and not me.writable:
            if plan.outcome == REFUSED:  # refused before any step: said (and journaled) on every pass
                return MASTER, Plan(f"{me.name} holds VIP {cfg.keepalived.vip} but is read-only: {plan.reason}", (), REFUSED, plan.warnings)
            # A VIP left behind (keepalived killed) must not take writes from a live master.
            return MASTER, Plan(
                f"{me.name} holds VIP {cfg.keepalived.vip} but is read-only while {peer.name} "
                f"{'is writable' if peer_open else 'answers unusably'}: not taking writes away from it "
                f"(keepalived's MASTER event or orch promote decides)", outcome=NOOP,
            )
        if peer_open or peer.alive:
            return None
        if plan.outcome == NOOP:
            return None
        why = f"{me.name} holds VIP {cfg.keepalived.vip}" + (" but is read-only" if not me.writable else " but still replicates")
        return MASTER, Plan(f"{why}: {plan.reason}", plan.steps, plan.outcome, plan.warnings)
    if me.writable and peer_open:
        # Two writers, and the VIP is not here: this one must stop taking writes now.
        plan = decide_fault(view, cfg, SPLIT_BRAIN)
        return SPLIT_BRAIN, Plan(
            f"both servers are writable and {me.name} does not hold VIP {cfg.keepalived.vip}: {plan.reason}",
            plan.steps, plan.outcome, plan.warnings,
        )
    return None


def decide_pending(view: ClusterView, cfg: Config, event: str) -> Plan:
    """A notify event that could not get the run lock, decided on today's state."""
    plan = decide(view, event, cfg)
    return Plan(f"handed-over {event} event: {plan.reason}", plan.steps, plan.outcome, plan.warnings)
