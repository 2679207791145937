"""Shared plumbing for commands: config, run id, state_dir, confirmation (runs: orchestrator/runs.py)."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, TextIO

from .. import logs
from ..config import Config, load
from ..errors import EXIT_FAILED, UsageError
from ..journal import new_run_id
from ..plan import NOOP
from ..runs import RunContext, execute_plan, journal_append  # noqa: F401  (the commands' shared run machinery)

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


def show_plan(out: TextIO, plan: Any, args: Any, command: str, node: str) -> None:
    """Print a plan: as text (then "dry run: nothing changed" on a dry run), or with
    ``--dry-run --format json`` one JSON object: command, node, dry_run, and Plan.as_dict()'s keys."""
    dry_run = bool(getattr(args, "dry_run", False))
    if dry_run and getattr(args, "format", "table") == "json":
        import json

        out.write(json.dumps({"command": command, "node": node, "dry_run": True, **plan.as_dict()}, indent=2) + "\n")
        return
    out.write(plan.render() + "\n")
    if dry_run:
        out.write("dry run: nothing changed\n")


def confirm_and_run(run: RunContext, plan: Any, args: Any, stdin: Optional[TextIO], command: str) -> int:
    """An operator's plan: shown (show_plan), then nothing more on a dry run or when there is
    nothing to do, else confirmed (--yes or a terminal's y) and run; the exit code."""
    out = run.out
    assert out is not None
    show_plan(out, plan, args, command, run.cfg.self_name)
    if getattr(args, "dry_run", False) or plan.outcome == NOOP or not plan.steps:
        return plan.exit_code
    if not confirmed(out, stdin, args.yes):
        return EXIT_FAILED
    return execute_plan(run, plan)[0]


def json_needs_dry_run(args: Any, command: str) -> None:
    """--format json prints a plan only with --dry-run (a run that acts prints its steps' results as text)."""
    if getattr(args, "format", "table") == "json" and not getattr(args, "dry_run", False):
        raise UsageError(f"orch {command}: --format json goes with --dry-run")


def new_run(cfg: Config) -> str:
    run_id = new_run_id()
    logs.configure_run(run_id, cfg.secrets, False)
    return run_id
