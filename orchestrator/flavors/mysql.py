"""MySQL 5.7, 8.0 and 8.4: GTID sets, auto-positioning, super_read_only.

8.0.22 renamed SHOW SLAVE STATUS & co. to REPLICA; 8.0.23 added CHANGE REPLICATION
SOURCE TO; 8.4 removed the old spellings. Statements are chosen by version.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from ..gtid import GtidSet
from ..model import NodeState, ReplicaStatus, replica_status_from_row
from .common import HEARTBEAT_PERIOD, Required, Statement, version_tuple


class MySQL:
    name = "mysql"
    gtid_query = (
        "SELECT @@global.gtid_executed AS executed, @@global.gtid_executed AS binlog_pos, "
        "@@global.gtid_executed AS binlog_state, @@global.super_read_only AS super_read_only, 0 AS rewinding"
    )
    rewind_mark_query: Optional[str] = None  # no rewind on MySQL
    fence_statements: Tuple[str, ...] = ("SET GLOBAL read_only = 1", "SET GLOBAL super_read_only = 1")
    # Turning read_only off also turns super_read_only off.
    unfence_statements: Tuple[str, ...] = ("SET GLOBAL super_read_only = 0", "SET GLOBAL read_only = 0")

    def __init__(self, version: str) -> None:
        self.version = version
        v = version_tuple(version)
        self.replica_words = v >= (8, 0, 22)
        self.source_words = v >= (8, 0, 23)
        self.public_key = v >= (8, 0, 0)  # caching_sha2_password replication without TLS
        word = "REPLICA" if self.replica_words else "SLAVE"
        self.replica_status_query = f"SHOW {word} STATUS"
        self.stop_replica = f"STOP {word}"
        self.start_replica = f"START {word}"
        self.start_sql_thread = f"START {word} SQL_THREAD"
        self.stop_sql_thread = f"STOP {word} SQL_THREAD"
        self.reset_replica = f"RESET {word} ALL"
        # 8.2 renamed RESET MASTER (binary logs and GTID history); 8.4 removed the old name.
        self.reset_binary_logs = "RESET BINARY LOGS AND GTIDS" if v >= (8, 2, 0) else "RESET MASTER"
        # The semisync_source/semisync_replica plugins (8.0.26+) renamed the variables.
        side, other = ("source", "replica") if v >= (8, 0, 26) else ("master", "slave")
        self._semi = side
        status = "performance_schema.global_status" if v >= (5, 7, 6) else "information_schema.GLOBAL_STATUS"
        self.semisync_query = (
            f"SELECT @@global.rpl_semi_sync_{side}_enabled AS enabled, @@global.rpl_semi_sync_{side}_timeout AS timeout_ms, "
            f"@@global.rpl_semi_sync_{side}_wait_no_{other} AS wait_no_replica, @@global.rpl_semi_sync_{side}_wait_point AS wait_point, "
            f"@@global.rpl_semi_sync_{other}_enabled AS replica_enabled, "
            f"(SELECT VARIABLE_VALUE FROM {status} WHERE VARIABLE_NAME = 'Rpl_semi_sync_{side}_clients') AS clients, "
            f"(SELECT VARIABLE_VALUE FROM {status} WHERE VARIABLE_NAME = 'Rpl_semi_sync_{side}_wait_sessions') AS waiting, "
            f"(SELECT VARIABLE_VALUE FROM {status} WHERE VARIABLE_NAME = 'Uptime') AS uptime"
        )
        self.semisync_replica_on = f"SET GLOBAL rpl_semi_sync_{other}_enabled = ON"
        self.restart_io_thread: Tuple[str, ...] = (f"STOP {word} IO_THREAD", f"START {word} IO_THREAD")
        self._other = other

    def semisync_wait(self, on: bool, timeout_ms: int) -> List[Statement]:
        """Switch the source's wait on (lossless, no fallback) or off."""
        side, other = self._semi, self._other
        if not on:
            return [(f"SET GLOBAL rpl_semi_sync_{side}_enabled = OFF", ())]
        return [
            (f"SET GLOBAL rpl_semi_sync_{side}_timeout = %s", (int(timeout_ms),)),
            (f"SET GLOBAL rpl_semi_sync_{side}_wait_no_{other} = ON", ()),
            (f"SET GLOBAL rpl_semi_sync_{side}_wait_point = 'AFTER_SYNC'", ()),
            (f"SET GLOBAL rpl_semi_sync_{side}_enabled = ON", ()),
        ]

    def parse_replica_status(self, row: Optional[Mapping[str, Any]]) -> Optional[ReplicaStatus]:
        if not row:
            return None
        return replica_status_from_row(row, ("Retrieved_Gtid_Set",), str(row.get("Auto_Position", "0")) == "1")

    def change_source(self, host: str, port: int, user: str, password: str) -> List[Statement]:
        if self.source_words:
            sql = (
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST = %s, SOURCE_PORT = %s, SOURCE_USER = %s, "
                "SOURCE_PASSWORD = %s, SOURCE_AUTO_POSITION = 1, SOURCE_CONNECT_RETRY = 1, GET_SOURCE_PUBLIC_KEY = 1, "
                "SOURCE_HEARTBEAT_PERIOD = %s"
            )
        else:
            sql = (
                "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s, "
                "MASTER_PASSWORD = %s, MASTER_AUTO_POSITION = 1, MASTER_CONNECT_RETRY = 1"
            )
            if self.public_key:
                sql += ", GET_MASTER_PUBLIC_KEY = 1"
            sql += ", MASTER_HEARTBEAT_PERIOD = %s"
        return [(sql, (host, int(port), user, password, HEARTBEAT_PERIOD))]

    def preserve_relay_log(self, replica: ReplicaStatus) -> List[Statement]:
        # MySQL keeps the relay log across STOP/START REPLICA [SQL_THREAD], auto-position or
        # not: the applier resumes where it stopped. Only relay_log_recovery=ON at a server
        # restart discards it (and the retrieved set with it), before orch can see anything.
        return []

    def lacking(self, target: str, node: NodeState) -> str:
        received = node.replica.retrieved if node.replica is not None else ""
        return str(GtidSet.parse(target).subtract(GtidSet.parse(node.executed)).subtract(GtidSet.parse(received)))


    def wait_statement(self, target: str, timeout: float) -> Statement:
        return ("SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)", (target, float(timeout)))

    def unapplied(self, node: NodeState) -> str:
        if node.replica is None:
            return ""
        return str(GtidSet.parse(node.replica.retrieved).subtract(GtidSet.parse(node.executed)))

    def missing(self, target: str, node: NodeState) -> str:
        return str(GtidSet.parse(target).subtract(GtidSet.parse(node.executed)))

    def errant(self, node: NodeState, peer: NodeState) -> str:
        return str(GtidSet.parse(node.executed).subtract(GtidSet.parse(peer.executed)))

    def is_fenced(self, node: NodeState) -> bool:
        return node.read_only and node.super_read_only


# --- what orch needs of a MySQL server (orch doctor checks each; commands/doctor.py) ---------

# Each privilege orch's account needs ON *.*, and what for: docs/install.md's MySQL grants
# (tests/test_doctor.py holds them equal).
PRIVILEGES = (
    ("SYSTEM_VARIABLES_ADMIN", "SET GLOBAL read_only / super_read_only (the fence)"),
    ("REPLICATION_SLAVE_ADMIN", "STOP/START REPLICA and CHANGE REPLICATION SOURCE"),
    ("REPLICATION CLIENT", "SHOW REPLICA STATUS"),
    ("RELOAD", "RESET REPLICA ALL when promoting"),
    ("PROCESS", "seeing the sessions a fence waits behind"),
    ("CONNECTION_ADMIN", "killing them, and the connection reserved beyond max_connections"),
)
SEMI_SYNC_PRIVILEGE = ("SYSTEM_VARIABLES_ADMIN", "switching the semi-sync wait (failover.semi_sync)")
# What SUPER still covers: the dynamic privileges.
SUPER_COVERS = ("SYSTEM_VARIABLES_ADMIN", "REPLICATION_SLAVE_ADMIN", "CONNECTION_ADMIN")
CONNECTION_ADMIN = "CONNECTION_ADMIN"  # may connect beyond max_connections

# The server variables orch doctor reads beyond both flavors' (flavors/common.py): 8.0.26+
# spells the semi-sync ones source/replica, 8.0.26 log_replica_updates.
VARIABLES = (
    "log_replica_updates", "gtid_mode", "enforce_gtid_consistency", "server_uuid", "super_read_only",
    "rpl_semi_sync_source_enabled", "rpl_semi_sync_replica_enabled", "rpl_semi_sync_source_timeout",
    "rpl_semi_sync_source_wait_point",
)
# GTIDs: orch replicates with GTID auto-positioning, which needs both.
GTIDS = Required({"gtid_mode": ("ON",), "enforce_gtid_consistency": ("ON",)}, "fail",
                 "gtid_mode=ON, enforce_gtid_consistency=ON",
                 "gtid_mode={gtid_mode}, enforce_gtid_consistency={enforce_gtid_consistency}",
                 "set gtid_mode=ON and enforce_gtid_consistency=ON (orch replicates with GTID auto-positioning)")

# Where read_only's value came from, and the server's words for config / runtime / default.
READ_ONLY_ORIGIN_QUERY = ("SELECT VARIABLE_SOURCE AS origin FROM performance_schema.variables_info "
                          "WHERE VARIABLE_NAME = 'read_only'")
READ_ONLY_ORIGINS = {
    "COMMAND_LINE": "config", "GLOBAL": "config", "SERVER": "config", "EXPLICIT": "config", "EXTRA": "config",
    "PERSISTED": "config", "LOGIN": "config", "DYNAMIC": "runtime", "COMPILED": "default",
}
