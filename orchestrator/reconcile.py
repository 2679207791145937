"""Pure reconcile decision for `orch maintain`: which read-only backends every Atlas should list.

The desired set holds the replica, and only while it is a healthy replica (both
threads running, everything received applied, lag within bounds, no errant GTIDs,
read-only). Only our two servers' addresses are managed; read/write backends and
foreign read-only backends are never touched. What cannot be observed is not changed.
"""

from __future__ import annotations

from typing import List

from .config import Config
from .decide import replica_health
from .model import ClusterView
from .plan import ACT, NOOP, AddBackend, Plan, RemoveBackend, Step


def decide_maintain(view: ClusterView, cfg: Config) -> Plan:
    me, peer = view.me, view.peer
    down = [n for n in (me, peer) if not n.reachable]
    if down:
        names = ", ".join(f"{n.name} ({n.error})" for n in down)
        return Plan(f"no change: cannot observe {names}; leaving Atlas as it is", outcome=NOOP)
    addresses = {n.name: cfg.node(n.name).atlas_address for n in (me, peer)}
    wanted = {}
    reasons = []
    for node, other in ((me, peer), (peer, me)):
        health = replica_health(view, node, other, cfg)
        wanted[node.name] = health.healthy
        is_master = node.writable and (node.replica is None or not node.replica.configured)
        if not is_master:
            reasons.append(health.reason)
    steps: List[Step] = []
    unreachable = []
    for atlas in view.atlas:
        if not atlas.reachable:
            unreachable.append(f"Atlas {atlas.name} unreachable ({atlas.error}): not changed")
            continue
        present = set(atlas.ro_addresses())
        for name, healthy in wanted.items():
            address = addresses[name]
            if healthy and address not in present:
                steps.append(AddBackend(atlas.name, address, f"{name} is a healthy replica"))
            elif not healthy and address in present:
                steps.append(RemoveBackend(atlas.name, address, f"{name} is not a healthy replica"))
    summary = "; ".join(reasons) or "no replica"
    if steps:
        verb = ", ".join(f"{'add' if isinstance(s, AddBackend) else 'remove'} {s.address} {'to' if isinstance(s, AddBackend) else 'from'} {s.atlas}" for s in steps)
        return Plan(f"{summary}: {verb}", tuple(steps), ACT, tuple(unreachable))
    return Plan(f"no change: {summary}; every reachable Atlas already agrees", outcome=NOOP, warnings=tuple(unreachable))


def replica_out(view: ClusterView, cfg: Config) -> bool:
    """A replica exists but is not (yet) a healthy read backend: worth re-checking soon."""
    if not (view.me.reachable and view.peer.reachable):
        return False
    for node, other in ((view.me, view.peer), (view.peer, view.me)):
        if node.replica is not None and node.replica.configured and not replica_health(view, node, other, cfg).healthy:
            return True
    return False
