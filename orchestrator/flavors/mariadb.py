"""MariaDB (10.x, 11.x): GTID positions per domain, MASTER_USE_GTID, MASTER_GTID_WAIT."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from ..gtid import BinlogState, GtidPos, mariadb_errant
from ..model import NodeState, ReplicaStatus, replica_status_from_row
from .common import HEARTBEAT_PERIOD, ON, Required, Statement


# The name of the lock a rewind of this server holds, for its binlog state as it is now: held
# while the state is unchanged means "these errant transactions are being rolled back".
REWIND_MARK_NAME = "CONCAT('orch_rewind:', SHA1(@@global.gtid_binlog_state))"
# Held while a rewind resets the GTID state (RESET MASTER, then the shared state set): the
# binlog state changes under the mark then, the errant transactions already rolled back.
REWIND_RESET_LOCK = "orch_rewind:reset"


class MariaDB:
    name = "mariadb"
    gtid_query = (
        "SELECT @@global.gtid_current_pos AS executed, @@global.gtid_binlog_pos AS binlog_pos, "
        "@@global.gtid_binlog_state AS binlog_state, 0 AS super_read_only, "
        f"(IS_USED_LOCK({REWIND_MARK_NAME}) IS NOT NULL OR IS_USED_LOCK('{REWIND_RESET_LOCK}') IS NOT NULL) AS rewinding"
    )
    # Held by the run that rewinds this server, from before its replication stops until the
    # rewind ends (execute.py, MarkRewind): the lock's name carries its binlog state then.
    rewind_mark_query: Optional[str] = f"SELECT {REWIND_MARK_NAME} AS name"
    # ALL: the same columns plus Slave_received_heartbeats, which prove a live source.
    replica_status_query = "SHOW ALL SLAVES STATUS"
    fence_statements: Tuple[str, ...] = ("SET GLOBAL read_only = 1",)
    unfence_statements: Tuple[str, ...] = ("SET GLOBAL read_only = 0",)
    stop_replica = "STOP SLAVE"
    start_replica = "START SLAVE"
    start_sql_thread = "START SLAVE SQL_THREAD"
    stop_sql_thread = "STOP SLAVE SQL_THREAD"
    reset_replica = "RESET SLAVE ALL"
    reset_binary_logs = "RESET MASTER"
    semisync_query = (
        "SELECT @@global.rpl_semi_sync_master_enabled AS enabled, @@global.rpl_semi_sync_master_timeout AS timeout_ms, "
        "@@global.rpl_semi_sync_master_wait_no_slave AS wait_no_replica, @@global.rpl_semi_sync_master_wait_point AS wait_point, "
        "@@global.rpl_semi_sync_slave_enabled AS replica_enabled, "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS') AS clients, "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS') AS waiting, "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME') AS uptime"
    )
    semisync_replica_on = "SET GLOBAL rpl_semi_sync_slave_enabled = ON"
    restart_io_thread: Tuple[str, ...] = ("STOP SLAVE IO_THREAD", "START SLAVE IO_THREAD")

    def semisync_wait(self, on: bool, timeout_ms: int) -> List[Statement]:
        """Switch the master's wait on (lossless, no fallback) or off."""
        if not on:
            return [("SET GLOBAL rpl_semi_sync_master_enabled = OFF", ())]
        return [
            ("SET GLOBAL rpl_semi_sync_master_timeout = %s", (int(timeout_ms),)),
            ("SET GLOBAL rpl_semi_sync_master_wait_no_slave = ON", ()),
            ("SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'", ()),
            ("SET GLOBAL rpl_semi_sync_master_enabled = ON", ()),
        ]

    def __init__(self, version: str) -> None:
        self.version = version

    def parse_replica_status(self, row: Optional[Mapping[str, Any]]) -> Optional[ReplicaStatus]:
        if not row:
            return None
        using = str(row.get("Using_Gtid", "No") or "No")
        return replica_status_from_row(row, ("Gtid_IO_Pos",), using.lower() != "no")

    def change_source(self, host: str, port: int, user: str, password: str) -> List[Statement]:
        # A former master's own transactions are in its binlog, not in gtid_slave_pos:
        # start from everything it has (the errant check ran before this).
        return [
            ("SET GLOBAL gtid_slave_pos = @@global.gtid_current_pos", ()),
            # CHANGE MASTER converts its strings to the system charset (utf8mb3): a 4-byte
            # UTF-8 character in the password would be stored as '?'. With the client
            # charset equal to it, the password's bytes pass unchanged.
            ("SET SESSION character_set_client = @@global.character_set_system", ()),
            (
                "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s, "
                "MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, "
                "MASTER_HEARTBEAT_PERIOD = %s",
                (host, int(port), user, password, HEARTBEAT_PERIOD),
            ),
            ("SET SESSION character_set_client = utf8mb4", ()),  # what orch connects with
        ]

    def preserve_relay_log(self, replica: ReplicaStatus) -> List[Statement]:
        # With both threads stopped, START SLAVE [SQL_THREAD] in GTID mode deletes the relay
        # log and re-fetches from gtid_slave_pos: with the source dead, everything received
        # and not applied is lost. File/position mode at the applier's relay position keeps it.
        if not replica.relay_log_file:
            return []
        return [(
            "CHANGE MASTER TO MASTER_USE_GTID = no, RELAY_LOG_FILE = %s, RELAY_LOG_POS = %s",
            (replica.relay_log_file, int(replica.relay_log_pos)),
        )]

    def lacking(self, target: str, node: NodeState) -> str:
        received = node.replica.retrieved if node.replica is not None else ""
        return str(GtidPos.parse(target).missing_from(GtidPos.parse(node.executed)).missing_from(GtidPos.parse(received)))

    def wait_statement(self, target: str, timeout: float) -> Statement:
        return ("SELECT MASTER_GTID_WAIT(%s, %s)", (target, float(timeout)))

    def unapplied(self, node: NodeState) -> str:
        if node.replica is None:
            return ""
        return str(GtidPos.parse(node.replica.retrieved).missing_from(GtidPos.parse(node.executed)))

    def missing(self, target: str, node: NodeState) -> str:
        return str(GtidPos.parse(target).missing_from(GtidPos.parse(node.executed)))

    def errant(self, node: NodeState, peer: NodeState) -> str:
        found = mariadb_errant(GtidPos.parse(node.binlog_pos), BinlogState.parse(peer.binlog_state))
        return ",".join(str(g) for g in found)

    def is_fenced(self, node: NodeState) -> bool:
        return node.read_only


# --- what orch needs of a MariaDB server (orch doctor checks each; commands/doctor.py) -------

# Each privilege orch's account needs ON *.*, and what for: docs/install.md's orch GRANT line
# (tests/test_doctor.py holds them equal; tests/test_grants.py proves each needed).
PRIVILEGES = (
    ("RELOAD", "RESET SLAVE ALL when promoting"),
    ("PROCESS", "seeing the sessions a fence waits behind"),
    ("CONNECTION ADMIN", "killing them, and the connection reserved beyond max_connections"),
    ("REPLICATION SLAVE ADMIN", "STOP/START SLAVE and CHANGE MASTER"),
    ("READ_ONLY ADMIN", "SET GLOBAL read_only (the fence)"),
    ("SLAVE MONITOR", "SHOW ALL SLAVES STATUS"),
)
SEMI_SYNC_PRIVILEGE = ("REPLICATION MASTER ADMIN", "switching the semi-sync wait (failover.semi_sync)")
# What SUPER still covers on MariaDB 10.11: the semi-sync master variables (error 1227
# names "SUPER, REPLICATION MASTER ADMIN").
SUPER_COVERS = ("REPLICATION MASTER ADMIN",)
CONNECTION_ADMIN = "CONNECTION ADMIN"  # may connect beyond max_connections

# The server variables orch doctor reads beyond both flavors' (flavors/common.py).
VARIABLES = ("gtid_strict_mode",)
# GTIDs: strict mode, else out-of-order GTIDs are accepted silently (a warning).
GTIDS = Required({"gtid_strict_mode": ON}, "warn", "gtid_strict_mode=ON",
                 "gtid_strict_mode is OFF: out-of-order GTIDs are accepted silently",
                 "set gtid_strict_mode=ON in my.cnf on both servers")

# Where read_only's value came from, and the server's words for config / runtime / default.
READ_ONLY_ORIGIN_QUERY = ("SELECT GLOBAL_VALUE_ORIGIN AS origin FROM information_schema.SYSTEM_VARIABLES "
                          "WHERE VARIABLE_NAME = 'READ_ONLY'")
READ_ONLY_ORIGINS = {"CONFIG": "config", "COMMAND-LINE": "config", "SQL": "runtime", "COMPILE-TIME": "default"}
