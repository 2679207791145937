"""orch history: promotions and pauses from the cluster-wide record, this host's journal and the
other host's (through its HTTP API, when it answers in time), newest first."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import TextIO

from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from .common import load_config

log = logging.getLogger("orchestrator")


def history(args: argparse.Namespace, out: TextIO) -> int:
    """Read both servers' copies of the record and this host's journal, and the other host's
    history (its ``GET /history``, CLI_DEADLINE seconds at most); print them merged, each entry
    marked with the host it came from.

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
    from ..history_read import CLI_DEADLINE, history_entries, peer_history

    asked = peer_history(cfg, since, CLI_DEADLINE) if cfg.maintainer.metrics_port else None
    entries, errors, unread = history_entries(cfg, since)
    if asked is not None:
        theirs = asked.result()
        if theirs.entries is None:
            errors.append(theirs.note())
        else:
            entries = h.merge_hosts(entries, theirs.entries)
    for error in errors:
        print(f"orch history: warning: {error}", file=sys.stderr)
    if args.format == "json":
        out.write(json.dumps(entries, indent=2, default=str) + "\n")
    else:
        from ..argv import terminal_width

        out.write(h.render(entries, min(terminal_width(), 120)) + "\n")
    return EXIT_FAILED if unread == len(cfg.nodes) else EXIT_OK
