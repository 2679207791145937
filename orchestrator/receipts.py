"""How long ago each replica last received anything from its source, measured across passes.

While a replica's IO thread reconnects (its source died), Seconds_Behind_Master is NULL and
MariaDB 10.11 shows no time of the last received event (11.6 adds Slave_last_event_time).
So the maintainer remembers, in ``state_dir/received.json``, each replica's receive marker
(the source binlog file and position read, Gtid_IO_Pos, the heartbeats received) and when
it saw that marker change. Anything received (an event or a heartbeat) changes it.

Measured conservatively: the marker changed after the last pass that still saw the
previous one, so the age counts from that pass. It is over-estimated by at most the time
between two passes, never under-estimated. Unknown (None) until a change was seen; a
replica pointed at another source starts afresh. Wall-clock seconds: the memory outlives
one process (``orch maintain --once`` from cron).

Bookkeeping only: a file that cannot be read or written leaves the ages unknown (a
reconnecting replica is then not kept as a read backend), never fails a pass.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from typing import Any, Dict, Optional

from .model import ClusterView, NodeState

FILE = "received.json"

log = logging.getLogger(__name__)


def _load(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
        return records if isinstance(records, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): how long ago each replica last received is not known this pass", path, exc)
        return {}


def _save(path: str, records: Dict[str, Any]) -> None:
    from .statefile import replace_json

    try:
        replace_json(path, records)
    except OSError as exc:
        log.warning("cannot write %s (%s): the next pass measures without it", path, exc)


def _observe(node: NodeState, record: Optional[Dict[str, Any]], now: float) -> Optional[Dict[str, Any]]:
    r = node.replica
    if not node.reachable:
        return record  # not observed: remembered as it was
    if r is None or not r.configured:
        return None
    source = f"{r.source_host}:{r.source_port}"
    marker = [str(part) for part in r.io_marker] + [r.retrieved]
    if record is None or record.get("source") != source or not isinstance(record.get("seen"), (int, float)):
        return {"source": source, "marker": marker, "seen": now, "changed": None}
    if record.get("marker") != marker:
        # It changed after the last look that still showed the old marker.
        return {"source": source, "marker": marker, "seen": now, "changed": record["seen"]}
    return {**record, "seen": now}


def received_ago(record: Optional[Dict[str, Any]], now: float) -> Optional[float]:
    changed = None if record is None else record.get("changed")
    if not isinstance(changed, (int, float)) or changed > now:
        return None  # never seen to change, or the clock went back
    return now - changed


def stamp(view: ClusterView, state_dir: str, now: Optional[float] = None, save: bool = True) -> ClusterView:
    """The view with each replica's ``received_ago`` filled in, and the memory updated
    (unless not ``save``: a dry run writes nothing)."""
    now = time.time() if now is None else now
    path = os.path.join(state_dir, FILE)
    records = _load(path)
    nodes = {}
    for node in (view.me, view.peer):
        record = _observe(node, records.get(node.name), now)
        if record is None:
            records.pop(node.name, None)
        else:
            records[node.name] = record
        if node.reachable and node.replica is not None and node.replica.configured:
            node = replace(node, replica=replace(node.replica, received_ago=received_ago(record, now)))
        nodes[node.name] = node
    if save:
        _save(path, records)
    return replace(view, me=nodes[view.me.name], peer=nodes[view.peer.name])
