"""Pure reconcile decision for `orch maintain`: which read-only backends every Atlas should list.

The desired set holds the replica, and only while it is a healthy replica (both
threads running, everything received applied, lag within bounds, no errant GTIDs,
read-only). Only our two servers' addresses are managed; read/write backends and
foreign read-only backends are never touched. What cannot be observed is not changed:
an unreachable server's entry stays as it is, and a reachable server whose verdict
needs the unreachable peer (the errant-GTID check) is neither added nor removed; one
that is unhealthy on its own (writable, threads stopped, lagging) is removed.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from .config import Config
from .decide import decide_backup, flavor_of, replica_health
from .model import ClusterView
from .plan import ACT, NOOP, AddBackend, Plan, RemoveBackend, Step


def decide_maintain(view: ClusterView, cfg: Config) -> Plan:
    me, peer = view.me, view.peer
    wanted: Dict[str, Optional[bool]] = {}  # None: leave this server's entry as it is
    reasons = []
    for node, other in ((me, peer), (peer, me)):
        if not node.reachable:
            wanted[node.name] = None
            reasons.append(f"cannot observe {node.name} ({node.error}): its entry is left as it is")
            continue
        health = replica_health(view, node, other, cfg)
        wanted[node.name] = health.healthy
        is_master = node.writable and (node.replica is None or not node.replica.configured)
        if not is_master or not other.reachable:
            reasons.append(health.reason + ("" if health.healthy is not None else ": its entry is left as it is"))
    steps: List[Step] = []
    unreachable = []
    for atlas in view.atlas:
        if not atlas.reachable:
            unreachable.append(f"Atlas {atlas.name} unreachable ({atlas.error}): not changed")
            continue
        present = set(atlas.ro_addresses())
        for name, healthy in wanted.items():
            address = cfg.node(name).atlas_address
            if healthy is True and address not in present:
                steps.append(AddBackend(atlas.name, address, f"{name} is a healthy replica"))
            elif healthy is False and address in present:
                steps.append(RemoveBackend(atlas.name, address, f"{name} is not a healthy replica"))
    summary = "; ".join(reasons) or "no replica"
    if steps:
        verb = ", ".join(
            f"add {s.address} to {s.atlas}" if isinstance(s, AddBackend) else f"remove {s.address} from {s.atlas}" for s in steps
        )
        return Plan(f"{summary}: {verb}", tuple(steps), ACT, tuple(unreachable))
    return Plan(f"no change: {summary}", outcome=NOOP, warnings=tuple(unreachable))


def replica_out(view: ClusterView, cfg: Config) -> bool:
    """A replica exists but is not (yet) a healthy read backend: worth re-checking soon."""
    for node, other in ((view.me, view.peer), (view.peer, view.me)):
        if node.reachable and node.replica is not None and node.replica.configured:
            if replica_health(view, node, other, cfg).healthy is False:
                return True
    return False


def decide_rejoin(view: ClusterView, cfg: Config) -> Optional[Plan]:
    """The BACKUP plan, when this node is a fenced ex-master left without replication.

    That is what an incomplete BACKUP leaves behind (the peer was not writable yet when
    it ran) and keepalived sends no further event: the maintainer completes it. Nothing
    else is touched: a node with replication configured (even stopped or refused), a
    writable node, or one holding the VIP is not this case.
    """
    me, peer = view.me, view.peer
    if not (me.reachable and peer.reachable and peer.writable) or view.holds_vip is True:
        return None
    if not flavor_of(me, cfg).is_fenced(me) or (me.replica is not None and me.replica.configured):
        return None
    plan = decide_backup(view, cfg)
    return Plan(f"completing an unfinished rejoin: {plan.reason}", plan.steps, plan.outcome, plan.warnings)
