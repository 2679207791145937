"""Maintenance mode, pure: what a pause withholds, and the plans of ``orch pause`` / ``orch resume``.

The record lives where the anti-flapping record does (``orch_meta.pause``, read and written by
``orchestrator/pauses.py``; this host's state_dir when no server is writable); observation puts
the latest row in the view (``ClusterView.pause``). While a pause is in force nothing
automatic changes the cluster but this rule:

- **Fences of this node still run** (a FAULT, STOP or DELETED event; the maintainer's
  SPLIT-BRAIN or STALE self-fence). Fencing never forks data and never makes a second
  writer; not fencing a node whose server or link is failing leaves a writer that the VIP
  holder, once resumed, may open next to. Every other step (opening, re-pointing, rewinds,
  semi-sync switches, hand-overs, hooks, Atlas) is withheld and journaled as "paused, not done".
- An operator's command (``orch promote/demote/switchover``, ``operator=True``) is not paused.

Nothing here runs SQL or reads a file or a clock.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from .model import ClusterView
from .plan import ACT, INCOMPLETE, NOOP, PAUSED, REFUSED, Fence, PauseLocally, Plan, RecordPause

PAUSE = "pause"
RESUME = "resume"
KINDS = (PAUSE, RESUME)
MAX_REASON = 255  # orch_meta.pause.reason's width

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")


def parse_duration(text: str) -> float:
    """``--for``: seconds, or a number with s, m, h or d (30m, 2h, 1d, 90); ValueError naming
    what was expected otherwise."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise ValueError(f"expected a duration such as 90, 30m, 2h or 1d, got {text!r}")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not 0 < seconds <= 366 * 86400:
        raise ValueError(f"expected a duration above 0 and at most 366d, got {text!r}")
    return seconds


def paused_plan(view: ClusterView, plan: Plan, node: str) -> Plan:
    """``plan`` as it runs while the view shows a pause in force: only Fence steps of ``node``
    (this node) are kept; the rest is withheld (named in the plan, so journaled). A plan that
    does nothing, or a view without a pause, is returned as it is."""
    pause = view.paused
    if pause is None or plan.outcome == NOOP or plan.outcome == PAUSED:
        return plan
    fences = tuple(s for s in plan.steps if isinstance(s, Fence) and s.node == node)
    withheld = tuple(s.describe() for s in plan.steps if s not in fences)
    if not withheld and plan.outcome != ACT:
        return plan  # a refusal or a wait with nothing to withhold: nothing would have changed anyway
    if fences and not withheld:
        return plan
    if plan.outcome in (REFUSED, INCOMPLETE):
        outcome = plan.outcome  # the refusal (or the wait) says more than the pause
    else:
        outcome = ACT if fences else PAUSED
    head = f"paused ({pause.describe()})"
    if fences:
        head += f": fencing {node} only (a fence never forks data nor makes a second writer)"
    return Plan(f"{head}; would have: {plan.reason}", fences, outcome, plan.warnings, withheld)


def decide_pause(view: ClusterView, cfg: Any, seconds: float, reason: str, by: str) -> Plan:
    """Pure: the plan of ``orch pause``. A row on the writable server (it replicates; both
    hosts see it even when the other server is down); with no writable server (or two), this
    host's state_dir, as anti-flapping's acknowledgement (a read-only server must not log a
    transaction of its own: an errant GTID)."""
    if len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON]
    length = f"for {seconds:g}s" if seconds else "until orch resume"
    current = view.paused
    again = f" (replacing: {current.describe()})" if current is not None else ""
    writable = [n for n in (view.me, view.peer) if n.writable]
    if len(writable) == 1:
        return Plan(f"pausing automatic actions {length}{again}: no automatic promotion, rejoin, rewind, semi-sync switch, "
                    f"hand-over or Atlas change until then (fences of a failing node still run)",
                    (RecordPause(writable[0].name, PAUSE, seconds, reason, by),))
    why = "both servers are writable" if writable else "no server is writable"
    return Plan(f"pausing automatic actions {length}{again} on this host only ({why}: a read-only server must not log a "
                f"transaction of its own); run orch pause on the other host too",
                (PauseLocally(cfg.state_dir, PAUSE, seconds, reason, by),))


def decide_resume(view: ClusterView, cfg: Any, by: str, local_pause: bool) -> Plan:
    """Pure: the plan of ``orch resume``: a resume row on the writable server and, when this
    host's state_dir holds a pause (``local_pause``), a resume there too."""
    pause = view.paused
    shared = view.pause_shared if view.pause_shared is not None and view.pause_shared.active else None
    writable = [n for n in (view.me, view.peer) if n.writable]
    if pause is None and not local_pause and (shared is None or len(writable) != 1):
        if view.pause_error:
            return Plan(f"cannot read the maintenance record: {view.pause_error}", outcome=REFUSED)
        last = f" ({view.pause.describe()})" if view.pause is not None else ""
        return Plan(f"nothing to resume: no pause in force{last}", outcome=NOOP)
    # A pause still on record in the databases (resumed on this host alone while no server was
    # writable) is resumed there too: the other host reads it.
    shown = pause or shared
    what = shown.describe() if shown is not None else "paused on this host"
    steps: list = []
    if len(writable) == 1:
        steps.append(RecordPause(writable[0].name, RESUME, 0.0, "", by))
    if local_pause or not steps:
        steps.append(PauseLocally(cfg.state_dir, RESUME, 0.0, "", by))
    where = "" if len(writable) == 1 else " on this host only (no single writable server to hold a replicated row); run orch resume on the other host too"
    return Plan(f"resuming automatic actions ({what}){where}: the maintainer's next pass acts on what it sees", tuple(steps))


def pause_warning(view: ClusterView) -> Optional[str]:
    """For an operator's command while paused: it runs, but nothing automatic follows it."""
    pause = view.paused
    if pause is None:
        return None
    return f"maintenance mode ({pause.describe()}): this runs on your word; nothing automatic follows until orch resume"
