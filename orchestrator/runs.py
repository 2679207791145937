"""A run: a decided plan executed and journaled (begin before any step, end after), with its
log lines, a person's view of each step and the alert. Shared by the commands and the maintainer."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, TextIO, Tuple

from .config import Config
from .db import Server
from .errors import Refused
from .execute import AtlasRunner
from .journal import Journal
from .model import ClusterView
from .plan import NOOP, Plan, RunResult

log = logging.getLogger("orchestrator")


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
    from .execute import Executor
    from .http_client import api_origin

    cfg, event, out = run.cfg, run.event, run.out
    journal = Journal(cfg.state_dir)
    base: Dict[str, Any] = {"id": run.run_id, "node": cfg.self_name, "event": event, **({"by": run.by} if run.by else {})}
    asked = api_origin(os.environ)  # run by the HTTP API for another host's orch: who asked, from where
    if asked:
        base["asked"] = asked
    if plan.outcome != NOOP:
        journal_append(journal, {**base, "phase": "begin", "reason": plan.reason, "outcome": plan.outcome,
                        "warnings": list(plan.warnings), "plan": [s.describe() for s in plan.steps],
                                 **({"withheld": list(plan.withheld)} if plan.withheld else {})})
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
        from .alerts import after_run  # after the end record; sent in the background, never raises

        after_run(cfg, {**base, "result": status, "reason": plan.reason, "error": str(result.error) if result.error else "",
                        "steps": [r.as_dict() for r in result.results]})
    return exit_code, result
