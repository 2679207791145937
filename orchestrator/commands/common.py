"""Shared plumbing for commands: config, run id, state_dir, confirmation (runs: orchestrator/runs.py)."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, TextIO

from .. import logs
from ..config import Config, load
from ..errors import UsageError
from ..journal import new_run_id
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


def new_run(cfg: Config) -> str:
    run_id = new_run_id()
    logs.configure_run(run_id, cfg.secrets, False)
    return run_id
