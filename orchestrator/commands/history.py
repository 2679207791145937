"""orch history: promotions from the cluster-wide record and this host's journal, newest first."""

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
    entries, errors = history_entries(cfg, since)
    for error in errors:
        print(f"orch history: warning: the promotion record is unreadable on {error}", file=sys.stderr)
    if args.format == "json":
        out.write(json.dumps(entries, indent=2, default=str) + "\n")
    else:
        from ..argv import terminal_width

        out.write(h.render(entries, min(terminal_width(), 120)) + "\n")
    return EXIT_FAILED if len(errors) == len(cfg.nodes) else EXIT_OK


def history_entries(cfg: Any, since: float, read_timeout: float = READ_TIMEOUT) -> Tuple[List[Dict[str, Any]], List[str]]:
    """``orch history --format json``'s entries (both servers' copies of the record merged with
    this host's journal), and the servers whose copy could not be read. GET /history serves it."""
    from .. import history as h
    from ..db import open_servers
    from ..promotions import read_all

    rows: List[Dict[str, Any]] = []
    errors: List[str] = []
    servers = open_servers(cfg, read_timeout=read_timeout)
    try:
        for name, server in servers.items():
            got, error = read_all(server, name, since)
            rows += got
            if error:
                errors.append(error)
    finally:
        for s in servers.values():
            s.close()
    return h.merge(h.journal_entries(Journal(cfg.state_dir).records()), h.record_entries(rows), since), errors
