"""A Plan is a reason sentence plus small frozen steps; the executor only interprets them,
and reports a StepResult for each (journaled as they are).

Each step class declares its ``phase`` (when in a run it goes) and whether it is
``best_effort`` (its failure is a warning and the run goes on). A Plan sorts its steps
stably by phase when it is built, so the plan printed (--dry-run, the journal) is the
order the executor runs.

The results live here, not in execute.py, so that the Atlas steps (atlas/apply.py) can
report theirs without importing the executor that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Union

from .errors import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, OrchError

# Outcomes and the exit codes they map to.
NOOP = "noop"  # nothing to do: the state is already right
ACT = "act"  # the steps bring the state where it should be
REFUSED = "refused"  # unsafe: steps (if any) only make things safer; exit 1
INCOMPLETE = "incomplete"  # safe for now, more to do once something comes back; exit 3
PAUSED = "paused"  # maintenance mode (orch pause): what would have been done is withheld, journaled; exit 0

EXIT_CODES = {NOOP: EXIT_OK, ACT: EXIT_OK, REFUSED: EXIT_FAILED, INCOMPLETE: EXIT_INCOMPLETE, PAUSED: EXIT_OK}


class Phase(IntEnum):
    """When a step runs; a plan runs its phases in this order (the executor's failure policy, execute.py)."""

    PRE_HOOK = 0  # before anything changes, Atlas included; a failure aborts the plan
    ATLAS_FIRST = 1  # the read/write backend offline: no safe writer from here on (one try per Atlas)
    DATABASE = 2  # the servers' steps (and keepalived's): in order, the first failure stops the plan
    ATLAS = 3  # once the database steps ran; SetRwOnline runs even when a step after the opening failed
    POST_HOOK = 4  # last, after Atlas lets writes through: a slow hook must not hold them


PRE_HOOK, ATLAS_FIRST, DATABASE, ATLAS, POST_HOOK = Phase


@dataclass(frozen=True)
class NodeStep:
    """A step acting on one server; subclasses only name the action."""

    node: str
    template: ClassVar[str] = ""  # each subclass names its action
    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    def describe(self) -> str:
        return self.template.format(node=self.node)


class Fence(NodeStep):
    """Make a server read-only (and super_read_only where the flavor has it), then verify."""

    template = "fence {node}: set read_only on and verify it"


class PreserveRelayLog(NodeStep):
    """Keep what was received: the flavor's statements (if any) so that starting the SQL
    thread with both threads stopped applies the relay log instead of discarding it."""

    template = "keep {node}'s relay log: apply it from the SQL thread's relay position (file/position mode)"


class StartSqlThread(NodeStep):
    template = "start the SQL thread on {node} to apply its relay log"


class StartReplica(NodeStep):
    template = "start replication on {node}"


class StopSqlThread(NodeStep):
    """Stop applying: once it is stopped nothing replicated can land after writes open."""

    template = "stop the SQL thread on {node}: nothing more is applied"


class StopReplica(NodeStep):
    template = "stop replication on {node}"


class MarkRewind(NodeStep):
    """Before a rewind stops the node's replication: a mark its peer's orch sees, so that a
    quiet master does not take the node's errant transactions (being rolled back) for newer
    history and yield to it (invariants.stale_writer). Best effort: without it the rewind is
    as safe, the master may only hand the VIP over."""

    template = "mark {node} as being rewound (a lock its peer's orch sees while its binlog is unchanged)"
    best_effort: ClassVar[bool] = True


class ResetReplica(NodeStep):
    template = "reset replication on {node} (forget the old source)"


@dataclass(frozen=True)
class ChangeSource:
    """Point a server's replication at its peer (GTID auto-positioning)."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    node: str
    source: str
    host: str
    port: int

    def describe(self) -> str:
        return f"point {self.node} at {self.source} ({self.host}:{self.port}) with GTID auto-positioning"


@dataclass(frozen=True)
class CatchUp:
    """Wait until node applied everything it received and, when ``peer`` is set,
    everything the peer executed (read after the peer was fenced)."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    node: str
    peer: Optional[str]
    timeout: float
    force: bool = False  # orch promote --ignore-catchup (or the deprecated --force)

    def describe(self) -> str:
        what = "its relay log" + (f" and everything {self.peer} executed" if self.peer else "")
        tail = " (--ignore-catchup: promote even if it does not)" if self.force else "; refuse to promote if it does not"
        return f"wait up to {self.timeout:g}s until {self.node} has applied {what}{tail}"


@dataclass(frozen=True)
class Recheck:
    """Right before writes open: this host still holds the VIP, and the peer is still read-only."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    node: str
    peer: Optional[str]
    vip: str = ""

    def describe(self) -> str:
        what = [f"this host still holds VIP {self.vip}"] if self.vip else []
        if self.peer:
            what.append(f"{self.peer} is still read-only")
        return "re-check that " + " and ".join(what) + f"; otherwise {self.node} stays read-only" if what else "re-check: nothing to check"


@dataclass(frozen=True)
class SemiSyncWait:
    """Switch a master's semi-sync wait on (no fallback) or off; recorded in state_dir first
    when switched off, after when switched on (a rewind trusts the record)."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False  # its own: a refused switch is a warning, a server that is down fails the plan

    node: str
    on: bool
    why: str = ""

    def describe(self) -> str:
        what = "on (commits wait for the replica, no fallback)" if self.on else "off (commits do not wait for a replica)"
        return f"switch {self.node}'s semi-sync wait {what}" + (f": {self.why}" if self.why else "")


class SemiSyncReplica(NodeStep):
    """The replica side: acknowledge what it receives (restarts the IO thread to take effect)."""

    template = "make {node} acknowledge as a semi-sync replica (restart its IO thread)"


class SetWritable(NodeStep):
    template = "make {node} writable (read_only off)"


@dataclass(frozen=True)
class HandOver:
    """Write keepalived's track file (keepalived.track_file, weight 0): 1 puts this node's
    VRRP instance in FAULT, so the VIP moves to the peer; 0 lets it take part again."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    path: str
    give_up: bool
    why: str = ""

    def describe(self) -> str:
        what = ("write 1: keepalived puts this node in FAULT and the VIP moves to the peer" if self.give_up
                else "write 0: this node takes part in VRRP again (as BACKUP)")
        return f"{self.path}: {what}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class AwaitPromotion:
    """A switchover's hand-over: wait until the VIP has left this host (when ``vip`` is
    checked) and ``node`` is writable, i.e. keepalived moved the VIP and the node's MASTER
    event promoted it."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    node: str
    vip: str
    timeout: float
    leave_timeout: float = 3.0  # keepalived reacts to its track file at once: a VIP still here past this is a misconfiguration
    # Once the VIP has left: the node takes it and opens within this, or its keepalived is not
    # taking part (frozen, stopped) and the switchover is rolled back (0: only ``timeout``).
    take_timeout: float = 0.0

    def describe(self) -> str:
        where = f"VIP {self.vip} has left this host (within {self.leave_timeout:g}s) and " if self.vip else ""
        take = f", within {self.take_timeout:g}s of the VIP leaving" if self.vip and self.take_timeout else ""
        return f"wait up to {self.timeout:g}s until {where}{self.node} is writable{take} (its MASTER event promoted it)"


@dataclass(frozen=True)
class AwaitVip:
    """An aborted hand-over: wait until keepalived has brought the VIP back to this host."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    vip: str
    timeout: float

    def describe(self) -> str:
        return f"wait up to {self.timeout:g}s until keepalived brings VIP {self.vip} back to this host"


@dataclass(frozen=True)
class RecordSwitchover:
    """Anti-flapping (orchestrator/antiflap.py): a ``switchover`` row naming ``candidate``, written
    on ``node`` (the old master, still writable) so that it replicates to the candidate before
    the hand-over: the candidate's MASTER event is then the planned promotion, neither blocked
    nor recorded as an automatic one. Not best effort: without it that MASTER could be refused."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    node: str
    candidate: str

    def describe(self) -> str:
        return (f"record the switchover to {self.candidate} on {self.node} (orch_meta.promotions, replicated): "
                f"{self.candidate}'s MASTER event is the planned promotion, not an automatic one")


@dataclass(frozen=True)
class RemoveBackend:
    """Remove a read-only backend from one Atlas (looked up by address, never by number).

    ``after_rw_up``: only once that Atlas's read/write backend is ``up`` (a new master's own
    entry: until then it is the only server that Atlas can send reads to); otherwise the
    step is skipped and the maintainer removes it later.
    """

    phase: ClassVar[Phase] = ATLAS
    best_effort: ClassVar[bool] = True  # the maintainer retries

    atlas: str
    address: str
    why: str = ""
    after_rw_up: bool = False

    def describe(self) -> str:
        when = ", once its read/write backend is up" if self.after_rw_up else ""
        return f"remove read-only backend {self.address} from Atlas {self.atlas}" + (f" ({self.why}{when})" if self.why else when)


@dataclass(frozen=True)
class AddBackend:
    """Add a read-only backend to one Atlas (best effort)."""

    phase: ClassVar[Phase] = ATLAS
    best_effort: ClassVar[bool] = True  # the maintainer retries

    atlas: str
    address: str
    why: str = ""

    def describe(self) -> str:
        return f"add read-only backend {self.address} to Atlas {self.atlas}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class PersistBackends:
    """Rewrite an Atlas's config file so that it lists the runtime read-only backends."""

    phase: ClassVar[Phase] = ATLAS
    best_effort: ClassVar[bool] = True  # the maintainer retries

    atlas: str
    config_file: str = ""
    runtime: Tuple[str, ...] = ()  # Atlas's read-only backends as observed
    listed: Tuple[str, ...] = ()  # what the file lists

    def describe(self) -> str:
        return (
            f"rewrite {self.config_file} so that Atlas {self.atlas} restarts with read-only backends "
            f"{','.join(self.runtime) or '(none)'} (the file lists {','.join(self.listed) or '(none)'})"
        )


@dataclass(frozen=True)
class SetRwOffline:
    """SET OFFLINE an Atlas's read/write backend (every rw entry when ``address`` is empty)
    while there is no safe writer, so that its checker cannot mark a read-only server
    ``up`` as the writer. Runs before the database steps, best effort.

    ``unless_open``: the peer, re-read once right after: a FAULT's offline can land after the
    peer's MASTER event (another host, another process) opened it and set the writer online;
    an open peer gets the writer back online at once."""

    phase: ClassVar[Phase] = ATLAS_FIRST
    best_effort: ClassVar[bool] = True  # the maintainer retries

    atlas: str
    address: str = ""
    why: str = ""
    unless_open: str = ""

    def describe(self) -> str:
        what = self.address or "read/write backend"
        return f"set {what} offline in Atlas {self.atlas}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class SetRwOnline:
    """SET ONLINE an Atlas's offline read/write backend (every offline rw entry when
    ``address`` is empty): Atlas's checker takes it ``up`` within its cycle."""

    phase: ClassVar[Phase] = ATLAS
    best_effort: ClassVar[bool] = True  # the maintainer retries

    atlas: str
    address: str = ""
    why: str = ""

    def describe(self) -> str:
        what = self.address or "read/write backend"
        return f"set {what} online in Atlas {self.atlas}" + (f" ({self.why})" if self.why else "")


# Flavors whose divergent tail orch cannot roll back, and what to do instead (docs/cli.md, Rewind).
REWIND_UNSUPPORTED = {
    "mysql": "MySQL: rewind is not supported; rebuild the node from the peer: stop writes to it, CLONE INSTANCE FROM "
             "the peer (8.0.17+; or restore a fresh backup of the peer), then orch demote (docs/cli.md, Rewind)",
}


@dataclass(frozen=True)
class Rewind:
    """Roll back a fenced node's errant transactions (saved under state_dir/rewind/ first) and
    put its GTID state at the last position it shares with ``peer``. ``proven``: the automatic
    path, which checks at execution that the tail was never acknowledged and refuses otherwise;
    False: an operator's ``orch demote --rewind``."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    node: str
    peer: str
    errant: str
    proven: bool

    def describe(self) -> str:
        why = "proven never acknowledged (semi-sync without fallback), checked first" if self.proven else "on the operator's word"
        return (f"rewind {self.node}: save, then roll back its errant transactions {self.errant} that {self.peer} lacks "
                f"({why}), and reset its GTID state to the last position shared with {self.peer}")


@dataclass(frozen=True)
class RecordPromotion:
    """Anti-flapping (orchestrator/antiflap.py): a row in orch_meta.promotions on ``node``,
    which replicates to the peer: a promotion (kind failover or operator) or an operator's
    acknowledgement of one (kind ack, ``acks`` its run id). Best effort: a failure is a warning."""

    node: str
    kind: str
    acks: str = ""
    phase: ClassVar[Phase] = DATABASE  # right after SetWritable: a later failed step must not lose it

    @property
    def best_effort(self) -> bool:
        return self.kind != "ack"  # an operator's acknowledgement is the run's whole point

    def describe(self) -> str:
        if self.kind == "ack":
            return (f"record on {self.node} (orch_meta.promotions, replicated) that an operator acknowledged promotion "
                    f"{self.acks}: automatic promotions are allowed again")
        return (f"record this {'automatic' if self.kind == 'failover' else self.kind} promotion of {self.node} in "
                f"orch_meta.promotions (replicated; anti-flapping, best effort)")


@dataclass(frozen=True)
class AckLocally:
    """Acknowledge promotion ``acks`` on this host only (state_dir), when no server is writable
    to hold a replicated acknowledgement (a read-only server must not log a transaction of its own)."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    state_dir: str
    acks: str

    def describe(self) -> str:
        return (f"record in {self.state_dir} that an operator acknowledged promotion {self.acks}: automatic promotions "
                f"on this host are allowed again (no writable server holds a replicated acknowledgement)")


@dataclass(frozen=True)
class RecordPause:
    """Maintenance mode (orchestrator/pause.py): a pause or resume row in orch_meta.pause on
    the writable ``node``, which replicates to the peer. ``seconds``: a pause's length (0:
    until orch resume), measured by that server's clock."""

    node: str
    kind: str  # pause or resume
    seconds: float = 0.0
    reason: str = ""
    by: str = ""
    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    def describe(self) -> str:
        return f"record on {self.node} (orch_meta.pause, replicated) {_pause_words(self.kind, self.seconds, self.reason)}"


@dataclass(frozen=True)
class PauseLocally:
    """A pause or resume kept in this host's state_dir (pause.json), when no server is
    writable to hold a replicated row (a read-only server must not log a transaction of its own)."""

    state_dir: str
    kind: str
    seconds: float = 0.0
    reason: str = ""
    by: str = ""
    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    def describe(self) -> str:
        return f"record in {self.state_dir} (this host only) {_pause_words(self.kind, self.seconds, self.reason)}"


def _pause_words(kind: str, seconds: float, reason: str) -> str:
    if kind != "pause":
        return "that automatic actions resume"
    return ("a pause of automatic actions " + (f"for {seconds:g}s" if seconds else "until orch resume")
            + (f": {reason}" if reason else ""))


@dataclass(frozen=True)
class AcquireToken:
    """Take the write token in etcd (docs/etcd.md) for ``node``, under this host's lease: create
    it if nobody holds it, keep it if this node does, take it over from ``peer`` only once the
    peer is re-read fenced (or down with its lease run out). Waits up to ``wait`` seconds for a
    holder's lease to run out; past it, Refused: the node stays read-only."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    node: str
    peer: str
    wait: float = 0.0

    def describe(self) -> str:
        wait = f", waiting up to {self.wait:g}s for {self.peer}'s lease to run out" if self.wait else ""
        return (f"take the write token in etcd for {self.node} (create it, or take it over from {self.peer} only if "
                f"{self.peer} is fenced{wait}); without it {self.node} stays read-only")


@dataclass(frozen=True)
class ReleaseToken:
    """Give the write token up (delete it, only if ``node`` still holds it): the peer may open at
    once instead of waiting for the lease. Best effort: a release that fails costs the lease."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = True

    node: str
    why: str = ""

    def describe(self) -> str:
        return f"release {self.node}'s write token in etcd" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class HandOverToken:
    """A switchover: move the write token from ``node`` (fenced) to ``to``, under ``to``'s host
    lease, in one transaction (no moment where a third party could take it)."""

    phase: ClassVar[Phase] = DATABASE
    best_effort: ClassVar[bool] = False

    node: str
    to: str

    def describe(self) -> str:
        return f"hand the write token in etcd from {self.node} to {self.to} (under {self.to}'s host lease)"


@dataclass(frozen=True)
class RunHook:
    """Run one configured hook (orchestrator/hooks.py): an argv without a shell, context in
    ORCH_* environment variables (the executor adds ORCH_RUN_ID). A pre hook that fails or
    times out aborts the plan; a post hook is best effort and runs after everything else."""

    event: str  # pre_failover, post_failover (pre/post_switchover: orch switchover calls hooks.run_hooks)
    argv: Tuple[str, ...]
    timeout: float
    context: Tuple[Tuple[str, str], ...] = ()

    @property
    def post(self) -> bool:
        return self.event.startswith("post_")

    @property
    def phase(self) -> Phase:
        return POST_HOOK if self.post else PRE_HOOK

    @property
    def best_effort(self) -> bool:
        return self.post

    def describe(self) -> str:
        command = " ".join(self.argv)
        command = command if len(command) <= 160 else command[:157] + "..."
        what = "best effort" if self.post else "a failure or timeout aborts the promotion"
        return f"run {self.event} hook {command} (timeout {self.timeout:g}s; {what})"


Step = Union[
    Rewind, Fence, PreserveRelayLog, StartSqlThread, StartReplica, StopSqlThread, StopReplica, ResetReplica, ChangeSource, CatchUp,
    Recheck, SemiSyncWait, SemiSyncReplica, SetWritable, HandOver, AwaitPromotion, AwaitVip, RecordSwitchover, RemoveBackend,
    AddBackend, PersistBackends, SetRwOffline, SetRwOnline, RecordPromotion, AckLocally, RecordPause, PauseLocally, RunHook,
    AcquireToken, ReleaseToken, HandOverToken, MarkRewind,
]

AtlasStep = Union[RemoveBackend, AddBackend, PersistBackends, SetRwOffline, SetRwOnline]

# Every step type (tests/test_execute.py: each has a phase, and the executor a way to run it).
STEP_TYPES = (
    Rewind, Fence, PreserveRelayLog, StartSqlThread, StartReplica, StopSqlThread, StopReplica, ResetReplica, ChangeSource, CatchUp,
    Recheck, SemiSyncWait, SemiSyncReplica, SetWritable, HandOver, AwaitPromotion, AwaitVip, RecordSwitchover, RemoveBackend,
    AddBackend, PersistBackends, SetRwOffline, SetRwOnline, RecordPromotion, AckLocally, RecordPause, PauseLocally, RunHook,
    AcquireToken, ReleaseToken, HandOverToken, MarkRewind,
)
# The Atlas phases' steps: the executor hands each phase's steps to the Atlas runner at once
# (atlas/apply.py: one connection per Atlas).
ATLAS_PHASES = (ATLAS_FIRST, ATLAS)
ATLAS_STEPS = (RemoveBackend, AddBackend, PersistBackends, SetRwOffline, SetRwOnline)


@dataclass(frozen=True)
class Plan:
    """What a run decided: why (one sentence), the steps, and the outcome.

    The steps are kept in phase order (a stable sort: within a phase, as decided), so
    that render() and the journal show the order the executor runs them in.
    """

    reason: str
    steps: Tuple[Step, ...] = ()
    outcome: str = ACT
    warnings: Tuple[str, ...] = field(default=())
    # Maintenance mode: the steps a paused run would have run (their descriptions), journaled.
    withheld: Tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        phases = [step.phase for step in self.steps]
        if any(a > b for a, b in zip(phases, phases[1:])):
            object.__setattr__(self, "steps", tuple(sorted(self.steps, key=lambda step: step.phase)))

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def as_dict(self) -> Dict[str, Any]:
        """The plan as ``--dry-run --format json`` prints it (docs/cli.md): stable keys."""
        return {"reason": self.reason, "outcome": self.outcome, "exit_code": self.exit_code, "warnings": list(self.warnings),
                "steps": [{"step": type(step).__name__, "description": step.describe()} for step in self.steps]}

    def render(self) -> str:
        lines = [f"plan: {self.reason}"]
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        if not self.steps:
            lines.append("  (no steps)")
        for i, step in enumerate(self.steps, 1):
            lines.append(f"  {i}. {step.describe()}")
        for text in self.withheld:
            lines.append(f"  paused, not done: {text}")
        return "\n".join(lines)


@dataclass
class StepResult:
    """How one step went: ok, failed, skipped or warning, with its milliseconds."""

    step: str
    description: str
    result: str  # ok | failed | skipped | warning
    detail: str = ""
    ms: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "description": self.description, "result": self.result, "detail": self.detail, "ms": self.ms}


@dataclass
class RunResult:
    """Every step's result, and the error that stopped the plan (if one did)."""

    results: List[StepResult]
    error: Optional[OrchError] = None

    @property
    def failed(self) -> bool:
        return self.error is not None
