"""orch pause / orch resume: maintenance mode, cluster-wide (orchestrator/pause.py decides)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from typing import Any, Dict, TextIO

from ..errors import EXIT_OK
from ..lock import RunLock
from .common import RunContext, confirm_and_run, ensure_state_dir, load_config, new_run

log = logging.getLogger("orchestrator")

VIA_API = "ORCH_VIA_API"  # set by the HTTP API for the command it runs: never handed on again
PAUSE_EVENT = "PAUSE"
RESUME_EVENT = "RESUME"


def operator_name() -> str:
    """Who runs the command: the operator a peer's orch named (ORCH_OPERATOR, set by the HTTP
    API's POST /pause and /resume), the user behind sudo, else this process's user."""
    import getpass

    try:
        return os.environ.get("ORCH_OPERATOR") or os.environ.get("SUDO_USER") or getpass.getuser()
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
            code = confirm_and_run(RunContext(cfg, event, run_id, servers, view, started, out=out), plan, args, stdin,
                                   args.command)
        finally:
            for s in servers.values():
                s.close()
    if code != EXIT_OK or not this_host_only(plan) or os.environ.get(VIA_API):
        return code
    return tell_peer(cfg, args, out, event, by)


def this_host_only(plan: Any) -> bool:
    """The plan keeps the pause (or resume) in this host's state_dir alone (no single writable
    server to hold a replicated row): the other host's orch must record it too."""
    from ..plan import PauseLocally, RecordPause

    return any(isinstance(s, PauseLocally) for s in plan.steps) and not any(isinstance(s, RecordPause) for s in plan.steps)


def tell_peer(cfg: Any, args: argparse.Namespace, out: TextIO, event: str, by: str) -> int:
    """The same pause (resume) on the other host, through its HTTP API (POST /pause, /resume).
    Exit 0 when it did it too, or when this host has no API to ask it with (the plan already
    said to run the command there too); 3 (incomplete) when it could not be asked or refused."""
    from ..http_client import same_on_peer

    action = "pause" if event == PAUSE_EVENT else "resume"
    body: Dict[str, Any] = {"by": by, "dry_run": bool(args.dry_run), "from": cfg.self_name}
    if action == "pause":
        body.update({"for": getattr(args, "duration", None) or 0, "reason": args.reason or ""})
    return same_on_peer(cfg, action, body, out, "record")
