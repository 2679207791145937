"""Frozen values describing what was observed. Built once per run by observe.py."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple


class ThreadState(str, enum.Enum):
    RUNNING = "running"
    CONNECTING = "connecting"
    STOPPED = "stopped"
    ABSENT = "absent"  # no replication configured at all


def thread_state(value: Any) -> ThreadState:
    text = str(value or "").strip().lower()
    if text == "yes":
        return ThreadState.RUNNING
    if text in ("connecting", "preparing"):
        return ThreadState.CONNECTING
    return ThreadState.STOPPED


@dataclass(frozen=True)
class ReplicaStatus:
    """Replication state of one server, flavor-neutral (read by column name)."""

    source_host: str
    source_port: int
    io: ThreadState
    sql: ThreadState
    lag: Optional[int]
    retrieved: str  # MySQL Retrieved_Gtid_Set, MariaDB Gtid_IO_Pos
    auto_position: bool  # MySQL Auto_Position=1, MariaDB Using_Gtid != No
    last_io_error: str = ""
    last_sql_errno: int = 0
    last_sql_error: str = ""
    relay_log_file: str = ""  # where the SQL thread stands in the relay log
    relay_log_pos: int = 0
    # Moves while the IO thread receives anything (events or heartbeats): proof its source is alive.
    io_marker: Tuple[Any, ...] = ()
    heartbeat_period: Optional[float] = None
    # Seconds since it last received anything (event or heartbeat) from its source, as the
    # maintainer measured it across passes (orchestrator/receipts.py); None: not measured.
    received_ago: Optional[float] = None

    @property
    def configured(self) -> bool:
        return bool(self.source_host)

    @property
    def running(self) -> bool:
        return self.io is ThreadState.RUNNING and self.sql is ThreadState.RUNNING

    @property
    def sql_error(self) -> bool:
        return self.sql is not ThreadState.RUNNING and self.last_sql_errno != 0


def pick(row: Mapping[str, Any], names: Sequence[str], default: Any = None) -> Any:
    """First present column among spellings (Slave_*/Replica_*, Master_*/Source_*)."""
    for name in names:
        if name in row:
            return row[name]
    return default


def replica_status_from_row(row: Optional[Mapping[str, Any]], retrieved_columns: Sequence[str], auto_position: Any) -> Optional[ReplicaStatus]:
    """Map a SHOW SLAVE/REPLICA STATUS row (a dict keyed by column name) to ReplicaStatus."""
    if not row:
        return None
    lag = pick(row, ("Seconds_Behind_Source", "Seconds_Behind_Master"))
    return ReplicaStatus(
        source_host=str(pick(row, ("Source_Host", "Master_Host"), "") or ""),
        source_port=int(pick(row, ("Source_Port", "Master_Port"), 0) or 0),
        io=thread_state(pick(row, ("Replica_IO_Running", "Slave_IO_Running"))),
        sql=thread_state(pick(row, ("Replica_SQL_Running", "Slave_SQL_Running"))),
        lag=None if lag is None or lag == "" else int(lag),
        retrieved=str(pick(row, retrieved_columns, "") or "").replace("\n", ""),
        auto_position=bool(auto_position),
        last_io_error=str(pick(row, ("Last_IO_Error",), "") or ""),
        last_sql_errno=int(pick(row, ("Last_SQL_Errno",), 0) or 0),
        last_sql_error=str(pick(row, ("Last_SQL_Error",), "") or ""),
        relay_log_file=str(pick(row, ("Relay_Log_File",), "") or ""),
        relay_log_pos=int(pick(row, ("Relay_Log_Pos",), 0) or 0),
        io_marker=(
            pick(row, ("Source_Log_File", "Master_Log_File")), pick(row, ("Read_Source_Log_Pos", "Read_Master_Log_Pos")),
            pick(row, ("Slave_received_heartbeats",)),
        ),
        heartbeat_period=_float(pick(row, ("Slave_heartbeat_period",))),
    )


def _float(value: Any) -> Optional[float]:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class SemiSync:
    """A server's semi-synchronous replication as observed (read only with failover.semi_sync)."""

    enabled: bool = False  # the master side waits for an acknowledgement
    timeout_ms: int = 0  # after which it falls back to asynchronous replication
    wait_no_replica: bool = False  # waits even with no semi-sync replica connected
    wait_point: str = ""  # AFTER_SYNC: nothing is visible or acknowledged before the replica has it
    replica_enabled: bool = False  # the replica side acknowledges (takes effect at the IO thread's start)
    clients: int = 0  # semi-sync replicas connected to it now
    waiting: int = 0  # sessions waiting for an acknowledgement now
    error: str = ""  # why it could not be read (then nothing else here is known)

    def no_fallback(self, min_timeout_ms: int) -> bool:
        """The wait is on and never gives up by itself."""
        return self.enabled and self.wait_no_replica and self.timeout_ms >= min_timeout_ms and not self.error


@dataclass(frozen=True)
class NodeState:
    """One server as observed. ``reachable=False`` means nothing else is known; then
    ``alive`` tells a server that answered unusably (access denied, too many connections,
    a statement timing out, its replica still receiving from it: it may still take
    writes) from one that is down (refused, unroutable, no handshake)."""

    name: str
    host: str
    port: int
    reachable: bool
    error: str = ""
    alive: bool = False
    version: str = ""
    flavor: str = ""
    server_id: int = 0
    read_only: bool = False
    super_read_only: bool = False
    executed: str = ""  # MySQL gtid_executed; MariaDB gtid_current_pos
    binlog_pos: str = ""  # MariaDB gtid_binlog_pos; MySQL: gtid_executed
    binlog_state: str = ""  # MariaDB gtid_binlog_state; MySQL: gtid_executed
    replica: Optional[ReplicaStatus] = None
    semisync: Optional[SemiSync] = None
    uptime: int = 0  # seconds since the server started (read with semisync)
    # An orch rewind of this server holds its mark (execute.py, MarkRewind) and its binlog
    # state has not changed since: its errant transactions are being rolled back.
    rewinding: bool = False

    @property
    def writable(self) -> bool:
        return self.reachable and not self.read_only

    @property
    def down(self) -> bool:
        return not self.reachable and not self.alive

    def replicates_from(self, host: str, port: int) -> bool:
        r = self.replica
        return r is not None and r.configured and r.source_host == host and r.source_port == port


@dataclass(frozen=True)
class Backend:
    """One row of Atlas's `SELECT * FROM backends`. ``ndx`` is a position, valid only
    until the next REMOVE BACKEND or ADD MASTER."""

    ndx: int
    address: str
    state: str  # unknown, up, down or offline: not a health signal
    type: str  # "rw" or "ro"


@dataclass(frozen=True)
class AtlasState:
    """One Atlas proxy as observed: its backends and, when read, its config file's."""

    name: str
    reachable: bool
    error: str = ""
    backends: Tuple[Backend, ...] = ()
    # The read-only backends its config file lists (persist: rewrite); None when not read.
    config_file: str = ""
    config_ro: Optional[Tuple[str, ...]] = None
    config_error: str = ""  # why the config file could not be read

    def ro_addresses(self) -> Tuple[str, ...]:
        return tuple(b.address for b in self.backends if b.type == "ro")


@dataclass(frozen=True)
class PromotionRecord:
    """The latest promotion on record in orch_meta.promotions (anti-flapping: read by
    orchestrator/promotions.py, decided on by orchestrator/antiflap.py), from either
    server's copy (the table replicates)."""

    run_id: str
    kind: str  # failover (automatic), operator (orch promote) or switchover
    node: str  # the node promoted
    at: float  # when, by the clock of the server that wrote it (UNIX time)
    age: float  # seconds since, by the clock of the server it was read from
    acked: bool = False  # an operator acknowledged it (orch ack)
    seen_on: str = ""  # the node whose copy it was read from


@dataclass(frozen=True)
class PauseRecord:
    """The latest maintenance-mode record (orch pause / orch resume: read by
    orchestrator/pauses.py, decided on by orchestrator/pause.py), from either server's copy
    of orch_meta.pause (the table replicates) or this host's state_dir (written there when
    no server was writable)."""

    kind: str  # pause or resume
    run_id: str
    node: str  # the host (node) orch pause/resume ran on
    by: str  # who: the operator's user name
    reason: str
    at: float  # when, by the clock of the server that wrote it (UNIX time; state_dir: this host's clock)
    age: float  # seconds since, by the clock of the copy it was read from
    remaining: Optional[float] = None  # seconds left of a pause --for (None: until orch resume)
    seen_on: str = ""  # the node whose copy it was read from, or "state_dir"

    @property
    def active(self) -> bool:
        """A pause in force now: the latest record is a pause that has not run out."""
        return self.kind == "pause" and (self.remaining is None or self.remaining > 0)

    def describe(self) -> str:
        until = "until orch resume" if self.remaining is None else (
            f"{max(self.remaining, 0):.0f}s left" if self.remaining > 0 else f"ran out {-self.remaining:.0f}s ago")
        what = "paused" if self.kind == "pause" else "resumed"
        return (f"{what} by {self.by or '?'} on {self.node} {max(self.age, 0):.0f}s ago"
                + (f" ({until})" if self.kind == "pause" else "") + (f": {self.reason}" if self.reason else ""))


@dataclass(frozen=True)
class TokenState:
    """The write token in etcd as observed (etcd: configured; orchestrator/token.py decides on
    it, orchestrator/lease.py reads it): a plain value, never a client call."""

    holder: str = ""  # the node holding it ("" : nobody, or unknown when ``error``)
    lease_left: Optional[float] = None  # seconds left of the holder's lease, by the etcd leader's clock
    lease: int = 0  # the holder's lease id
    mod_revision: int = 0  # the key's revision when read (a release or take-over is guarded by it)
    error: str = ""  # why etcd could not be read: then nothing above is known

    @property
    def known(self) -> bool:
        return not self.error

    def held_by(self, name: str) -> bool:
        return self.known and self.holder == name

    def describe(self) -> str:
        if self.error:
            return f"unknown ({self.error})"
        if not self.holder:
            return "held by nobody"
        left = f", lease {self.lease_left:.1f}s left" if self.lease_left is not None and self.lease_left >= 0 else ""
        return f"held by {self.holder}{left}"


@dataclass(frozen=True)
class ClusterView:
    """Everything one run knows: both servers (and optionally Atlas), read once."""

    me: NodeState
    peer: NodeState
    holds_vip: Optional[bool] = None  # None: no VIP configured or not checked
    atlas: Tuple[AtlasState, ...] = ()
    # Anti-flapping (read only with failover.block_seconds): the latest promotion on record,
    # and why it could not be read ("" when it could, or when nothing is recorded).
    last_promotion: Optional[PromotionRecord] = None
    promotion_error: str = ""
    # failover.witness, pinged only when the peer is down: False means this node may be
    # the isolated one. None: not asked (no witness configured, or the peer is reachable).
    witness: Optional[bool] = None
    # Maintenance mode: the latest orch pause/resume record (None: none on record), and why a
    # copy could not be read ("" when every reachable copy could).
    pause: Optional[PauseRecord] = None
    pause_error: str = ""
    # The latest record in the databases alone (what the other host sees too): a resume kept
    # in this host's state_dir may be newer than a pause still on record there.
    pause_shared: Optional[PauseRecord] = None
    # The write token (etcd: configured; None without it: orch behaves as without etcd).
    token: Optional[TokenState] = None

    @property
    def paused(self) -> Optional[PauseRecord]:
        """The pause in force now, or None."""
        return self.pause if self.pause is not None and self.pause.active else None
