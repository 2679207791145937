"""Pure: what must hold whatever keepalived's events did (an event comes once, or never).

The VIP holder is the writable master; nobody else writes. keepalived sends no second
event after a refused or failed MASTER, and a frozen keepalived that wakes up holding
the VIP sends none at all: the maintainer re-derives these on every pass and runs the
plan that repairs them, with the same refusals as an event would meet.
"""

from __future__ import annotations

from dataclasses import replace

from typing import Optional, Tuple

from . import flavors
from .config import Config
from .decide import MASTER, decide, decide_fault, flavor_of
from .model import ClusterView, NodeState, ThreadState
from .plan import ACT, NOOP, REFUSED, REWIND_UNSUPPORTED, AcquireToken, HandOver, Plan, ReleaseToken

SPLIT_BRAIN = "SPLIT-BRAIN"
TOKEN = "TOKEN"  # the journal's event for the write token's invariant
HANDOVER = "HANDOVER"
STALE = "STALE"
HANDOVER_BACKOFF = 60.0  # seconds between two hand-overs of the VIP by the same host
TOKEN_HANDOVER_BACKOFF = 10.0  # the same when the writable peer holds the write token (etcd: configured)


def decide_invariant(view: ClusterView, cfg: Config, vip_elsewhere: Optional[Tuple[str, ...]] = None,
                     track: str = "", handback_age: Optional[float] = None) -> Optional[Tuple[str, Plan]]:
    """(event, plan) repairing a broken invariant on this node, or None when both hold.

    Needs the VIP check: without it, this host cannot tell which node should write. A
    host can hold the VIP without being keepalived's MASTER (a killed keepalived leaves
    its addresses behind; two partitioned ones both hold it), so the VIP holder never
    takes writes away from a peer that has them: it promotes itself only while the peer
    is read-only or down (the peer's own notify or maintainer handles the rest), and a
    writable server that does not hold the VIP fences itself only next to a writable peer.

    Split brain (both writable): the non-holder fences itself; the holder fences the peer
    at once, but only when it is the only host answering for the VIP (``vip_elsewhere``
    is (), from the ARP check on keepalived.interface). When the holder cannot be told
    (another host answers too, or no check), it only alerts: two hosts that each believe
    they hold the VIP must not fence each other.
   
    Hand-over (keepalived.track_file, whose value is ``track``): a read-only VIP holder next
    to a writable peer that has transactions it lacks (acknowledged by that peer) gives the
    VIP to it instead of winning by priority: it writes 1, keepalived puts it in FAULT and
    the VIP moves; once the VIP has left it writes 0 and rejoins as the peer's replica. Not
    again within HANDOVER_BACKOFF seconds of the last hand-back (``handback_age``): a peer
    whose keepalived does not take the VIP would otherwise bounce it back and forth.
    """
    me, peer = view.me, view.peer
    if view.holds_vip is None or not me.reachable:
        return None
    path = cfg.keepalived.track_file
    if path and track == "1" and view.holds_vip is False:
        return HANDOVER, Plan(f"the VIP has left {me.name} (handed over): taking part in VRRP again",
                              (HandOver(path, False, "the VIP has moved"),), ACT)
    stale = decide_stale(view, cfg, track)
    if stale is not None:
        return STALE, stale
    peer_open = peer.reachable and not flavor_of(peer, cfg).is_fenced(peer)
    if view.holds_vip:
        replicating = me.replica is not None and me.replica.configured
        if me.writable and not replicating:
            if not peer_open:
                return None
            newer = missing_from(flavor_of(me, cfg), me, peer)
            if newer and not stale_writer(replace(view, me=peer, peer=me), cfg):
                # The peer took writes this master lacks, and they may have been acknowledged (it is
                # not a stale writer whose tail waited for an acknowledgement): never fence the newer
                # history from here. A stale peer is fenced (and fences itself).
                return SPLIT_BRAIN, Plan(
                    f"SPLIT BRAIN: both {me.name} and {peer.name} are writable, and {peer.name} has {newer} that {me.name} "
                    f"lacks: not fencing the peer with the newer history; operator attention needed", outcome=NOOP)
            if vip_elsewhere == ():
                plan = decide(view, MASTER, cfg)
                return SPLIT_BRAIN, Plan(f"both servers are writable and {me.name} alone answers for VIP {cfg.keepalived.vip}: "
                                         f"{plan.reason}", plan.steps, plan.outcome, plan.warnings)
            who = (f"another host ({', '.join(vip_elsewhere)}) answers ARP for it too" if vip_elsewhere
                   else "no ARP check tells whether another host holds it too (keepalived.interface)")
            return SPLIT_BRAIN, Plan(
                f"SPLIT BRAIN: both {me.name} and {peer.name} are writable; {me.name} holds VIP {cfg.keepalived.vip} but {who}: "
                f"not fencing {peer.name} from here (its own maintainer fences it when it does not hold the VIP); operator attention needed",
                outcome=NOOP)
        plan = decide(view, MASTER, cfg)
        if (peer_open or peer.alive) and not me.writable:
            flavor = flavor_of(me, cfg)
            lacking = missing_from(flavor, me, peer) if peer_open else ""
            # The VIP follows the newest writable history: a writable peer that has transactions
            # this holder lacks, or that lacks nothing this holder has (not behind it).
            behind = missing_from(flavor, peer, me) if peer_open else "?"
            # The write token's holder is the writer (etcd: configured), whatever the histories say.
            peer_token = view.token is not None and view.token.held_by(peer.name)
            if path and peer.writable and (lacking or not behind or peer_token):
                if track == "1":
                    return HANDOVER, Plan(f"handing VIP {cfg.keepalived.vip} over to {peer.name}: waiting for keepalived to move it",
                                          outcome=NOOP)
                # A peer holding the write token is the writer for sure: its VIP comes back sooner.
                backoff = TOKEN_HANDOVER_BACKOFF if peer_token else HANDOVER_BACKOFF
                if handback_age is not None and handback_age < backoff:
                    return HANDOVER, Plan(
                        f"{me.name} holds VIP {cfg.keepalived.vip} but is read-only next to the writable {peer.name}: the VIP came "
                        f"back {handback_age:.0f}s after a hand-over (does keepalived run on {peer.name}?); handing over again "
                        f"{backoff - handback_age:.0f}s from now", outcome=NOOP)
                newer = (f"has {lacking} that {me.name} lacks" if lacking else f"has everything {me.name} has" if not behind
                         else f"holds the write token ({view.token.describe() if view.token else ''})")
                return HANDOVER, Plan(
                    f"{me.name} holds VIP {cfg.keepalived.vip} but is read-only, and the writable {peer.name} {newer}: "
                    f"handing the VIP over to {peer.name} instead of winning by priority",
                    (HandOver(path, True, f"{peer.name} is the writable master with the acknowledged history"),), ACT)
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
        older = stale_writer(replace(view, me=peer, peer=me), cfg)
        if older:
            # The VIP holder is a stale writer (a host that woke up): its commits wait for an
            # acknowledgement nobody gives. This node has the newer history: it does not fence
            # itself; the stale holder's maintainer fences it, points it here and hands the VIP
            # over, whose MASTER event then opens this node. (Fencing the holder from here would
            # stop that: a fenced holder is no stale writer, and the VIP would stay on it.)
            return SPLIT_BRAIN, Plan(
                f"both servers are writable and {me.name} does not hold VIP {cfg.keepalived.vip}, but {peer.name} is a stale "
                f"writer ({me.name} has {older} that it lacks, and its own commits wait for an acknowledgement): {me.name} "
                f"keeps the newer history; {peer.name}'s maintainer fences it and hands the VIP over", outcome=NOOP)
        # Two writers, and the VIP is not here: this one must stop taking writes now.
        plan = decide_fault(view, cfg, SPLIT_BRAIN)
        return SPLIT_BRAIN, Plan(
            f"both servers are writable and {me.name} does not hold VIP {cfg.keepalived.vip}: {plan.reason}",
            plan.steps, plan.outcome, plan.warnings,
        )
    return None


def decide_token(view: ClusterView, cfg: Config) -> Optional[Tuple[str, Plan]]:
    """The write token's invariant (etcd: configured; orchestrator/token.py) on this node: a writable server holds the token; a fenced one not
    holding the VIP does not keep it. None when it holds (or etcd cannot be read: then the
    keeper's deadline decides)."""
    t = view.token
    me, peer = view.me, view.peer
    if cfg.etcd is None or t is None or not t.known or not me.reachable:
        return None
    if me.writable:
        if t.holder == me.name:
            return None
        if t.holder == peer.name:
            plan = decide_fault(view, cfg, TOKEN)
            return TOKEN, Plan(f"{me.name} is writable but {peer.name} holds the write token ({t.describe()}): {plan.reason}",
                               plan.steps, plan.outcome, plan.warnings)
        if not t.holder and view.holds_vip is False:
            # keepalived moved the VIP away (a FAULT released the token, the server came back):
            # the VIP holder's promotion takes the token and fences this one; it does not take it back.
            return None
        if not t.holder:
            return TOKEN, Plan(f"{me.name} is writable and nobody holds the write token: taking it (or, if {peer.name} "
                               f"takes it first, fencing {me.name} next pass)", (AcquireToken(me.name, peer.name, 0.0),), ACT)
        return TOKEN, Plan(f"{me.name} is writable but the write token is held by {t.holder!r}, not a node of this cluster: "
                           f"operator attention needed", outcome=NOOP)
    if t.holder == me.name and view.holds_vip is False:
        return TOKEN, Plan(f"{me.name} is read-only and does not hold the VIP, yet holds the write token: releasing it "
                           f"for {peer.name}", (ReleaseToken(me.name, "fenced, not the VIP holder"),), ACT)
    return None


def missing_from(flavor: "flavors.Flavor", node: NodeState, other: NodeState) -> str:
    """What ``other`` has that ``node`` lacks ("" when nothing): transactions of its own (its
    errant GTIDs against ``node``: by MariaDB's per-domain rules a divergent tail with lower
    sequence numbers is seen only this way) or a position ``node`` has not reached."""
    return flavor.errant(other, node) or flavor.lacking(other.binlog_pos, node)


def _receives_from(node: NodeState, source: NodeState) -> bool:
    """``node`` is a working replica of ``source``: pointed at it, its IO thread running. A
    configuration left behind (a promotion whose STOP SLAVE was still waiting on a vanished
    old master) does not make a node the replica of its old master."""
    return node.replicates_from(source.host, source.port) and node.replica is not None and node.replica.io is ThreadState.RUNNING


def stale_writer(view: ClusterView, cfg: Config) -> str:
    """Pure: what the peer has that this writable node lacks, when this node is a stale writer
    ("" otherwise): a host that froze and resumed (a paused VM, a stalled migration) finds its
    server still writable while the peer, promoted meanwhile, took acknowledged writes.

    Stale when the peer does not receive from it (so the peer's extra transactions are its own,
    not applied from here) and either this node has nothing the peer lacks, or what it has came
    while its semi-sync wait was on without fallback (no replica acknowledged it: never
    acknowledged to a client; the Rewind step proves it before rolling it back). A writable
    node whose own tail may have been acknowledged (its wait off) is a fork, not stale: the
    split-brain watch alerts instead."""
    me, peer = view.me, view.peer
    if not (me.writable and peer.reachable) or _receives_from(peer, me):
        return ""
    if peer.rewinding and not peer.writable:
        return ""  # an orch rewind of the peer holds its mark: its extra transactions are being rolled back
    flavor = flavor_of(me, cfg)
    lacking = missing_from(flavor, me, peer)
    if not lacking:
        return ""
    if flavor.errant(me, peer):
        from .semisync import NO_FALLBACK_MIN_MS

        s = me.semisync
        if not (cfg.failover.semi_sync and s is not None and s.no_fallback(NO_FALLBACK_MIN_MS)):
            return ""
    return lacking


def decide_stale(view: ClusterView, cfg: Config, track: str = "") -> Optional[Plan]:
    """Pure: the plan of a stale writer (``stale_writer``): fence itself (its blocked commits
    were never acknowledged, the fence ends them), point itself at the peer, hand the VIP
    over (keepalived.track_file), then roll its own unacknowledged tail back (proven first)
    and replicate. Pointing it at the peer before the hand-over tells the peer's MASTER that
    this node concedes: the peer opens without following this node's tail."""
    lacking = stale_writer(view, cfg)
    if not lacking:
        return None
    from .plan import ChangeSource, Fence, MarkRewind, Rewind, StartReplica, StopReplica

    me, peer = view.me, view.peer
    flavor = flavor_of(me, cfg)
    errant = flavor.errant(me, peer)
    rewinds = bool(errant) and cfg.failover.auto_rewind and flavor.name not in REWIND_UNSUPPORTED
    steps: list = [Fence(me.name)] + ([MarkRewind(me.name)] if rewinds else [])
    if me.replica is not None and me.replica.configured:
        steps.append(StopReplica(me.name))
    steps.append(ChangeSource(me.name, peer.name, peer.host, peer.port))
    path = cfg.keepalived.track_file
    if view.holds_vip and path and track != "1":
        steps.append(HandOver(path, True, f"{peer.name} has the newer history ({lacking})"))
    text = (f"{me.name} is writable but stale: {peer.name}, which does not replicate from it, has {lacking} that {me.name} "
            f"lacks; fencing {me.name} and giving the writes to the newer history")
    if not errant:
        # A commit frozen mid-way may still land in the binlog before the fence: replication
        # starts on the rejoin (BACKUP, the maintainer), which observes after the fence; the
        # wait stays on until then, so a late tail can still be proven and rolled back.
        return Plan(text + f"; it rejoins as {peer.name}'s replica next", tuple(steps), ACT)
    if not rewinds:
        return Plan(f"{text}; its own tail {errant} (never acknowledged: semi-sync wait on) stays for orch demote --rewind",
                    tuple(steps), ACT)
    steps += [Rewind(me.name, peer.name, errant, proven=True), StartReplica(me.name)]
    return Plan(text + f"; rolling back its own tail {errant} (proven never acknowledged, saved first), then replicating "
                f"from {peer.name}", tuple(steps), ACT)


def caught_up(view: ClusterView, cfg: Config) -> bool:
    """Pure: would a promotion's catch-up of this node finish at once? Everything it received
    is applied and, with the peer reachable, it lacks nothing the peer executed. The maintainer
    retries a promotion refused for its catch-up as soon as this holds, not a minute later."""
    me, peer = view.me, view.peer
    if not me.reachable:
        return False
    flavor = flavor_of(me, cfg)
    r = me.replica
    if r is not None and r.configured and (r.sql_error or flavor.unapplied(me)):
        return False
    return not (peer.reachable and flavor.lacking(peer.binlog_pos, me))


def decide_pending(view: ClusterView, cfg: Config, event: str) -> Plan:
    """A notify event that could not get the run lock, decided on today's state."""
    plan = decide(view, event, cfg)
    return Plan(f"handed-over {event} event: {plan.reason}", plan.steps, plan.outcome, plan.warnings)


SEMISYNC = "SEMISYNC"


def semisync_replica_gone(view: ClusterView) -> bool:
    """This master's peer does not receive from it (down, unreachable, not replicating from
    it, or its IO thread not running). The master's own count of semi-sync clients is no
    sign: a killed replica's dump thread lingers until the master next writes to it."""
    me, peer = view.me, view.peer
    s = me.semisync
    if s is None or s.error:
        return False
    r = peer.replica if peer.reachable else None
    receiving = r is not None and peer.replicates_from(me.host, me.port) and r.io is ThreadState.RUNNING
    return not receiving


def needs_witness(view: ClusterView, cfg: Config) -> bool:
    """Whether decide_semisync needs to know if the witness answers (a ping costs up to 1 s)."""
    me = view.me
    s = me.semisync
    return (cfg.failover.semi_sync and me.writable and view.holds_vip is not False and s is not None and s.enabled
            and semisync_replica_gone(view))


def decide_semisync(view: ClusterView, cfg: Config, witness: Optional[bool] = None) -> Optional[Plan]:
    """Keep failover.semi_sync's policy: a master waits for its replica's acknowledgement,
    without fallback, except while the replica is gone and the master is not isolated.

    * The wait is off (a promotion switched it off, or it is misconfigured) and the peer
      replicates from this master and has caught up: switch it on.
    * The replica is gone (no semi-sync client, the peer not receiving) and the witness
      answers: this master is not isolated, its replica died; waiting would block every
      writer for good: switch it off. An isolated master (no witness) never does: its
      writers wait, are never acknowledged, and its fence ends them.
    * A replica of the peer that does not acknowledge: enable its replica side.
    """
    if not cfg.failover.semi_sync:
        return None
    me, peer = view.me, view.peer
    s = me.semisync
    if not me.reachable or s is None or s.error:
        return None
    from . import semisync
    from .plan import SemiSyncReplica, SemiSyncWait

    if not me.writable:
        r = me.replica
        if r is None or not r.configured or not me.replicates_from(peer.host, peer.port):
            return None
        if s.enabled and peer.reachable and flavor_of(me, cfg).errant(me, peer):
            # A tail not settled yet (a stale writer's, waiting for its rewind): the wait stays on,
            # so that the rewind can prove it never acknowledged; a fenced node commits nothing,
            # and starting replication switches the wait off anyway.
            return None
        if s.enabled:
            return Plan(f"{me.name} replicates from {peer.name} but waits for acknowledgements as a master: its applier would block",
                        (SemiSyncWait(me.name, False, f"{me.name} is a replica of {peer.name}"),), ACT)
        if peer.writable and r.running and not s.replica_enabled:
            return Plan(f"{me.name} replicates from {peer.name} without acknowledging (failover.semi_sync): enabling its replica side",
                        (SemiSyncReplica(me.name),), ACT)
        return None
    if view.holds_vip is False:
        return None  # not the master by the VIP: the split-brain watch handles a writable non-holder
    if semisync_replica_gone(view):
        if not s.enabled:
            return None
        newer = _peer_newer(view, cfg)
        if newer:
            # Never on a stale master: its blocked commits must stay unacknowledged.
            return Plan(f"{me.name}'s replica is gone but {newer}: {me.name}'s commits keep waiting (never acknowledged)",
                        outcome=NOOP)
        from .token import may_switch_semisync_off

        not_holder = may_switch_semisync_off(view, cfg)
        if not_holder:
            # The split the token exists for: both hosts reach the witness, not each other.
            return Plan(f"{me.name}'s replica is gone ({_replica_text(view)}) but {not_holder}: its commits keep "
                        f"waiting (never acknowledged without the replica)", outcome=NOOP)
        if witness is True:
            return Plan(
                f"{me.name}'s replica is gone ({_replica_text(view)}) and the witness {cfg.failover.witness} answers: "
                f"{me.name} is not isolated, so its writers stop waiting for an acknowledgement",
                (SemiSyncWait(me.name, False, f"the replica is gone ({_replica_text(view)}) and witness {cfg.failover.witness} answers"),), ACT,
            )
        return Plan(
            f"{me.name}'s replica is gone ({_replica_text(view)}) and the witness {cfg.failover.witness} does not answer: "
            f"{me.name} may be isolated, so its commits keep waiting (never acknowledged without the replica)", outcome=NOOP,
        )
    r = peer.replica
    caught_up = (s.clients > 0 and r is not None and r.running and r.lag is not None and r.lag <= 1
                 and peer.replicates_from(me.host, me.port))
    if caught_up and not s.no_fallback(semisync.NO_FALLBACK_MIN_MS):
        return Plan(
            f"{peer.name} replicates from {me.name} and has caught up: semi-sync wait back on, without fallback",
            (SemiSyncWait(me.name, True, f"{peer.name} replicates and has caught up (lag {r.lag if r else '?'}s)"),), ACT,
        )
    return None


def _peer_newer(view: ClusterView, cfg: Config) -> str:
    """Why the peer may hold history this master lacks ("" when it cannot): it is writable, or
    it has transactions this master lacks."""
    me, peer = view.me, view.peer
    if peer.writable:
        return f"{peer.name} is writable"
    if not peer.reachable or _receives_from(peer, me):
        return ""
    lacking = missing_from(flavor_of(me, cfg), me, peer)
    return f"{peer.name} has {lacking} that {me.name} lacks" if lacking else ""


def _replica_text(view: ClusterView) -> str:
    peer = view.peer
    if not peer.reachable:
        return f"{peer.name} is not reachable"
    r = peer.replica
    if r is None or not r.configured or not peer.replicates_from(view.me.host, view.me.port):
        return f"{peer.name} does not replicate from {view.me.name}"
    return f"{peer.name}'s IO thread is {r.io.value}"
