"""The catch-up before a promotion: wait until a node applied everything it received and,
when the peer is named, everything the peer executed (read after the peer was fenced).

The only long wait of a failover (failover.catchup_timeout), taken in slices of
WAIT_SLICE so that a replication error is noticed within a second; a node that cannot
catch up stays read-only (CatchUpRefused) unless the step is forced.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from .db import Server
from .errors import CatchUpRefused
from .flavors import Flavor
from .model import ThreadState
from .observe import read_node
from .plan import CatchUp

log = logging.getLogger(__name__)

WAIT_SLICE = 1.0  # seconds per wait call, so a replication error is noticed within a second


def catch_up(step: CatchUp, server: Server, flavor: Flavor, peer: Optional[Server], peer_flavor: str) -> str:
    """Wait as ``step`` says on ``server`` (the node); ``peer``: the peer's server when ``step.peer`` is set,
    read with flavor ``peer_flavor``. Returns what was applied; raises CatchUpRefused (unless forced)."""
    deadline = time.monotonic() + step.timeout
    me = read_node(server, flavor.name)
    targets = []
    if me.replica is not None and me.replica.retrieved:
        targets.append(("its relay log", me.replica.retrieved))
    if peer is not None:
        # Read after the peer was fenced: nothing can be added to it any more.
        targets.append((f"{step.peer}'s executed GTIDs", read_node(peer, peer_flavor).binlog_pos))
    waited = []
    for label, target in targets:
        while True:
            missing = flavor.missing(target, me)
            if not missing:
                break
            r = me.replica
            problem = ""
            if r is None or not r.configured:
                problem = f"{step.node} has no replication to apply {missing} with"
            elif r.sql_error:
                problem = f"{step.node}'s SQL thread stopped on error {r.last_sql_errno}: {r.last_sql_error}"
            elif r.sql is not ThreadState.RUNNING:
                problem = f"{step.node}'s SQL thread is {r.sql.value}"
            elif step.peer and r.io is ThreadState.STOPPED and r.last_io_error:
                problem = f"{step.node}'s IO thread stopped: {r.last_io_error}"
            remaining = deadline - time.monotonic()
            if not problem and remaining <= 0:
                problem = f"catch-up timed out after {step.timeout:g}s"
            if problem:
                text = f"{problem}: {label} not applied, missing {missing}"
                if step.force:
                    log.warning("--ignore-catchup: promoting anyway although %s", text)
                    return f"warning: forced although {text}"
                raise CatchUpRefused(f"{text}; {step.node} stays read-only (orch promote --ignore-catchup overrides)")
            wait = min(WAIT_SLICE, max(remaining, 0.01))
            sql, args = flavor.wait_statement(missing, wait)
            server.value(sql, args, timeout=wait + server.read_timeout)
            me = read_node(server, flavor.name)
        waited.append(label)
    return "applied " + " and ".join(waited) if waited else "nothing to apply"
