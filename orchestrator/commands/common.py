"""Shared plumbing for commands: config, run id, lock, observe-decide-execute-journal."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, TextIO, Tuple

from .. import logs
from ..config import Config, load
from ..db import Server
from ..errors import Refused, UsageError
from ..execute import AtlasRunner
from ..journal import Journal, new_run_id
from ..model import ClusterView
from ..plan import NOOP, Plan, RunResult

log = logging.getLogger("orchestrator")


def load_config(args: Any) -> Config:
    cfg = load(args.config, args.node)
    logs.configure_run("-", cfg.secrets, cfg.syslog)
    for w in cfg.warnings:
        log.warning("%s", w)
    return cfg


def ensure_state_dir(cfg: Config) -> bool:
    """Create state_dir; when that fails say so loudly and go on (False).

    Bookkeeping never blocks a failover: the run lock then falls back to a lock
    file outside state_dir and journal records go to the log.
    """
    try:
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        log.critical("state_dir %s unusable: %s; the run lock falls back elsewhere and the journal goes to this log; "
                     "the failover goes on", cfg.state_dir, exc.strerror or exc)
        return False
    return True


def journal_append(journal: Journal, record: Dict[str, Any]) -> bool:
    """Append a journal record; when that fails, log it instead (False) and go on."""
    try:
        journal.append(record)
        return True
    except OSError as exc:
        import json

        goes_on = "the failover goes on" if record.get("event") not in ("MAINTAIN", "REJOIN") else "the run goes on"
        log.critical("journal unwritable: %s: %s; %s; the %s record follows: %s", journal.path, exc.strerror or exc,
                     goes_on, record.get("phase", "?"), json.dumps(record, default=str))
        return False


@dataclass(frozen=True)
class RunContext:
    """One run's setting for executing its plan: who runs it, on what it observed, where it reports."""

    cfg: Config
    event: str
    run_id: str
    servers: Mapping[str, Server]
    view: Optional[ClusterView]
    started: float  # time.monotonic() at the run's start: the journal's and the log's milliseconds
    out: Optional[TextIO] = None  # a person's terminal: each step's result is written there too
    atlas_runner: Optional[AtlasRunner] = None  # the maintainer brings its open Atlas connections
    by: str = ""  # which command runs it, when not the event's own ("maintain")


def execute_plan(run: RunContext, plan: Plan) -> Tuple[int, RunResult]:
    """Run a decided plan, journal it (begin before any step, end after).

    Returns the exit code and the RunResult. A run whose best-effort (Atlas) steps
    failed while everything else succeeded is journaled as ``partial``.
    """
    from ..execute import Executor

    cfg, event, out = run.cfg, run.event, run.out
    journal = Journal(cfg.state_dir)
    base = {"id": run.run_id, "node": cfg.self_name, "event": event, **({"by": run.by} if run.by else {})}
    if plan.outcome != NOOP:
        journal_append(journal, {**base, "phase": "begin", "reason": plan.reason, "outcome": plan.outcome,
                        "warnings": list(plan.warnings), "plan": [s.describe() for s in plan.steps]})
    for w in plan.warnings:
        log.warning("%s", w)
    result = Executor(cfg, run.servers, run.view, run.atlas_runner, run_id=run.run_id).run(plan)
    exit_code = plan.exit_code
    status = plan.outcome
    if result.error is not None:
        exit_code = result.error.exit_code
        status = "refused" if isinstance(result.error, Refused) else "failed"
    elif any(r.result == "failed" for r in result.results):
        status = "partial"
    elapsed = int((time.monotonic() - run.started) * 1000)
    if plan.outcome != NOOP:
        journal_append(journal, {**base, "phase": "end", "result": status, "exit": exit_code, "ms": elapsed,
                        "error": str(result.error) if result.error else "",
                        "steps": [r.as_dict() for r in result.results]})
    if result.error is not None:
        log.error("%s %s: %s", event, status, result.error)
    else:
        log.info("%s %s in %d ms: %s", event, status, elapsed, plan.reason)
    if out is not None:
        for r in result.results:
            out.write(f"  [{r.result}] {r.description}{(': ' + r.detail) if r.detail else ''} ({r.ms} ms)\n")
        out.write(f"result: {status}" + (f": {result.error}" if result.error else "") + "\n")
    if cfg.alerts is not None and plan.outcome != NOOP:
        from ..alerts import after_run  # after the end record; sent in the background, never raises

        after_run(cfg, {**base, "result": status, "reason": plan.reason, "error": str(result.error) if result.error else "",
                        "steps": [r.as_dict() for r in result.results]})
    return exit_code, result


def confirmed(out: TextIO, stdin: Optional[TextIO], yes: bool) -> bool:
    """A person's yes before a change: --yes, or "y" typed at a terminal (UsageError without one)."""
    if yes:
        return True
    if stdin is None or not stdin.isatty():
        raise UsageError("orch: refusing to act without confirmation: stdin is not a terminal (use --yes)")
    out.write("proceed? [y/N] ")
    out.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        out.write("aborted: nothing changed\n")
        return False
    return True


def new_run(cfg: Config) -> str:
    run_id = new_run_id()
    logs.configure_run(run_id, cfg.secrets, False)
    return run_id
