"""orch ack: an operator acknowledges the latest automatic promotion, lifting the anti-flapping block."""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from typing import TextIO

from ..lock import RunLock
from .common import RunContext, confirm_and_run, ensure_state_dir, json_needs_dry_run, load_config, new_run

log = logging.getLogger("orchestrator")

EVENT = "ACK"


def ack(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """Observe both servers, decide (antiflap.decide_ack), confirm, record, journal."""
    from ..antiflap import decide_ack
    from ..db import open_servers
    from ..observe import observe

    started = time.monotonic()
    json_needs_dry_run(args, "ack")
    cfg = load_config(args)
    run_id = new_run(cfg)
    with contextlib.ExitStack() as held:
        if not args.dry_run:  # a dry run writes nothing in state_dir, not even the lock file
            ensure_state_dir(cfg)
            held.enter_context(RunLock(cfg.state_dir, cfg.failover.lock_timeout))
        servers = open_servers(cfg)
        try:
            view = observe(cfg, servers)
            plan = decide_ack(view, cfg)
            log.info("decision (%s on %s): %s", EVENT, cfg.self_name, plan.reason)
            return confirm_and_run(RunContext(cfg, EVENT, run_id, servers, view, started, out=out), plan, args, stdin, "ack")
        finally:
            for s in servers.values():
                s.close()
