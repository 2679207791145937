"""A Plan is a reason sentence plus small frozen steps; the executor only interprets them,
and reports a StepResult for each (journaled as they are).

The results live here, not in execute.py, so that the Atlas steps (atlas/apply.py) can
report theirs without importing the executor that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional, Tuple, Union

if TYPE_CHECKING:
    from .errors import OrchError

# Outcomes and the exit codes they map to.
NOOP = "noop"  # nothing to do: the state is already right
ACT = "act"  # the steps bring the state where it should be
REFUSED = "refused"  # unsafe: steps (if any) only make things safer; exit 1
INCOMPLETE = "incomplete"  # safe for now, more to do once something comes back; exit 3

EXIT_CODES = {NOOP: 0, ACT: 0, REFUSED: 1, INCOMPLETE: 3}


@dataclass(frozen=True)
class NodeStep:
    """A step acting on one server; subclasses only name the action."""

    node: str
    template: ClassVar[str] = ""

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


class ResetReplica(NodeStep):
    template = "reset replication on {node} (forget the old source)"


@dataclass(frozen=True)
class ChangeSource:
    """Point a server's replication at its peer (GTID auto-positioning)."""

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

    node: str
    peer: Optional[str]
    timeout: float
    force: bool = False

    def describe(self) -> str:
        what = "its relay log" + (f" and everything {self.peer} executed" if self.peer else "")
        tail = " (--force: promote even if it does not)" if self.force else "; refuse to promote if it does not"
        return f"wait up to {self.timeout:g}s until {self.node} has applied {what}{tail}"


@dataclass(frozen=True)
class Recheck:
    """Right before writes open: this host still holds the VIP, and the peer is still read-only."""

    node: str
    peer: Optional[str]
    vip: str = ""

    def describe(self) -> str:
        what = [f"this host still holds VIP {self.vip}"] if self.vip else []
        if self.peer:
            what.append(f"{self.peer} is still read-only")
        return "re-check that " + " and ".join(what) + f"; otherwise {self.node} stays read-only" if what else "re-check: nothing to check"


class SetWritable(NodeStep):
    template = "make {node} writable (read_only off)"


@dataclass(frozen=True)
class RemoveBackend:
    """Remove a read-only backend from one Atlas (looked up by address, never by number)."""

    atlas: str
    address: str
    why: str = ""

    def describe(self) -> str:
        return f"remove read-only backend {self.address} from Atlas {self.atlas}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class AddBackend:
    """Add a read-only backend to one Atlas (best effort)."""

    atlas: str
    address: str
    why: str = ""

    def describe(self) -> str:
        return f"add read-only backend {self.address} to Atlas {self.atlas}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class PersistBackends:
    """Rewrite an Atlas's config file so that it lists the runtime read-only backends."""

    atlas: str
    config_file: str = ""
    runtime: Tuple[str, ...] = ()  # Atlas's read-only backends as observed
    listed: Tuple[str, ...] = ()  # what the file lists

    def describe(self) -> str:
        return (
            f"rewrite {self.config_file} so that Atlas {self.atlas} restarts with read-only backends "
            f"{','.join(self.runtime) or '(none)'} (the file lists {','.join(self.listed) or '(none)'})"
        )


Step = Union[
    Fence, PreserveRelayLog, StartSqlThread, StartReplica, StopSqlThread, StopReplica, ResetReplica, ChangeSource, CatchUp,
    Recheck, SetWritable, RemoveBackend, AddBackend, PersistBackends,
]

AtlasStep = Union[RemoveBackend, AddBackend, PersistBackends]
ATLAS_STEPS = (RemoveBackend, AddBackend, PersistBackends)


@dataclass(frozen=True)
class Plan:
    """What a run decided: why (one sentence), the steps in order, and the outcome."""

    reason: str
    steps: Tuple[Step, ...] = ()
    outcome: str = ACT
    warnings: Tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def render(self) -> str:
        lines = [f"plan: {self.reason}"]
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        if not self.steps:
            lines.append("  (no steps)")
        for i, step in enumerate(self.steps, 1):
            lines.append(f"  {i}. {step.describe()}")
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
