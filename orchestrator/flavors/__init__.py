"""Server flavors as data: each module satisfies :class:`Flavor`; the registry picks one.

No code outside this package asks which flavor it is talking to.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Protocol, Tuple

from ..model import NodeState, ReplicaStatus
from .common import Statement

# Both flavors: the sessions a fence may wait behind, and how a fence gets a deadline.
# Replication, binlog dump and system threads are never candidates.
BLOCKERS_QUERY = (
    "SELECT ID AS id, USER AS user, HOST AS host, COMMAND AS command, TIME AS time, STATE AS state, INFO AS info "
    "FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND COMMAND IN ('Query', 'Execute') "
    "AND USER NOT IN ('system user', 'event_scheduler')"
)
LOCK_WAIT_TIMEOUT = "SET SESSION lock_wait_timeout = %s"
# A commit waiting for its replica's acknowledgement holds a fence back; when the node is
# fenced it is never acknowledged anyway (both flavors name the state this way).
SEMISYNC_WAIT_STATE = "Waiting for semi-sync ACK"
KILL_CONNECTION = "KILL CONNECTION %s"


class Flavor(Protocol):
    name: str
    version: str
    gtid_query: str  # one row: executed, binlog_pos, binlog_state, super_read_only, rewinding
    rewind_mark_query: Optional[str]  # one row: name, the lock a rewind holds (None: no rewind)
    replica_status_query: str
    fence_statements: Tuple[str, ...]
    unfence_statements: Tuple[str, ...]
    stop_replica: str
    start_replica: str
    start_sql_thread: str
    stop_sql_thread: str
    reset_replica: str
    reset_binary_logs: str  # empties the binary log and the GTID history (bootstrap, before a seed)
    semisync_query: str  # one row: enabled, timeout_ms, wait_no_replica, wait_point, replica_enabled, clients, waiting, uptime
    semisync_replica_on: str
    restart_io_thread: Tuple[str, ...]

    def semisync_wait(self, on: bool, timeout_ms: int) -> List[Statement]:
        """Statements that switch the master's semi-sync wait on (no fallback) or off."""

    def parse_replica_status(self, row: Optional[Mapping[str, Any]]) -> Optional[ReplicaStatus]:
        """Map a status row, read by column name, to the neutral dataclass."""

    def change_source(self, host: str, port: int, user: str, password: str) -> List[Statement]:
        """Statements that point replication at host:port with GTID auto-positioning.

        Run with replication stopped. The password travels only as a bound parameter.
        """

    def wait_statement(self, target: str, timeout: float) -> Statement:
        """A SELECT returning one value: waits until ``target`` GTIDs are applied."""

    def preserve_relay_log(self, replica: ReplicaStatus) -> List[Statement]:
        """Statements that keep the relay log when the SQL thread is started with both threads stopped."""

    def lacking(self, target: str, node: NodeState) -> str:
        """GTIDs of ``target`` node has neither applied nor received."""

    def unapplied(self, node: NodeState) -> str:
        """GTIDs received by the replica but not yet applied ('' when drained)."""

    def missing(self, target: str, node: NodeState) -> str:
        """GTIDs of ``target`` (another server's executed set) that node has not applied."""

    def errant(self, node: NodeState, peer: NodeState) -> str:
        """Transactions node has and peer lacks ('' when none)."""

    def is_fenced(self, node: NodeState) -> bool:
        """Whether every read-only switch this flavor has is on."""


def detect(version: str) -> str:
    """Flavor name from ``SELECT VERSION()``."""
    return "mariadb" if "mariadb" in version.lower() else "mysql"


def get(name: str, version: str) -> Flavor:
    """The flavor module's implementation for a server version."""
    if name == "auto":
        name = detect(version)
    if name == "mariadb":
        from . import mariadb

        return mariadb.MariaDB(version)
    if name == "mysql":
        from . import mysql

        return mysql.MySQL(version)
    raise ValueError(f"unknown flavor {name!r}")


def requirements(name: str) -> Any:
    """The module of flavor ``name`` (MariaDB's for an unknown one), whose constants say what
    orch needs of such a server: PRIVILEGES, SEMI_SYNC_PRIVILEGE, SUPER_COVERS,
    CONNECTION_ADMIN, GTIDS, READ_ONLY_ORIGIN_QUERY and READ_ONLY_ORIGINS (orch doctor)."""
    if name == "mysql":
        from . import mysql

        return mysql
    from . import mariadb

    return mariadb


def server_variables() -> Tuple[str, ...]:
    """Every server variable orch doctor reads, either flavor's (a server answers only those it has)."""
    from . import common, mariadb, mysql

    return common.VARIABLES + mysql.VARIABLES + mariadb.VARIABLES
