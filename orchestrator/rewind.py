"""Rewind a divergent tail: roll back exactly a node's errant transactions, then put its
GTID state back at the last position it shares with its peer, so that it can replicate
from the peer (MariaDB, gtid_strict_mode, MASTER_USE_GTID=slave_pos).

Pure part first (parse, locate, decide, prove); the effects part at the end reads the
binlogs (SQL, and ``mariadb-binlog`` reading from the server as a replica would), saves
what is discarded under ``state_dir/rewind/`` before anything changes, applies the
``--flashback`` output with binary logging off for that session, and resets the GTID
state. Imported only when a Rewind step runs.
"""

from __future__ import annotations

import calendar
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .clientfile import OptionFile
from .config import Config
from .db import Server
from .errors import Refused
from .flavors import Flavor
from .gtid import BinlogState, GtidError, GtidPos, MariaGtid, parse_mariadb_gtids
from .model import ThreadState
from .plan import REWIND_UNSUPPORTED, Rewind

log = logging.getLogger(__name__)

MARIADB_BINLOG = "/usr/bin/mariadb-binlog"
BINLOG_TIMEOUT = 300.0  # seconds for one mariadb-binlog run over the tail
APPLY_TIMEOUT = 600.0  # seconds for one flashback statement (a large row event)
PAGE = 1000  # SHOW BINLOG EVENTS rows per query

# Events that carry no transaction: they open, close or chain binlog files.
FILE_EVENTS = frozenset({"Format_desc", "Gtid_list", "Binlog_checkpoint", "Rotate", "Stop", "Start_encryption"})
# Everything a rewindable (row-based, transactional) transaction may hold besides its rows.
TRANSACTION_EVENTS = frozenset({"Gtid", "Annotate_rows", "Table_map", "Xid"})
_ROWS_EVENT = re.compile(r"^(Write|Update|Delete)_rows(_compressed)?(_v\d)?$")
_GTID_INFO = re.compile(r"^(BEGIN )?GTID (\d+-\d+-\d+)")
# mariadb-binlog's event header (run with TZ=UTC): "#261126 16:56:55 server id 1  end_log_pos 772 ... GTID 0-1-3 trans"
_HEADER_GTID = re.compile(r"^#(\d\d)(\d\d)(\d\d)\s+(\d{1,2}):(\d\d):(\d\d)\s+server id (\d+)\s.*\sGTID (\d+-\d+-\d+)")
_DELIMITER = "/*!*/;"


# --------------------------------------------------------------------------- pure


@dataclass(frozen=True)
class BinlogEvent:
    """One row of SHOW BINLOG EVENTS."""

    file: str
    pos: int
    end_pos: int
    type: str
    server_id: int
    info: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "BinlogEvent":
        return cls(str(row["Log_name"]), int(row["Pos"]), int(row["End_log_pos"]), str(row["Event_type"]),
                   int(row["Server_id"] or 0), str(row.get("Info") or ""))


@dataclass(frozen=True)
class Transaction:
    """One binlogged transaction: its GTID and where its events lie (one file)."""

    gtid: MariaGtid
    file: str
    pos: int
    end_pos: int
    types: Tuple[str, ...]
    first_info: str = ""  # the Query text of a statement event, for a refusal's message


@dataclass(frozen=True)
class Tail:
    """The errant transactions, in binlog order, and the GTID state just before them."""

    transactions: Tuple[Transaction, ...]
    common_state: str  # gtid_binlog_state before the first errant transaction
    common_pos: str  # the last common GTID per domain (gtid_slave_pos to set)

    @property
    def gtids(self) -> Tuple[MariaGtid, ...]:
        return tuple(t.gtid for t in self.transactions)

    def ranges(self) -> List[Tuple[str, int, int]]:
        """(file, start, stop) per binlog file holding errant transactions, in binlog order."""
        out: List[Tuple[str, int, int]] = []
        for t in self.transactions:
            if out and out[-1][0] == t.file:
                out[-1] = (t.file, out[-1][1], t.end_pos)
            else:
                out.append((t.file, t.pos, t.end_pos))
        return out


def is_errant(g: MariaGtid, peer_state: BinlogState) -> bool:
    """The peer lacks ``g``: it has no GTID of that domain and server id with a sequence as high."""
    seq = peer_state.last_seq(g.domain, g.server_id)
    return seq is None or seq < g.seq


def parse_gtid_list(info: str) -> Tuple[MariaGtid, ...]:
    """A Gtid_list event's Info (``[0-1-2,0-2-4]``): the binlog state at the file's start."""
    return parse_mariadb_gtids(info.strip().strip("[]"))


def start_file(heads: Sequence[Tuple[str, str]], peer_state: BinlogState) -> Optional[str]:
    """The newest binlog file whose starting state holds no errant GTID: every errant
    transaction lies in it or after it. None when even the oldest file starts after one
    (the errant transactions' binlogs were purged). ``heads``: (file, Gtid_list Info), oldest first.
    """
    for name, gtid_list in reversed(heads):
        if not any(is_errant(g, peer_state) for g in parse_gtid_list(gtid_list)):
            return name
    return None


def group_transactions(events: Sequence[BinlogEvent]) -> List[Transaction]:
    """Binlog events -> transactions (each from its Gtid event to the next one or a file event)."""
    out: List[Transaction] = []
    current: Optional[Dict[str, Any]] = None

    def close() -> None:
        if current is not None:
            out.append(Transaction(current["gtid"], current["file"], current["pos"], current["end"], tuple(current["types"]), current["info"]))

    for e in events:
        if e.type == "Gtid":
            close()
            m = _GTID_INFO.match(e.info)
            if not m:
                raise Refused(f"cannot read the GTID event at {e.file}:{e.pos} ({e.info[:60]!r}); cannot rewind")
            d, s, n = (int(x) for x in m.group(2).split("-"))
            current = {"gtid": MariaGtid(d, s, n), "file": e.file, "pos": e.pos, "end": e.end_pos,
                       "types": ["Gtid" if m.group(1) else "Gtid standalone"], "info": ""}
        elif e.type in FILE_EVENTS:
            close()
            current = None
        elif current is not None:
            current["types"].append(e.type)
            current["end"] = e.end_pos
            if e.type != "Annotate_rows" and not current["info"] and e.info and not _ROWS_EVENT.match(e.type) and e.type not in TRANSACTION_EVENTS:
                current["info"] = e.info
    close()
    return out


def rewindable(t: Transaction) -> str:
    """Why a transaction cannot be rolled back from its row events ('' when it can)."""
    if t.types[0] == "Gtid standalone":
        what = t.first_info[:80] if t.first_info else "a statement outside a transaction"
        return f"{t.gtid} is DDL or a non-transactional statement ({what!r})"
    for x in t.types:
        if x not in TRANSACTION_EVENTS and not _ROWS_EVENT.match(x):
            detail = f": {t.first_info[:80]!r}" if t.first_info else ""
            return f"{t.gtid} holds a {x} event, not only row events{detail}"
    if not any(_ROWS_EVENT.match(x) for x in t.types):
        return f"{t.gtid} holds no row events ({', '.join(t.types)})"
    if t.types[-1] != "Xid":
        return f"{t.gtid} does not end with a transactional commit (XID): a non-transactional table, or an incomplete transaction"
    return ""


def find_tail(events: Sequence[BinlogEvent], start_state: Sequence[MariaGtid], peer_state: BinlogState,
              node_state: BinlogState) -> Tail:
    """The errant transactions among ``events`` (which start at the start file's head).

    Refused unless the errant transactions are exactly the binlog's tail (nothing the peer
    has comes after the first of them), each is a row-based transactional one, and replaying
    the binlogs gives the node's gtid_binlog_state.
    """
    state: Dict[Tuple[int, int], int] = {(g.domain, g.server_id): g.seq for g in start_state}
    common: Optional[Dict[Tuple[int, int], int]] = None
    errant: List[Transaction] = []
    for t in group_transactions(events):
        if is_errant(t.gtid, peer_state):
            if common is None:
                common = dict(state)
            why = rewindable(t)
            if why:
                raise Refused(f"cannot rewind: {why}; only row-based DML can be rolled back")
            errant.append(t)
        elif common is not None:
            raise Refused(f"cannot rewind: {t.gtid} follows the errant transactions in the binlog and the peer has it "
                          f"(the errant transactions are not the binlog's tail)")
        state[(t.gtid.domain, t.gtid.server_id)] = t.gtid.seq
    if not errant or common is None:
        raise Refused("cannot rewind: the errant transactions are not in the binary logs")
    replayed = {(g.domain, g.server_id): g.seq for g in node_state.gtids}
    if state != replayed:
        raise Refused(f"cannot rewind: the binary logs end at {_state_text(state)}, but gtid_binlog_state is {node_state} "
                      f"(written to meanwhile?)")
    return Tail(tuple(errant), _state_text(common), _last_per_domain(common))


def _state_text(state: Mapping[Tuple[int, int], int]) -> str:
    return ",".join(str(MariaGtid(d, s, n)) for (d, s), n in sorted(state.items()))


def _last_per_domain(state: Mapping[Tuple[int, int], int]) -> str:
    """gtid_strict_mode: within a domain the highest sequence is the last transaction."""
    best: Dict[int, MariaGtid] = {}
    for (d, s), n in state.items():
        if d not in best or n > best[d].seq:
            best[d] = MariaGtid(d, s, n)
    return ",".join(str(best[d]) for d in sorted(best))


def check_errant_matches(tail: Tail, errant: str) -> None:
    """The tail's last GTID per domain is what the flavor called errant, domain for domain."""
    try:
        expected = GtidPos.parse(errant)
    except GtidError as exc:
        raise Refused(f"cannot rewind: unreadable errant GTIDs {errant!r}: {exc}") from None
    last: Dict[int, MariaGtid] = {}
    for g in tail.gtids:
        last[g.domain] = g
    found = ",".join(str(last[d]) for d in sorted(last))
    if found != str(expected):
        raise Refused(f"cannot rewind: the binlogs' errant tail ends at {found}, but the errant GTIDs are {errant} "
                      f"(GTID domains orch cannot match up)")


def check_settings(binlog_format: str, row_image: str, log_bin: Any) -> None:
    """Flashback needs every change as full row images."""
    if not int(log_bin or 0):
        raise Refused("cannot rewind: binary logging is off on this node")
    if str(binlog_format).upper() != "ROW":
        raise Refused(f"cannot rewind: binlog_format is {binlog_format}, it must be ROW")
    if str(row_image).upper() != "FULL":
        raise Refused(f"cannot rewind: binlog_row_image is {row_image}, it must be FULL")


def check_flavor(name: str) -> None:
    if name in REWIND_UNSUPPORTED:
        raise Refused(REWIND_UNSUPPORTED[name])
    if name != "mariadb":
        raise Refused(f"{name}: rewind is not supported")


@dataclass(frozen=True)
class SemiSyncFacts:
    """What proves a tail was never acknowledged to a client."""

    configured: bool  # failover.semi_sync
    enabled: bool  # rpl_semi_sync_master_enabled now
    timeout_ms: int  # rpl_semi_sync_master_timeout now
    wait_no_replica: bool  # rpl_semi_sync_master_wait_no_slave now
    wait_on_since: Optional[float]  # semisync.wait_on_since(state_dir, now - Uptime)
    first_errant_at: Optional[float]  # epoch seconds of the first errant transaction's binlog event
    server_id: int = 0  # the node's
    errant_server_ids: Tuple[int, ...] = field(default=())


def unacknowledged(f: SemiSyncFacts, no_fallback_min_ms: int) -> Tuple[bool, str]:
    """Whether the tail is proven never acknowledged, and why (not).

    With semi-sync and no fallback every acknowledged commit reached the replica, which
    applied all it received before it was promoted: what the peer lacks was never
    acknowledged, provided the wait was on, without interruption, since before the tail
    began, and the tail is this node's own commits (the wait covers no others).
    """
    if not f.configured:
        return False, "failover.semi_sync is off"
    if not f.enabled:
        return False, "rpl_semi_sync_master_enabled is OFF on the node"
    if f.timeout_ms < no_fallback_min_ms:
        return False, f"rpl_semi_sync_master_timeout is {f.timeout_ms} ms (< {no_fallback_min_ms}): the master may fall back to asynchronous"
    if not f.wait_no_replica:
        return False, "rpl_semi_sync_master_wait_no_slave is OFF: without a replica the master does not wait"
    if f.wait_on_since is None:
        return False, "orch switched the semi-sync wait off last (semisync.json)"
    if f.first_errant_at is None:
        return False, "the first errant transaction's time is unknown"
    if f.wait_on_since > f.first_errant_at:
        return False, (f"the wait has been on only since {_utc(f.wait_on_since)}, after the first errant transaction "
                       f"({_utc(f.first_errant_at)})")
    others = sorted(set(f.errant_server_ids) - {f.server_id})
    if others:
        return False, f"errant transactions from server id(s) {others} were not committed on this node"
    return True, f"semi-sync without fallback was on since {_utc(f.wait_on_since)}, before the tail began ({_utc(f.first_errant_at)})"


def _utc(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def event_times(text: str) -> Dict[str, float]:
    """GTID -> epoch seconds, from mariadb-binlog output produced with TZ=UTC."""
    out: Dict[str, float] = {}
    for line in text.splitlines():
        m = _HEADER_GTID.match(line)
        if m:
            yy, mo, dd, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
            out[m.group(8)] = float(calendar.timegm((2000 + yy, mo, dd, hh, mi, ss, 0, 0, 0)))
    return out


def flashback_statements(text: str) -> List[str]:
    """The BINLOG statements of mariadb-binlog --flashback output, in order (its format
    description first, then the reversed row events); its BEGIN/COMMIT and session SETs
    are left out: the caller runs them in one transaction of its own."""
    if "DELIMITER " + _DELIMITER not in text:
        raise Refused("cannot rewind: unexpected mariadb-binlog --flashback output (no delimiter)")
    body = text.split("DELIMITER " + _DELIMITER, 1)[1].split("\nDELIMITER ;", 1)[0]
    out = []
    for chunk in body.split(_DELIMITER):
        statement = "\n".join(line for line in chunk.splitlines() if not line.startswith("#")).strip()
        if statement.startswith("BINLOG '"):
            out.append(statement)
    return out


# --------------------------------------------------------------------------- effects


def perform(cfg: Config, servers: Mapping[str, Server], step: Rewind, flavor: Flavor) -> str:
    """Run a Rewind step: re-check, locate, (prove), save, roll back, reset the GTID state."""
    import time

    from .observe import read_node

    check_flavor(flavor.name)
    server, peer_server = servers[step.node], servers[step.peer]
    me = read_node(server, flavor.name)
    peer = read_node(peer_server, cfg.flavor)
    if not flavor.is_fenced(me):
        raise Refused(f"{step.node} is not fenced: a node taking writes is never rewound")
    r = me.replica
    if r is not None and (r.io is not ThreadState.STOPPED or r.sql is not ThreadState.STOPPED):
        raise Refused(f"{step.node} replicates (IO {r.io.value}, SQL {r.sql.value}): stop replication before a rewind")
    errant = flavor.errant(me, peer)
    if not errant:
        return f"nothing to rewind: {step.node} has no errant GTIDs"
    if errant != step.errant:
        raise Refused(f"{step.node}'s errant GTIDs are now {errant}, not {step.errant} as planned; nothing changed, run again")
    unfinished = find_unfinished(cfg.state_dir, step.node, me.binlog_pos, errant)
    if unfinished is not None:
        # A run rolled the tail back and stopped before the GTID state was reset: finish it.
        where, summary = unfinished
        preflight(cfg, server, me.binlog_state)
        reset_gtid_state(server, step.node, summary["errant"], summary["common_state"], summary["common_pos"], where)
        summary["applied"] = True
        _write_json(f"{where}/summary.json", summary)
        return f"finished the rewind saved in {where} (rolled back earlier); GTID position now {summary['common_pos'] or '(empty)'}"
    settings = server.query("SELECT @@global.binlog_format AS format, @@global.binlog_row_image AS image, @@global.log_bin AS log_bin")[0]
    check_settings(settings["format"], settings["image"], settings["log_bin"])
    tail = locate(server, BinlogState.parse(peer.binlog_state), BinlogState.parse(me.binlog_state))
    check_errant_matches(tail, errant)

    excerpt, readable, flashbacks, first_at, proof = read_tail(cfg, server, flavor, step, tail, me.server_id)
    statements: List[Tuple[str, List[str]]] = []
    for name, text in flashbacks:
        found_trx = len([t for t in tail.transactions if t.file == name])
        begun = sum(1 for line in text.splitlines() if line.startswith("START TRANSACTION"))
        if begun != found_trx:
            raise Refused(f"cannot rewind: mariadb-binlog --flashback of {name} holds {begun} transactions, not {found_trx}")
        statements.append((name, flashback_statements(text)))
    # Its first statement is the format description event: replayed alone it changes nothing.
    preflight(cfg, server, me.binlog_state, statements[0][1][0] if statements and statements[0][1] else None)
    summary = {
        "node": step.node, "peer": step.peer, "errant": errant, "proven": step.proven, "proof": proof,
        "transactions": [str(g) for g in tail.gtids], "first_errant_at": _utc(first_at),
        "ranges": [{"file": f, "start": a, "stop": b} for f, a, b in tail.ranges()],
        "common_state": tail.common_state, "common_pos": tail.common_pos,
        "node_binlog_pos": me.binlog_pos, "peer_binlog_state": peer.binlog_state, "saved_at": _utc(time.time()),
        "flashback_committed": False, "applied": False,
    }
    where = save(cfg.state_dir, step.node, readable, excerpt, "".join(text for _, text in reversed(flashbacks)), summary)
    log.warning("%s: the discarded transactions %s are saved in %s", step.node, errant, where)

    apply_flashback(cfg, server, step, me.binlog_pos, list(reversed(statements)), where)  # the last file first
    summary["flashback_committed"] = True  # a run cut off from here on only finishes the GTID reset
    _write_json(f"{where}/summary.json", summary)
    reset_gtid_state(server, step.node, errant, tail.common_state, tail.common_pos, where)
    summary["applied"] = True
    _write_json(f"{where}/summary.json", summary)
    after = read_node(server, flavor.name)
    left = flavor.errant(after, peer)
    if left:
        raise Refused(f"{step.node} still has errant GTIDs {left} after the rewind (saved in {where})")
    how = "proven unacknowledged" if step.proven else "on the operator's word"
    return (f"rolled back {len(tail.transactions)} transaction(s) {errant} ({how}); saved in {where}; "
            f"GTID position now {tail.common_pos or '(empty)'}")


def read_tail(cfg: Config, server: Server, flavor: Flavor, step: Rewind, tail: Tail,
              server_id: int) -> Tuple[str, str, List[Tuple[str, str]], float, str]:
    """mariadb-binlog over the tail: the raw excerpt, the readable rows, the flashback per file,
    the first errant transaction's time and (automatic path) the proof, refused when it fails."""
    with OptionFile.for_account(cfg.mysql, "orch-rewind-") as options:
        reader = _Reader(options.path, server.node.host, server.node.port)
        excerpt = reader.run(tail, ["--verbose"])
        times = event_times(excerpt)
        found = sorted(times)
        if found != sorted(str(g) for g in tail.gtids):
            raise Refused(f"cannot rewind: mariadb-binlog read {','.join(found) or 'nothing'}, not the errant transactions "
                          f"{','.join(str(g) for g in tail.gtids)}")
        first_at = times[str(tail.gtids[0])]
        proof = ""
        if step.proven:
            proven, proof = unacknowledged(gather_facts(cfg, server, flavor, tail, first_at, server_id), _no_fallback_min_ms())
            if not proven:
                raise Refused(f"{step.node}'s tail {step.errant} is not proven unacknowledged: {proof}; "
                              f"nothing changed (orch demote --rewind discards it on an operator's word)")
        readable = reader.run(tail, ["--base64-output=decode-rows", "--verbose"])
        flashbacks = [(name, reader.run_file(name, start, stop, ["--flashback"])) for name, start, stop in tail.ranges()]
    return excerpt, readable, flashbacks, first_at, proof


def _no_fallback_min_ms() -> int:
    from .semisync import NO_FALLBACK_MIN_MS

    return NO_FALLBACK_MIN_MS


def gather_facts(cfg: Config, server: Server, flavor: Flavor, tail: Tail, first_at: float, server_id: int) -> SemiSyncFacts:
    """The facts of the proof as they are now (server settings, orch's record of the wait)."""
    import time

    from .semisync import wait_on_since

    row = server.query(flavor.semisync_query)[0]
    uptime = float(row.get("uptime") or 0)
    return SemiSyncFacts(
        configured=bool(cfg.failover.semi_sync),
        enabled=_on(row.get("enabled")),
        timeout_ms=int(row.get("timeout_ms") or 0),
        wait_no_replica=_on(row.get("wait_no_replica")),
        wait_on_since=wait_on_since(cfg.state_dir, time.time() - uptime),
        first_errant_at=first_at,
        server_id=server_id,
        errant_server_ids=tuple(sorted({g.server_id for g in tail.gtids})),
    )


def _on(value: Any) -> bool:
    return str(value).strip().upper() in ("1", "ON", "YES", "TRUE")


def locate(server: Server, peer_state: BinlogState, node_state: BinlogState) -> Tail:
    """Find the errant transactions in the node's binlogs (SQL only)."""
    files = [str(row["Log_name"]) for row in server.query("SHOW BINARY LOGS")]
    if not files:
        raise Refused("cannot rewind: the node has no binary logs")
    heads = []
    for name in files:
        rows = server.query("SHOW BINLOG EVENTS IN %s LIMIT 4", (name,))
        lists = [str(r.get("Info") or "") for r in rows if r.get("Event_type") == "Gtid_list"]
        heads.append((name, lists[0] if lists else "[]"))
    first = start_file(heads, peer_state)
    if first is None:
        raise Refused(f"cannot rewind: the errant transactions are no longer in the binary logs (purged before {files[0]})")
    events: List[BinlogEvent] = []
    for name in files[files.index(first):]:
        events += _events(server, name)
    start_state = parse_gtid_list(dict(heads)[first])
    return find_tail(events, start_state, peer_state, node_state)


def preflight(cfg: Config, server: Server, binlog_state: str, replay_probe: Optional[str] = None) -> None:
    """Refuse before anything is saved or changed when the orch account lacks a privilege a
    later step needs. Each probe changes nothing: the server refuses to set gtid_binlog_state
    while the binlog holds GTIDs (1956) only after checking the privilege (1227); the other
    two run on a session of their own (binary logging off, the format description replayed)."""
    from .db import Server
    from .errors import DatabaseError

    try:
        server.query("SET GLOBAL gtid_binlog_state = %s", (binlog_state,))
    except DatabaseError as exc:
        if exc.code == 1227:
            raise Refused("cannot rewind: the orch account may not set gtid_binlog_state (it needs REPLICATION MASTER ADMIN); "
                          "nothing changed") from None
        if exc.code != 1956:
            raise
    if replay_probe is None:
        return
    session = Server(server.node, cfg.mysql)
    try:
        for sql, privilege in (("SET SESSION sql_log_bin = 0", "BINLOG ADMIN"), (replay_probe, "BINLOG REPLAY")):
            try:
                session.query(sql)
            except DatabaseError as exc:
                if exc.code == 1227:
                    raise Refused(f"cannot rewind: {_server_message(exc)} (the orch account needs {privilege}); nothing changed") from None
                raise
    finally:
        session.close()


def _server_message(exc: Exception) -> str:
    """The server's own words from a DatabaseError (its SQL, a BINLOG block, left out)."""
    text = str(exc)
    tail = "(" + text.rsplit(": (", 1)[1] if ": (" in text else text
    return " ".join(tail.split())


def _events(server: Server, name: str) -> List[BinlogEvent]:
    out: List[BinlogEvent] = []
    pos = 4
    while True:
        rows = server.query("SHOW BINLOG EVENTS IN %s FROM %s LIMIT %s", (name, pos, PAGE), timeout=max(server.read_timeout, 30))
        out += [BinlogEvent.from_row(r) for r in rows]
        if len(rows) < PAGE:
            return out
        pos = out[-1].end_pos


class _Reader:
    """mariadb-binlog reading the node's binlogs over the network, as a replica would."""

    def __init__(self, options: str, host: str, port: int) -> None:
        self.options = options
        self.host = host
        self.port = port

    def run(self, tail: Tail, extra: Sequence[str]) -> str:
        return "".join(self.run_file(name, start, stop, extra) for name, start, stop in tail.ranges())

    def run_file(self, name: str, start: int, stop: int, extra: Sequence[str]) -> str:
        import os

        from .clientfile import run_client

        argv = [MARIADB_BINLOG, f"--defaults-file={self.options}", "--read-from-remote-server",
                f"--host={self.host}", f"--port={self.port}", f"--start-position={start}", f"--stop-position={stop}",
                *extra, name]
        env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
        proc = run_client(argv, " ".join(argv), BINLOG_TIMEOUT, env=env)
        return proc.stdout.decode("utf-8", "surrogateescape")


def save(state_dir: str, node: str, readable: str, excerpt: str, flashback: str, summary: Dict[str, Any]) -> str:
    """Write what is about to be discarded under state_dir/rewind/<UTC time>-<node>/ (0700)."""
    import os
    import time

    base = os.path.join(state_dir, "rewind")
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    where = os.path.join(base, f"{stamp}-{node}")
    n = 1
    while True:
        try:
            os.mkdir(where, 0o700)
            break
        except FileExistsError:
            n += 1
            where = os.path.join(base, f"{stamp}-{node}-{n}")
    os.chmod(where, 0o700)
    _write(os.path.join(where, "transactions.sql"),
           "-- What the discarded transactions did (mariadb-binlog --verbose; ### lines are the rows)\n" + readable)
    _write(os.path.join(where, "excerpt.binlog.sql"),
           "-- The discarded events themselves (mariadb-binlog output: BINLOG blocks replay them with the mariadb client)\n" + excerpt)
    _write(os.path.join(where, "flashback.sql"), "-- The rollback orch applied (mariadb-binlog --flashback), last file first\n" + flashback)
    _write_json(os.path.join(where, "summary.json"), summary)
    return where


def _write(path: str, text: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _write_json(path: str, data: Dict[str, Any]) -> None:
    import json
    import os

    tmp = path + ".tmp"
    _write(tmp, json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def apply_flashback(cfg: Config, server: Server, step: Rewind, binlog_pos: str, statements: Sequence[Tuple[str, List[str]]], where: str) -> None:
    """Apply the rollback in one transaction of a session of its own that is not binlogged:
    the undo creates no GTID, and a failure half-way rolls all of it back."""
    from .db import Server
    from .errors import DatabaseError

    session = Server(server.node, cfg.mysql, read_timeout=APPLY_TIMEOUT)
    why = f"roll back {step.node}'s errant transactions {step.errant} (saved in {where})"
    try:
        try:
            session.execute("SET SESSION sql_log_bin = 0", why=f"{why}: the undo must not create GTIDs")
        except DatabaseError as exc:
            if exc.code != 1227:
                raise
            raise Refused(f"cannot rewind: {_server_message(exc)} (the orch account needs BINLOG ADMIN to switch its "
                          f"binary logging off); nothing rolled back") from None
        conn_id = session.value("SELECT CONNECTION_ID()")
        if str(session.value("SELECT @@global.gtid_binlog_pos")).replace("\n", "") != binlog_pos:
            raise Refused(f"{step.node} binlogged something since it was read; nothing rolled back, run again")
        session.execute("START TRANSACTION", why=why)
        count = sum(len(s) for _, s in statements)
        log.info("%s: applying %d flashback statement(s) from %s  -- %s", step.node, count, f"{where}/flashback.sql", why)
        done = 0
        for name, batch in statements:
            for sql in batch:
                try:
                    session.query(sql)
                except DatabaseError as exc:
                    text = _server_message(exc)
                    if exc.code == 1227:
                        raise Refused(f"cannot rewind: {text} (the orch account needs BINLOG REPLAY); nothing rolled back") from None
                    raise DatabaseError(f"{step.node}: flashback statement {done + 1}/{count} ({name}) failed: {text}; "
                                        f"nothing rolled back (saved in {where})", exc.kind, exc.code) from None
                done += 1
        row = session.query("SELECT CONNECTION_ID() AS id, @@session.sql_log_bin AS log_bin")[0]
        if row["id"] != conn_id or int(row["log_bin"]) != 0:
            raise Refused(f"{step.node}: the rollback's session changed; nothing committed")
        session.execute("COMMIT", why=why)
        if str(session.value("SELECT @@global.gtid_binlog_pos")).replace("\n", "") != binlog_pos:
            raise Refused(f"{step.node}'s binlog moved during the rollback (saved in {where}); check it by hand")
    finally:
        session.close()


def reset_gtid_state(server: Server, node: str, errant: str, common_state: str, common_pos: str, where: str) -> None:
    """Forget the errant GTIDs: an empty binlog that starts at the common state, and the
    replication position at the last common GTID, so strict mode accepts the peer's next.
    (Never SET gtid_binlog_state from @@gtid_binlog_state itself: 10.11 hangs on that.)"""
    from .flavors.mariadb import REWIND_RESET_LOCK

    why = f"forget {node}'s rolled back GTIDs {errant} (saved in {where})"
    # The rewind mark is named after the binlog state this changes: the peer's orch sees this
    # lock instead until the shared state is set (the errant transactions are rolled back).
    marked = server.take_lock(REWIND_RESET_LOCK, f"{why}: the rewind mark while the GTID state changes")
    try:
        server.execute("RESET MASTER", why=why)
        server.execute("SET GLOBAL gtid_binlog_state = %s", (common_state,), why=f"{why}: start at the state shared with the peer")
        server.execute("SET GLOBAL gtid_slave_pos = %s", (common_pos,), why=f"{why}: replicate from the last common GTID")
        row = server.query("SELECT @@global.gtid_binlog_state AS state, @@global.gtid_current_pos AS pos")[0]
    finally:
        if marked:
            server.release_lock(REWIND_RESET_LOCK)
    state, pos = (str(row[k] or "").replace("\n", "") for k in ("state", "pos"))
    if str(BinlogState.parse(state)) != str(BinlogState.parse(common_state)) or str(GtidPos.parse(pos)) != str(GtidPos.parse(common_pos)):
        raise Refused(f"{node}: after the reset gtid_binlog_state is {state!r} and gtid_current_pos {pos!r}, "
                      f"expected {common_state!r} and {common_pos!r}")


def find_unfinished(state_dir: str, node: str, binlog_pos: str, errant: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """The newest saved rewind of ``node`` whose rollback was committed but whose GTID reset
    was not, for exactly this binlog position and errant set."""
    import glob
    import json
    import os

    for where in sorted(glob.glob(os.path.join(state_dir, "rewind", f"*-{node}*")), reverse=True):
        try:
            with open(os.path.join(where, "summary.json"), encoding="utf-8") as fh:
                summary = json.load(fh)
        except (OSError, ValueError):
            continue
        if (isinstance(summary, dict) and summary.get("node") == node and summary.get("flashback_committed") is True
                and summary.get("applied") is False and summary.get("node_binlog_pos") == binlog_pos
                and summary.get("errant") == errant):
            return where, summary
    return None
