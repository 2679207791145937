"""Pure decisions: (observed view, event, config) -> Plan. No I/O, no clock.

Every plan starts from the real state, so running a plan twice, or running the
rest of a plan that was cut off halfway, converges to the same end state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

from . import antiflap, flavors
from .config import Config
from .keepalived.events import BACKUP, DELETED, FAULT, MASTER, STOP  # the events decide() plans for
from .model import ClusterView, NodeState, ThreadState
from .pause import pause_warning, paused_plan
from .token import open_gate, release_steps
from .plan import (
    ACT, INCOMPLETE, NOOP, REFUSED, CatchUp, ChangeSource, Fence, Plan, PreserveRelayLog, Recheck, RemoveBackend,
    RecordPromotion, ResetReplica, Rewind, RunHook, SemiSyncWait, SetRwOffline, SetRwOnline, SetWritable, StartReplica,
    StartSqlThread, Step, StopReplica, StopSqlThread,
)

STATES = (MASTER, BACKUP, FAULT, STOP, DELETED)


def flavor_of(node: NodeState, cfg: Config) -> flavors.Flavor:
    return flavors.get(node.flavor or cfg.flavor, node.version)


@dataclass(frozen=True)
class Health:
    """Whether a replica may serve reads, and why (not)."""

    healthy: Optional[bool]  # None: cannot be told (the errant-GTID check needs the peer)
    reason: str


def replica_health(view: ClusterView, node: NodeState, peer: NodeState, cfg: Config, *, in_atlas: bool = False) -> Health:
    """Is ``node`` a replica of ``peer`` safe to serve reads (an Atlas read-only backend)?

    Hysteresis: ``in_atlas=False`` asks whether it may be (re-)added, which also needs
    everything it received applied (its relay log drained). ``in_atlas=True`` asks whether
    it may stay: under write load there is nearly always something received but not yet
    applied, so staying needs only both threads running, lag within max_lag, no errant
    GTIDs, read-only and replicating from the peer. A listed replica whose source died (IO
    thread connecting, SQL thread running) stays while it received something at most
    max_lag seconds ago (``received_ago``, measured by the maintainer) and applied it all.
    """
    if not node.reachable:
        return Health(False, f"{node.name} is not reachable")
    if node.writable:
        return Health(False, f"{node.name} is writable (a master, not a replica)")
    r = node.replica
    if r is None or not r.configured:
        return Health(False, f"{node.name} is not replicating")
    if not node.replicates_from(peer.host, peer.port):
        return Health(False, f"{node.name} replicates from {r.source_host}:{r.source_port}, not from {peer.name}")
    # Its source gone (the IO thread reconnects): a listed replica still serves what it has
    # while that is at most max_lag old, until it is promoted.
    sourceless = in_atlas and r.io is ThreadState.CONNECTING and r.sql is ThreadState.RUNNING
    if r.io is not ThreadState.RUNNING and not sourceless:
        return Health(False, f"{node.name}'s IO thread is {r.io.value}" + (f": {r.last_io_error}" if r.last_io_error else ""))
    if r.sql is not ThreadState.RUNNING:
        return Health(False, f"{node.name}'s SQL thread is {r.sql.value}" + (f": {r.last_sql_error}" if r.last_sql_error else ""))
    flavor = flavor_of(node, cfg)
    if sourceless:
        return _sourceless_health(node, peer, flavor, cfg.maintainer.max_lag)
    unapplied = "" if in_atlas else flavor.unapplied(node)
    if unapplied:
        return Health(False, f"{node.name} has not applied its relay log ({unapplied})")
    if r.lag is None:
        return Health(False, f"{node.name}'s lag is unknown")
    if r.lag > cfg.maintainer.max_lag:
        return Health(False, f"{node.name} lags {r.lag}s (> max_lag {cfg.maintainer.max_lag}s)")
    if not peer.reachable:
        return Health(None, f"{peer.name} is not reachable, so {node.name}'s errant GTIDs cannot be checked")
    errant = flavor.errant(node, peer)
    if errant:
        return Health(False, f"{node.name} has errant GTIDs {errant}")
    return Health(True, f"{node.name} is a healthy replica of {peer.name} (lag {r.lag}s)")


def _sourceless_health(node: NodeState, peer: NodeState, flavor: flavors.Flavor, max_lag: int) -> Health:
    """A listed replica whose IO thread reconnects: staleness is the seconds since it last
    received anything (Seconds_Behind_Master is NULL without a source connection)."""
    r = node.replica
    assert r is not None
    stale = r.received_ago
    if stale is None:
        return Health(False, f"{node.name}'s IO thread is connecting and when it last received from its source is not known")
    if stale > max_lag:
        return Health(False, f"{node.name}'s IO thread is connecting: nothing received for {stale:.0f}s (> max_lag {max_lag}s)")
    unapplied = flavor.unapplied(node)
    if unapplied:
        return Health(None, f"{node.name}'s IO thread is connecting and it still applies what it received ({unapplied})")
    if peer.reachable:
        errant = flavor.errant(node, peer)
        if errant:
            return Health(False, f"{node.name} has errant GTIDs {errant}")
    return Health(True, f"{node.name} keeps serving reads: its IO thread is connecting, and it applied everything it "
                        f"received {stale:.0f}s ago (at most max_lag {max_lag}s)")


def _remove_own_backend(cfg: Config, why: str, after_rw_up: bool = False) -> List[Step]:
    """This node's read-only entry out of every Atlas. ``after_rw_up`` (a new master): only
    once that Atlas's read/write backend is up again, as until then this node is the only
    server that Atlas can send reads to (the maintainer removes it later otherwise)."""
    return [RemoveBackend(a.name, cfg.me.atlas_address, why, after_rw_up) for a in cfg.atlas]


def _rw_offline(cfg: Config, why: str, unless_open: str = "") -> List[Step]:
    """No safe writer: every Atlas's read/write backend offline, so that Atlas's checker cannot
    mark a still read-only server `up` as the writer (clients would get error 1290)."""
    return [SetRwOffline(a.name, "", why, unless_open) for a in cfg.atlas]


def _rw_online(cfg: Config, why: str) -> List[Step]:
    return [SetRwOnline(a.name, "", why) for a in cfg.atlas]


def _no_writer_after_fault(view: ClusterView) -> bool:
    """FAULT/STOP here: is there no safe writer now? Not while the peer is writable; nor when
    this node is a read-only replica of a reachable peer (it was not the writer)."""
    me, peer = view.me, view.peer
    if peer.writable:
        return False
    return not (me.reachable and me.read_only and peer.reachable and me.replicates_from(peer.host, peer.port))


def decide(view: ClusterView, event: str, cfg: Config, force: bool = False, operator: bool = False, rewind: bool = False,
           ignore_catchup: bool = False, ignore_anti_flapping: bool = False) -> Plan:
    """The plan for a keepalived event (or an operator's promote/demote) on this node.

    Each override skips one gate of a promotion: ``ignore_catchup`` the catch-up (nothing
    unapplied, no SQL error, no divergence), ``ignore_anti_flapping`` the block; ``force``
    (the deprecated ``orch promote --force``) is both. None skips the fence.

    In maintenance mode (orch pause) a keepalived event's plan keeps only the fences of this
    node, the rest withheld (pause.paused_plan); an operator's command runs, with a warning."""
    if event == MASTER:
        catchup = "--force" if force else ("--ignore-catchup" if ignore_catchup else "")
        antiflapping = "--force" if force else ("--ignore-anti-flapping" if ignore_anti_flapping else "")
        plan = decide_master(view, cfg, operator=operator, ignore_catchup=catchup, ignore_anti_flapping=antiflapping)
    elif event == BACKUP:
        plan = decide_backup(view, cfg, operator, rewind=rewind)
    elif event in (FAULT, STOP, DELETED):
        plan = decide_fault(view, cfg, event)
    else:
        raise ValueError(f"unknown event {event!r}")
    if view.paused is None:
        return plan
    if operator or (event == MASTER and antiflap.planned_switchover(view)):
        # An operator's command, or the MASTER an orch switchover hands the VIP over for.
        return replace(plan, warnings=plan.warnings + (pause_warning(view) or "",))
    return paused_plan(view, plan, view.me.name)


def decide_master(view: ClusterView, cfg: Config, operator: bool = False, ignore_catchup: str = "",
                  ignore_anti_flapping: str = "") -> Plan:
    """MASTER: promote this node. ``ignore_catchup`` / ``ignore_anti_flapping``: the flag that
    skips that gate, as the warnings name it ("" : the gate holds)."""
    me, peer = view.me, view.peer
    force = ignore_catchup
    warnings: Tuple[str, ...] = ()
    if view.holds_vip is False:
        if not operator:
            return Plan(f"no action: stale MASTER event, {me.name} does not hold VIP {cfg.keepalived.vip}", outcome=NOOP)
        warnings += (f"{me.name} does not hold VIP {cfg.keepalived.vip}: clients will not reach it until keepalived moves it",)
    if not me.reachable:
        state = "answers, but unusably" if me.alive else "is not reachable"
        return Plan(f"refusing to promote {me.name}: its server {state} ({me.error})", outcome=REFUSED, warnings=warnings)
    flavor = flavor_of(me, cfg)
    # Fenced means every read-only switch the flavor has (MySQL: super_read_only too).
    peer_open = peer.reachable and not flavor_of(peer, cfg).is_fenced(peer)
    r = me.replica
    configured = r is not None and r.configured
    if me.writable and not peer_open and not configured:
        return Plan(f"no action: {me.name} is already the writable master", outcome=NOOP, warnings=warnings)
    if operator and view.holds_vip is False and peer.reachable and not me.writable:
        # keepalived keeps the VIP where it is: opening this node would leave the writer
        # without the VIP (and a healthy master fenced). A planned move goes through keepalived.
        what = "is the writable master and" if peer_open else "is read-only, but"
        return Plan(
            f"refusing to promote {me.name}: {peer.name} {what} this host does not hold VIP {cfg.keepalived.vip}, so "
            f"clients would not reach {me.name}; to move the master here, run `orch switchover` on {peer.name}'s host "
            f"(it fences {peer.name}, lets {me.name} catch up and hands the VIP over through keepalived)",
            outcome=REFUSED, warnings=warnings)
    if not peer.reachable and view.witness is False and not operator:
        # Two nodes cannot tell a dead peer from their own isolation; the witness can.
        return Plan(
            f"refusing to promote {me.name}: {peer.name} does not answer and neither does the witness {cfg.failover.witness}: "
            f"{me.name} may be the isolated node, and its peer a working master (orch promote overrides)",
            outcome=REFUSED, warnings=warnings,
        )
    if peer.alive:
        # No override: a server that answers may still take writes, and orch cannot fence it.
        return Plan(
            f"refusing to promote {me.name}: {peer.name} is alive but cannot be fenced ({peer.error}); "
            f"it may still take writes, and two writable masters fork the data",
            outcome=REFUSED, warnings=warnings,
        )

    # The write token (etcd: configured): refused without it; its steps run right before the re-check.
    no_token, token_steps = open_gate(view, cfg, operator)
    if no_token:
        return Plan(f"refusing to promote {me.name}: {no_token}", outcome=REFUSED, warnings=warnings)
    steps: List[Step] = []
    if peer_open:
        steps.append(Fence(peer.name))
    if me.writable:
        steps += token_steps
        if configured:
            steps += [StopReplica(me.name), ResetReplica(me.name)]
        steps += _remove_own_backend(cfg, f"{me.name} is the master now", after_rw_up=True)
        if peer_open:
            return Plan(f"both servers are writable: fencing {peer.name}, {me.name} stays the master", tuple(steps), ACT, warnings)
        return Plan(f"{me.name} is writable but still has replication configured: removing it", tuple(steps), ACT, warnings)

    # Refusals come before any step: a refused promotion changes nothing. Only a failover
    # (writes moving from the peer) is ever blocked; re-opening the last writer never is.
    blocked = antiflap.block_reason(view, cfg)
    if blocked and not ignore_anti_flapping:
        return Plan(f"refusing to promote {me.name}: {blocked}", outcome=REFUSED, warnings=warnings)
    if blocked:
        warnings += (f"{ignore_anti_flapping}: promoting despite the {blocked.split(';')[0]}",)
    if view.promotion_error and cfg.failover.block_seconds > 0:
        warnings += (f"anti-flapping record unreadable ({view.promotion_error}): not blocking (orch_meta grants? see docs/install.md)",)
    if r is not None and r.sql_error:
        text = f"{me.name}'s SQL thread stopped on error {r.last_sql_errno}: {r.last_sql_error}"
        if not force:
            return Plan(
                f"refusing to promote {me.name}: {text}; its data may be incomplete (orch promote --ignore-catchup overrides)",
                outcome=REFUSED, warnings=warnings,
            )
        warnings += (f"{force}: promoting although {text}",)
    errant = lacking = ""
    rewind: Optional[Rewind] = None
    # A fenced peer pointed at this node has conceded (a stale writer that fenced itself, or a
    # node mid-rewind): whatever it has that this node lacks is its own tail, to roll back.
    conceded = peer.reachable and not peer_open and peer.replicates_from(me.host, me.port)
    if peer.reachable:
        errant = flavor.errant(me, peer)
        lacking = flavor.lacking(peer.binlog_pos, me)
        if lacking and conceded:
            warnings += (f"{peer.name} has {lacking} that {me.name} lacks, but it is fenced and replicates from {me.name}: "
                         f"its own tail (never acknowledged, rolled back by it), not followed",)
            lacking = ""
        if errant and lacking:
            text = f"{me.name} and {peer.name} have diverged: {me.name} has {errant} that {peer.name} lacks, and lacks {lacking}"
            if not force and _may_rewind_to_follow(me, cfg, flavor):
                # The peer's transactions were acknowledged; this node's tail, if the Rewind
                # step proves it, never was: roll it back, then take the peer's history.
                rewind = Rewind(me.name, peer.name, errant, proven=True)
                warnings += (f"{text}: rolling back {me.name}'s {errant} if proven never acknowledged (saved first), "
                             f"then replicating {peer.name}'s {lacking}",)
            elif not force:
                return Plan(
                    f"refusing to promote {me.name}: {text}; either way one side's transactions would be lost "
                    f"(reconcile by hand; orch promote --ignore-catchup keeps only {me.name}'s)",
                    outcome=REFUSED, warnings=warnings,
                )
            warnings += (f"{force}: promoting although {text}; {peer.name}'s {lacking} will not be on the new master",)
        elif errant:
            warnings += (f"{me.name} has transactions {peer.name} lacks (errant GTIDs {errant}); they become part of the new master's history",)

    unapplied = flavor.unapplied(me) if configured else ""
    timeout = cfg.failover.catchup_timeout
    preserved = False
    if rewind is not None:
        if configured and r is not None and (r.io is not ThreadState.STOPPED or r.sql is not ThreadState.STOPPED):
            steps.append(StopReplica(me.name))
        steps.append(rewind)
        errant = ""  # rolled back by the step (or the plan stops there)
        preserved = True  # the GTID state is new: point replication afresh
    if configured and r is not None and r.sql is ThreadState.STOPPED and unapplied:
        if r.io is ThreadState.STOPPED:
            steps.append(PreserveRelayLog(me.name))
            preserved = True
        steps.append(StartSqlThread(me.name))
    # Follow the peer when it has (or, fenced just now, may still get) transactions this node lacks.
    follow = peer.reachable and not errant and bool(lacking or peer_open)
    pointed = configured and r is not None and r.auto_position and me.replicates_from(peer.host, peer.port) and not preserved
    following = pointed and r is not None and r.io in (ThreadState.RUNNING, ThreadState.CONNECTING) and r.sql is ThreadState.RUNNING
    if follow and not following:
        if unapplied:
            # Drained first: re-pointing (or a GTID-mode START SLAVE) drops the relay log.
            steps.append(CatchUp(me.name, None, timeout, bool(force)))
        if pointed:
            steps.append(StartReplica(me.name))
        else:
            if configured:
                steps.append(StopReplica(me.name))
            steps += [ChangeSource(me.name, peer.name, peer.host, peer.port), StartReplica(me.name)]
        configured = True
    steps.append(CatchUp(me.name, peer.name if peer.reachable and not conceded else None, timeout, bool(force)))
    # Writes open only on a state read just now (the VIP and the peer may have changed
    # during a long catch-up); a failed re-check leaves replication as it was.
    recheck = Recheck(me.name, peer.name if peer.reachable else None, cfg.keepalived.vip if view.holds_vip else "")
    # The token before the re-check: once it is taken, nobody else can open; the re-check then
    # proves the peer did not open just before.
    steps += token_steps
    if recheck.peer or recheck.vip:
        steps.append(recheck)
    if configured:
        # Applying stops before writes open; the IO thread is stopped after, because
        # stopping it can take seconds when the old master vanished with a live socket.
        steps.append(StopSqlThread(me.name))
    if cfg.failover.semi_sync and (me.semisync is None or me.semisync.error or me.semisync.enabled):
        # The peer cannot replicate from this node yet: waiting for it would block every
        # commit. The maintainer switches the wait back on once the peer has caught up.
        steps.append(SemiSyncWait(me.name, False, f"{peer.name} does not replicate from {me.name} yet"))
    steps.append(SetWritable(me.name))
    kind = antiflap.promotion_kind(view, cfg, operator)
    if kind:
        steps.append(RecordPromotion(me.name, kind))  # right after writes open: a later failed step must not lose it
    if configured:
        steps += [StopReplica(me.name), ResetReplica(me.name)]
    # The Atlas steps and hooks run in their own phases (plan.py): Plan puts them in place.
    steps += _rw_offline(cfg, f"no safe writer until {me.name} is open")
    steps += _rw_online(cfg, f"{me.name} is the writable master") + _remove_own_backend(cfg, f"{me.name} is the master now", after_rw_up=True)
    if peer_open:
        reason = f"promoting {me.name}: fencing {peer.name} (still writable) first, then applying everything received"
    elif lacking and follow:
        reason = f"promoting {me.name}: {peer.name} is read-only but has {lacking} that {me.name} lacks: replicating it first"
    elif peer.reachable:
        reason = f"promoting {me.name}: {peer.name} is read-only, applying everything received first"
    else:
        reason = f"promoting {me.name}: {peer.name} is not reachable ({peer.error}), applying the relay log first"
    reason += f"; {antiflap.opening_kind(view)}"  # orch status and the journal tell a failover from a re-opening
    if cfg.hooks.pre_failover or cfg.hooks.post_failover:
        steps += hook_steps(cfg, "pre_failover", me.name, peer.name, reason) + hook_steps(cfg, "post_failover", me.name, peer.name, reason)
    return Plan(reason, tuple(steps), ACT, warnings)


def hook_steps(cfg: Config, event: str, new_master: str, old_master: str, reason: str) -> List[Step]:
    """One RunHook step per configured hook of ``event`` (hooks.<event>), with the promotion's
    context (the executor adds ORCH_RUN_ID). orch switchover may use it for its own phases."""
    context = (("ORCH_EVENT", event), ("ORCH_CLUSTER", cfg.cluster), ("ORCH_NODE", cfg.self_name),
               ("ORCH_OLD_MASTER", old_master), ("ORCH_NEW_MASTER", new_master), ("ORCH_REASON", reason))
    return [RunHook(event, argv, cfg.hooks.timeout, context) for argv in cfg.hooks.of(event)]


def _may_rewind_to_follow(me: NodeState, cfg: Config, flavor: flavors.Flavor) -> bool:
    """A diverged node may roll its own tail back (when the Rewind step proves it was never
    acknowledged) and follow its peer: failover.auto_rewind with semi_sync, a flavor that
    can rewind, and nothing received left to apply (the relay log would be lost)."""
    from .plan import REWIND_UNSUPPORTED

    if not (cfg.failover.auto_rewind and cfg.failover.semi_sync) or flavor.name in REWIND_UNSUPPORTED:
        return False
    return not (me.replica is not None and me.replica.configured and flavor.unapplied(me))


def decide_backup(view: ClusterView, cfg: Config, operator: bool = False, rewind: bool = False) -> Plan:
    """The BACKUP plan: fence this node, then replicate from the writable peer. Errant GTIDs
    refuse, unless the tail is rolled back first: on the operator's word (``rewind``,
    orch demote --rewind), or automatically (failover.auto_rewind with failover.semi_sync;
    the Rewind step proves the tail was never acknowledged before it changes anything)."""
    me, peer = view.me, view.peer
    if view.holds_vip is True and not operator:
        return Plan(f"no action: stale BACKUP event, {me.name} holds VIP {cfg.keepalived.vip}", outcome=NOOP)
    if view.holds_vip is True and me.writable and not peer.writable:
        # The maintainer would re-open it (the VIP holder must be writable): a fence here is
        # only a write outage. A planned move goes through keepalived.
        return Plan(
            f"refusing to demote {me.name}: it is the writable master and holds VIP {cfg.keepalived.vip}; fenced, it would "
            f"be opened again by the maintainer (the VIP holder must be writable) after a write outage; to make "
            f"{peer.name} the master, run `orch switchover` here", outcome=REFUSED)
    if not operator and cfg.etcd is not None and view.token is not None and view.token.held_by(me.name) and me.writable:
        # keepalived gave the VIP to a host without the token (VRRP after a split heals, a frozen host
        # resumed with the higher priority): the writer stays. A peer writable without the token
        # fences itself (the token rule); the read-only VIP holder hands the VIP back. Fencing here
        # would release the token to a peer whose history lacks this node's acknowledged writes.
        return Plan(f"no action: {me.name} is the writable master and holds the write token; {peer.name} got the VIP "
                    f"without it and hands it back", outcome=NOOP)
    if me.alive:
        return Plan(
            f"cannot fence {me.name}: its server answers, but unusably ({me.error}); it may still take writes",
            tuple(_remove_own_backend(cfg, f"{me.name} cannot be observed")), REFUSED,
        )
    if not me.reachable:
        return Plan(
            f"nothing to fence: {me.name}'s server is not reachable ({me.error}); the next BACKUP or orch demote completes this",
            tuple(_remove_own_backend(cfg, f"{me.name} is down")), INCOMPLETE,
        )
    flavor = flavor_of(me, cfg)
    steps: List[Step] = []
    if not flavor.is_fenced(me):
        steps.append(Fence(me.name))
    fenced = "fencing" if steps else "fenced"
    steps += release_steps(view, cfg, f"BACKUP: {me.name} is fenced")

    def own_backend(health: Optional[Health] = None) -> List[Step]:
        if health is not None and health.healthy is True:
            return []
        return _remove_own_backend(cfg, f"{me.name} is not a healthy replica")

    if not peer.reachable:
        state = "answers, but unusably" if peer.alive else "is not reachable"
        return Plan(
            f"{fenced} {me.name}; {peer.name} {state} ({peer.error}): staying read-only until it is back",
            tuple(steps + own_backend()), INCOMPLETE,
        )
    if not peer.writable:
        r = me.replica
        if r is not None and r.running and me.replicates_from(peer.host, peer.port):
            return Plan(f"{fenced} {me.name}; {peer.name} is read-only too, {me.name} keeps replicating from it", tuple(steps + own_backend()), ACT if steps else NOOP)
        return Plan(
            f"{fenced} {me.name}; {peer.name} is read-only too: no writable master to follow yet, staying read-only",
            tuple(steps + own_backend()), INCOMPLETE,
        )
    errant = flavor.errant(me, peer)
    if errant:
        from .plan import REWIND_UNSUPPORTED

        text = f"{me.name} has errant GTIDs {errant} that {peer.name} lacks"
        automatic = cfg.failover.auto_rewind and cfg.failover.semi_sync
        if flavor.name in REWIND_UNSUPPORTED:
            return Plan(f"{fenced} {me.name}; refusing to replicate from {peer.name}: {text}; {REWIND_UNSUPPORTED[flavor.name]}",
                        tuple(steps + own_backend()), REFUSED)
        if rewind or automatic:
            from .plan import MarkRewind

            steps.append(MarkRewind(me.name))
            r = me.replica
            if r is not None and r.configured:
                steps.append(StopReplica(me.name))
            steps += [Rewind(me.name, peer.name, errant, proven=not rewind), ChangeSource(me.name, peer.name, peer.host, peer.port),
                      StartReplica(me.name)]
            how = "on the operator's word" if rewind else "automatically, if proven never acknowledged"
            return Plan(f"{fenced} {me.name}; {text}: rolling them back ({how}, saved first), then replicating from {peer.name}",
                        tuple(steps + own_backend()))
        return Plan(
            f"{fenced} {me.name}; refusing to replicate from {peer.name}: {text} "
            f"(replicating would fork the data; orch demote --rewind rolls them back, saved first)",
            tuple(steps + own_backend()), REFUSED,
        )
    r = me.replica
    pointed = r is not None and r.configured and r.auto_position and me.replicates_from(peer.host, peer.port)
    if pointed and r is not None:
        if r.running or r.io is ThreadState.CONNECTING and r.sql is ThreadState.RUNNING:
            health = replica_health(view, me, peer, cfg, in_atlas=True)  # removal only: the staying check
            return Plan(
                f"{fenced} {me.name}; it already replicates from {peer.name}" + ("" if steps else ": nothing to do"),
                tuple(steps + own_backend(health)), ACT if steps or own_backend(health) else NOOP,
            )
        if r.sql_error:
            return Plan(
                f"{fenced} {me.name}; replication from {peer.name} is stopped by SQL error {r.last_sql_errno}: {r.last_sql_error} "
                f"(fix it by hand, then run orch demote)",
                tuple(steps + own_backend()), REFUSED,
            )
        steps.append(StartReplica(me.name))
        return Plan(f"{fenced} {me.name}; restarting its replication from {peer.name}", tuple(steps + own_backend()))
    if r is not None and r.configured:
        steps.append(StopReplica(me.name))
    steps += [ChangeSource(me.name, peer.name, peer.host, peer.port), StartReplica(me.name)]
    return Plan(
        f"{fenced} {me.name}; {peer.name} is the writable master and has every GTID {me.name} has: replicating from it",
        tuple(steps + own_backend()),
    )


def decide_fault(view: ClusterView, cfg: Config, event: str) -> Plan:
    me = view.me
    # The peer's MASTER event may be opening it right now: re-read it after the offline.
    unless = view.peer.name if view.peer.reachable else ""
    offline = _rw_offline(cfg, f"{event} on {me.name}: no safe writer", unless) if _no_writer_after_fault(view) else []
    if me.alive:
        return Plan(
            f"{event}: cannot fence {me.name}: its server answers, but unusably ({me.error}); it may still take writes",
            tuple(offline + _remove_own_backend(cfg, f"{me.name} cannot be observed")), REFUSED,
        )
    if not me.reachable:
        return Plan(
            f"{event}: {me.name}'s server is not reachable ({me.error}): nothing to fence",
            tuple(offline + release_steps(view, cfg, f"{event}: {me.name}'s server is down")
                  + _remove_own_backend(cfg, f"{me.name} is down")), INCOMPLETE,
        )
    steps: List[Step] = list(offline)
    fencing = not flavor_of(me, cfg).is_fenced(me)
    if fencing:
        steps.append(Fence(me.name))
    # Only once fenced (a failed fence stops the plan): the peer may open at once.
    steps += release_steps(view, cfg, f"{event}: {me.name} is fenced")
    health = replica_health(view, me, view.peer, cfg, in_atlas=True)  # removal only: the staying check
    if health.healthy is not True:
        steps += _remove_own_backend(cfg, health.reason)
    if fencing:
        return Plan(f"{event}: fencing {me.name}, it must not take writes", tuple(steps))
    if steps:
        return Plan(f"{event}: {me.name} is read-only already; {health.reason}", tuple(steps))
    return Plan(f"no action: {event}, {me.name} is read-only already", outcome=NOOP)
