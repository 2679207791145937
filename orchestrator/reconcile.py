"""Pure reconcile decision for `orch maintain`: which read-only backends every Atlas should list.

Each Atlas's own list is the state, and the verdict has hysteresis: a server that an
Atlas lists stays while it is a healthy replica (both threads running, lag within
bounds, no errant GTIDs, read-only, replicating from the peer); one it does not list is
(re-)added only when, on top of that, everything it received is applied. Under write
load a replica that keeps up nearly always has something received but not yet applied,
so requiring that to stay would flap it in and out.

Only our two servers' addresses are managed; read/write backends and foreign read-only
backends are never touched. What cannot be observed is not changed: an unreachable
server's entry stays as it is, and a reachable server whose verdict needs the
unreachable peer (the errant-GTID check) is neither added nor removed; one that is
unhealthy on its own (writable, threads stopped, lagging) is removed.

A replica whose source died (its IO thread reconnects) stays listed while what it has
is at most maintainer.max_lag old (see replica_health and receipts.py). Once promoted, the
writable master leaves an Atlas's read-only list only when that Atlas's read/write
backend is `up`: until then it is the only server that Atlas can send reads to.

The read/write backend: while there is a writable master (the other server read-only or
down, and it holds the VIP when the VIP is checked), no read/write backend of an Atlas is
left `offline` (SetRwOnline): a lost SET ONLINE step of a promotion never leaves writes
off. The maintainer never sets one offline itself; the events do (FAULT, a promotion).

An Atlas whose config file (persist: rewrite) lists other read-only backends than its
runtime list, with no read-only change due on it, gets a PersistBackends step: a rewrite
that failed after an earlier change is done again on the next pass. A file is rewritten
only when the set of read-only backends differs (state changes never touch it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .config import Config
from .decide import Health, decide_backup, flavor_of, replica_health
from .model import AtlasState, ClusterView, NodeState
from .plan import ACT, NOOP, AddBackend, PersistBackends, Plan, RemoveBackend, SetRwOnline, SetRwOffline, Step


def _addresses(addresses: Sequence[str]) -> str:
    return ",".join(addresses) or "(none)"


@dataclass(frozen=True)
class _Verdict:
    """One reachable server's verdict for an Atlas that lists it, and for one that does not."""

    name: str
    address: str
    staying: Health
    joining: Health
    master: bool = False  # the writable master: its entry waits for the read/write backend to be up

    def for_atlas(self, atlas: AtlasState) -> Health:
        return self.staying if self.address in atlas.ro_addresses() else self.joining


def _verdicts(view: ClusterView, cfg: Config) -> Tuple[List[_Verdict], List[str]]:
    verdicts: List[_Verdict] = []
    reasons: List[str] = []
    atlases = [a for a in view.atlas if a.reachable]
    for node, other in ((view.me, view.peer), (view.peer, view.me)):
        if not node.reachable:
            reasons.append(f"cannot observe {node.name} ({node.error}): its entry is left as it is")
            continue
        verdict = _Verdict(
            node.name, cfg.node(node.name).atlas_address,
            replica_health(view, node, other, cfg, in_atlas=True), replica_health(view, node, other, cfg),
            master=writer(view) is node,
        )
        verdicts.append(verdict)
        if not _is_master(node) or not other.reachable:
            reasons.append(_say(verdict, atlases))
    return verdicts, reasons


def _is_master(node: NodeState) -> bool:
    return node.writable and (node.replica is None or not node.replica.configured)


def writer(view: ClusterView) -> Optional[NodeState]:
    """The one safe writer, if there is one: a master whose peer is not writable and which
    holds the VIP (when this host checks it: the VIP is here exactly when the writer is me)."""
    for node, other in ((view.me, view.peer), (view.peer, view.me)):
        if _is_master(node) and not other.writable:
            if view.holds_vip is not None and view.holds_vip != (node is view.me):
                return None
            return node
    return None


def rw_up(atlas: AtlasState) -> bool:
    """Atlas can route to its read/write backend (some rw entry is `up`)."""
    return any(b.type == "rw" and b.state == "up" for b in atlas.backends)


def _rw_online(view: ClusterView, atlas: AtlasState) -> List[Step]:
    master = writer(view)
    if master is None:
        return []
    return [SetRwOnline(atlas.name, b.address, f"{master.name} is the writable master")
            for b in atlas.backends if b.type == "rw" and b.state == "offline"]


def _say(verdict: _Verdict, atlases: Sequence[AtlasState]) -> str:
    """The verdict that applies, or both with the Atlas each applies to when they differ."""

    def text(health: Health) -> str:
        return health.reason + ("" if health.healthy is not None else ": its entry is left as it is")

    listing = [a.name for a in atlases if verdict.address in a.ro_addresses()]
    lacking = [a.name for a in atlases if verdict.address not in a.ro_addresses()]
    if not listing:
        return text(verdict.joining)
    if not lacking or verdict.staying == verdict.joining:
        return text(verdict.staying)
    return f"{text(verdict.staying)} (listed by {', '.join(listing)}); not listed by {', '.join(lacking)}: {text(verdict.joining)}"


def decide_maintain(view: ClusterView, cfg: Config) -> Plan:
    verdicts, reasons = _verdicts(view, cfg)
    steps: List[Step] = []
    warnings: List[str] = []
    for atlas in view.atlas:
        if not atlas.reachable:
            warnings.append(f"Atlas {atlas.name} unreachable ({atlas.error}): not changed")
            continue
        present = atlas.ro_addresses()
        mine: List[Step] = _rw_online(view, atlas)
        for verdict in verdicts:
            healthy = verdict.for_atlas(atlas).healthy
            if healthy is True and verdict.address not in present:
                mine.append(AddBackend(atlas.name, verdict.address, f"{verdict.name} is a healthy replica"))
            elif healthy is False and verdict.address in present and verdict.master and not rw_up(atlas):
                reasons.append(f"{verdict.name} stays a read-only backend of {atlas.name} until its read/write backend is up")
            elif healthy is False and verdict.address in present:
                mine.append(RemoveBackend(atlas.name, verdict.address, f"{verdict.name} is not a healthy replica"))
        if atlas.config_error:
            warnings.append(f"Atlas {atlas.name}: {atlas.config_error}: its config file is not checked")
        elif (not any(isinstance(step, (AddBackend, RemoveBackend)) for step in mine)
              and atlas.config_ro is not None and set(atlas.config_ro) != set(present)):
            # A change persists itself; with none due, only a stale file is left to fix.
            mine.append(PersistBackends(atlas.name, config_file=atlas.config_file, runtime=present, listed=atlas.config_ro))
        steps += mine
    summary = "; ".join(reasons) or "no replica"
    if steps:
        return Plan(f"{summary}: {', '.join(_verb(s) for s in steps)}", tuple(steps), ACT, tuple(warnings))
    return Plan(f"no change: {summary}", outcome=NOOP, warnings=tuple(warnings))


def _verb(step: Step) -> str:
    if isinstance(step, PersistBackends):
        return f"rewrite {step.config_file} (it lists {_addresses(step.listed)}, Atlas {step.atlas} {_addresses(step.runtime)})"
    if isinstance(step, AddBackend):
        return f"add {step.address} to {step.atlas}"
    if isinstance(step, (SetRwOnline, SetRwOffline)):
        return f"set {step.address or 'the read/write backend'} {'online' if isinstance(step, SetRwOnline) else 'offline'} in {step.atlas}"
    assert isinstance(step, RemoveBackend)
    return f"remove {step.address} from {step.atlas}"


def replica_out(view: ClusterView, cfg: Config) -> bool:
    """A replica exists but is not (yet) a read backend of every Atlas, or is about to be
    removed from one; or an Atlas's read/write backend is offline or not up while a new
    master's entry waits for it: worth re-checking soon."""
    atlases = [a for a in view.atlas if a.reachable]
    for atlas in atlases:
        if any(b.type == "rw" and b.state == "offline" for b in atlas.backends):
            return True
        master = writer(view)
        if master is not None and not rw_up(atlas) and cfg.node(master.name).atlas_address in atlas.ro_addresses():
            return True
    for verdict in _verdicts(view, cfg)[0]:
        node = view.me if verdict.name == view.me.name else view.peer
        if node.replica is None or not node.replica.configured:
            continue
        healths = [verdict.for_atlas(a) for a in atlases] or [verdict.joining]
        if any(h.healthy is False for h in healths):
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
