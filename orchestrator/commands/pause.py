"""orch pause / orch resume: maintenance mode, cluster-wide (orchestrator/pause.py decides)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from typing import TextIO

from ..lock import RunLock
from .common import RunContext, confirm_and_run, ensure_state_dir, load_config, new_run

log = logging.getLogger("orchestrator")

PAUSE_EVENT = "PAUSE"
RESUME_EVENT = "RESUME"


def operator_name() -> str:
    """Who runs the command: the user behind sudo, else this process's user."""
    import getpass

    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def pause(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """orch pause [--for DURATION] [--reason TEXT] [--yes] [--dry-run]."""
    return _run(args, out, stdin, PAUSE_EVENT)


def resume(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """orch resume [--yes] [--dry-run]."""
    return _run(args, out, stdin, RESUME_EVENT)


def _run(args: argparse.Namespace, out: TextIO, stdin: TextIO, event: str) -> int:
    """Observe both servers, decide (pause.decide_pause / decide_resume), confirm, record, journal."""
    from ..db import open_servers
    from ..observe import observe
    from ..pause import decide_pause, decide_resume
    from ..pauses import local_pause

    started = time.monotonic()
    cfg = load_config(args)
    run_id = new_run(cfg)
    by = operator_name()
    with contextlib.ExitStack() as held:
        if not args.dry_run:  # a dry run writes nothing in state_dir, not even the lock file
            ensure_state_dir(cfg)
            held.enter_context(RunLock(cfg.state_dir, cfg.failover.lock_timeout))
        servers = open_servers(cfg)
        try:
            view = observe(cfg, servers, promotions=False, witness=False)
            if event == PAUSE_EVENT:
                plan = decide_pause(view, cfg, getattr(args, "duration", None) or 0.0, args.reason or "", by)
            else:
                plan = decide_resume(view, cfg, by, local_pause(cfg.state_dir))
            log.info("decision (%s on %s): %s", event, cfg.self_name, plan.reason)
            return confirm_and_run(RunContext(cfg, event, run_id, servers, view, started, out=out), plan, args, stdin,
                                   args.command)
        finally:
            for s in servers.values():
                s.close()
