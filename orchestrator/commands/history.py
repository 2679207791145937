"""orch history: promotions and pauses from the cluster-wide record and this host's journal, newest first."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, Dict, List, TextIO, Tuple

from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..journal import Journal
from .common import load_config

log = logging.getLogger("orchestrator")

READ_TIMEOUT = 5.0  # seconds per server: a history is read by a person, not on a failover's path


def history(args: argparse.Namespace, out: TextIO) -> int:
    """Read both servers' copies of the record and this host's journal; print them merged.

    Exit 0 when at least one copy of the record was read (it replicates: either holds both
    hosts' promotions), 1 when none could be (what the journal holds is still printed)."""
    from .. import history as h

    since = 0.0
    if args.since:
        try:
            since = h.parse_since(args.since, time.time())
        except ValueError as exc:
            raise UsageError(f"orch history: --since: {exc}") from None
    cfg = load_config(args)
    entries, errors, unread = history_entries(cfg, since)
    for error in errors:
        print(f"orch history: warning: {error}", file=sys.stderr)
    if args.format == "json":
        out.write(json.dumps(entries, indent=2, default=str) + "\n")
    else:
        from ..argv import terminal_width

        out.write(h.render(entries, min(terminal_width(), 120)) + "\n")
    return EXIT_FAILED if unread == len(cfg.nodes) else EXIT_OK


def history_entries(cfg: Any, since: float, read_timeout: float = READ_TIMEOUT) -> Tuple[List[Dict[str, Any]], List[str], int]:
    """``orch history --format json``'s entries (both servers' copies of the promotion and
    maintenance records merged with this host's journal), what could not be read (one line
    each), and how many servers' copies of the promotion record could not be read. GET
    /history serves it."""
    from .. import history as h
    from .. import pauses, promotions
    from ..db import open_servers

    rows: List[Dict[str, Any]] = []
    pause_rows: List[Dict[str, Any]] = []
    errors: List[str] = []
    unread = 0
    servers = open_servers(cfg, read_timeout=read_timeout)
    try:
        for name, server in servers.items():
            got, error = promotions.read_all(server, name, since)
            rows += got
            if error:
                errors.append(f"the promotion record is unreadable on {error}")
                unread += 1
                continue  # the connection is gone: the pause record would fail the same way
            got, error = pauses.read_all(server, name, since)
            pause_rows += got
            if error:
                errors.append(f"the maintenance record is unreadable on {error}")
    finally:
        for s in servers.values():
            s.close()
    journal = h.journal_entries(Journal(cfg.state_dir).records())
    return h.merge(journal, h.record_entries(rows) + h.pause_entries(pause_rows), since), errors, unread
