"""Fencing and opening a server: read_only on (bounded, checked) or off, then verified.

SET GLOBAL read_only waits for running writes (a 60 s UPDATE holds it 60 s): the fence
bounds that wait (failover.fence_timeout) and, past it, kills the client sessions it waits
behind, once. Only what may hold it back is killed (a write, or a session between the
statements of a transaction); replication and system threads never are, and the log shows
a statement's shape and digest, never its values.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Dict, List, Optional

from .db import Server
from .errors import DOWN, DatabaseError
from .flavors import BLOCKERS_QUERY, KILL_CONNECTION, LOCK_WAIT_TIMEOUT, Flavor
from .observe import read_node

log = logging.getLogger(__name__)

# A fence that waited too long: lock wait timeout (server side) or no answer (client side).
BLOCKED_CODES = (1205, 2013)
UNKNOWN_THREAD = 1094  # KILL of a session that ended by itself
HINT = "(the orch account needs PROCESS to see other users' sessions and CONNECTION ADMIN to kill them)"


def statement_digest(info: Any) -> str:
    """A statement's shape without its values (literals become ?), and a short hash of it."""
    text = str(info or "")
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "?", text)
    text = re.sub(r"\b\d+(?:\.\d+)?\b", "?", text)
    text = " ".join(text.split())
    import hashlib  # deferred: only a fence that kills pays for it

    return f"{hashlib.sha1(text.encode()).hexdigest()[:12]} {text[:100]!r}"


_READS = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(SELECT|SHOW|EXPLAIN|DESCRIBE|DESC|HELP)\b", re.I | re.S)
_WRITING_SELECT = re.compile(r"\b(INTO\s+(OUTFILE|DUMPFILE|@)|FOR\s+UPDATE|LOCK\s+IN\s+SHARE\s+MODE)\b", re.I)


def may_block_fence(info: Any) -> bool:
    """Whether a running statement can hold SET GLOBAL read_only back (a write may; a plain read cannot)."""
    text = str(info or "")
    if not text.strip():
        return True  # between statements of a transaction, or not shown: it may be committing
    if _READS.match(text) and not _WRITING_SELECT.search(text):
        return False
    return True


def session_text(row: Dict[str, Any]) -> str:
    """id, user, host and statement digest of a processlist row (never the statement's values)."""
    return f"id {row.get('id')} user {row.get('user')!r} host {row.get('host')!r} ({row.get('command')} for {row.get('time')}s) digest {statement_digest(row.get('info'))}"


def set_read_only(server: Server, flavor: Flavor, fenced: bool, timeout: Optional[float] = None) -> str:
    """Fence (read_only on) or open (off) a server, then re-read and verify it."""
    name = server.node.name
    statements = flavor.fence_statements if fenced else flavor.unfence_statements
    for sql in statements:
        server.execute(sql, why=f"fence {name}" if fenced else f"{name} is the master", timeout=timeout)
    state = read_node(server, flavor.name)
    if flavor.is_fenced(state) != fenced or state.read_only != fenced:
        raise DatabaseError(f"{server.label}: read_only={int(state.read_only)} after {'; '.join(statements)}")
    return f"read_only={int(fenced)} verified"


def fence(server: Server, flavor: Flavor, seconds: float, semi_sync: bool) -> str:
    """Fence within ``seconds`` (failover.fence_timeout); past it, kill the client sessions it waits behind, once.

    The session's lock_wait_timeout bounds the wait on the server, the read timeout bounds
    a server that does not answer at all. With ``semi_sync`` (failover.semi_sync), commits
    waiting for an acknowledgement end first.
    """
    name = server.node.name
    ended = _end_semisync_waiters(server, seconds) if semi_sync else []
    waiters = f"; ended {len(ended)} commit(s) waiting for a semi-sync acknowledgement: " + "; ".join(ended) if ended else ""
    try:
        return _fence_once(server, flavor, seconds) + waiters
    except DatabaseError as exc:
        if exc.kind == DOWN or exc.code not in BLOCKED_CODES:
            raise
        log.warning("fence %s: not done within %gs (%s): killing the client sessions it waits behind", name, seconds, exc)
    try:
        killed = _kill_blockers(server)
    except DatabaseError as exc:
        raise DatabaseError(f"{exc} {HINT}", exc.kind, exc.code) from None
    try:
        detail = _fence_once(server, flavor, seconds)
    except DatabaseError as exc:
        what = f"after killing {len(killed)} session(s)" if killed else f"no blocking client session was visible to kill {HINT}"
        raise DatabaseError(f"{exc}; {what}", exc.kind, exc.code) from None
    return f"{detail} after killing {len(killed)} blocking session(s): " + "; ".join(killed) if killed else detail


def _fence_once(server: Server, flavor: Flavor, seconds: float) -> str:
    server.execute(LOCK_WAIT_TIMEOUT, (max(1, math.ceil(seconds)),), why="bound the fence's wait for running writes",
                   timeout=seconds + 1)
    return set_read_only(server, flavor, fenced=True, timeout=seconds + 1)


def _end_semisync_waiters(server: Server, seconds: float) -> List[str]:
    """When a commit waits for a semi-sync acknowledgement, kill the writing sessions before fencing.

    SET GLOBAL read_only waits behind them, and a node being fenced must not have them
    acknowledged afterwards: each client gets an error (its connection is closed), so no
    such commit was ever acknowledged; the transactions stay in this node's binlog (a
    replica applies them, or they are an unacknowledged tail a rewind may roll back).
    """
    from .flavors import SEMISYNC_WAIT_STATE

    ended = []
    try:
        rows = server.query(BLOCKERS_QUERY, timeout=seconds + 1)
    except DatabaseError as exc:
        if exc.kind == DOWN:
            raise
        log.warning("fence %s: cannot list sessions waiting for a semi-sync acknowledgement: %s", server.node.name, exc)
        return []
    if not any(str(row.get("state") or "").startswith(SEMISYNC_WAIT_STATE) for row in rows):
        return []
    # One commit waits for the acknowledgement; the others of its group queue behind it
    # in other states: every writing session goes, as the fence deadline would do anyway.
    for row in rows:
        if not may_block_fence(row.get("info")):
            continue
        text = session_text(row)
        try:
            server.execute(KILL_CONNECTION, (int(row["id"]),),
                           why=f"its commit waits for a semi-sync acknowledgement while {server.node.name} is fenced: {text}")
        except DatabaseError as exc:
            if exc.code == UNKNOWN_THREAD:
                continue
            raise
        log.warning("fence %s: ended session %s (its commit was never acknowledged)", server.node.name, text)
        ended.append(text)
    return ended


def _kill_blockers(server: Server) -> List[str]:
    """Kill every client session running a statement (never replication or system threads)."""
    killed = []
    for row in server.query(BLOCKERS_QUERY):
        if not may_block_fence(row.get("info")):
            continue
        text = session_text(row)
        try:
            server.execute(KILL_CONNECTION, (int(row["id"]),), why=f"it blocks fencing {server.node.name}: {text}")
        except DatabaseError as exc:
            if exc.code == UNKNOWN_THREAD:  # it ended by itself
                continue
            raise
        log.warning("fence %s: killed session %s", server.node.name, text)
        killed.append(text)
    return killed


def self_fence(cfg: Any, why: str, seconds: float = 1.0) -> str:
    """The lease keeper's fence of this host's own server (orchestrator/lease.py): a connection of
    its own (the keeper is a thread beside the passes), the fence bounded by ``seconds`` before
    the writers it waits behind are killed (token.FENCE_BUDGET covers it)."""
    from . import flavors
    from .observe import observe_node

    server = Server(cfg.me, cfg.mysql)
    try:
        node = observe_node(server, cfg.flavor)
        if node.down:
            return f"{cfg.self_name}'s server is down ({node.error}): nothing to fence"
        if not node.reachable:
            raise DatabaseError(f"cannot fence {cfg.self_name}: its server answers, but unusably ({node.error})")
        flavor = flavors.get(node.flavor, node.version)
        if flavor.is_fenced(node):
            return f"{cfg.self_name} is read-only already"
        log.error("self-fence %s: %s", cfg.self_name, why)
        return fence(server, flavor, seconds, cfg.failover.semi_sync)
    finally:
        server.close()
