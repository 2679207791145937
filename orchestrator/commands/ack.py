"""orch ack: an operator acknowledges the latest automatic promotion, lifting the anti-flapping block.

The acknowledgement is a row on the writable server, which replicates: from either host it
reaches both. With no writable server it is kept in this host's state_dir, and the other
host's orch is asked to keep it too (POST /ack to its HTTP API), as orch pause does."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from typing import Any, TextIO

from ..errors import EXIT_OK
from ..http_client import VIA_API
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
            code = confirm_and_run(RunContext(cfg, EVENT, run_id, servers, view, started, out=out), plan, args, stdin, "ack")
        finally:
            for s in servers.values():
                s.close()
    if code != EXIT_OK or not this_host_only(plan) or os.environ.get(VIA_API) or args.format == "json":
        return code
    return tell_peer(cfg, args, out)


def this_host_only(plan: Any) -> bool:
    """The acknowledgement is kept in this host's state_dir alone (no single writable server to
    hold a replicated row): the other host's orch must keep it too."""
    from ..plan import AckLocally

    return any(isinstance(s, AckLocally) for s in plan.steps)


def tell_peer(cfg: Any, args: argparse.Namespace, out: TextIO) -> int:
    """The same acknowledgement on the other host, through its HTTP API (POST /ack). Exit 0 when
    it did it too, or when this host has no API to ask it with (the plan already said to run the
    command there too); 3 (incomplete) when it could not be asked or refused."""
    from ..http_client import same_on_peer
    from .pause import operator_name

    body = {"by": operator_name(), "from": cfg.self_name, "dry_run": bool(args.dry_run)}
    return same_on_peer(cfg, "ack", body, out, "acknowledgement", verb="acknowledge")
