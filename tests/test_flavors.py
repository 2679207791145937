"""Statement-level tests for both flavors (no MySQL server can be installed here)."""

import re
from pathlib import Path
from typing import List

import pytest

from orchestrator import flavors
from orchestrator.model import NodeState, ReplicaStatus, ThreadState

A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
B = "4f22ab58-82db-22f2-af44-d91bba53a673"


def mysql_node(executed, retrieved=None, ro=True, sro=True):
    f = flavors.get("mysql", "8.0.36")
    row = None if retrieved is None else {"Replica_IO_Running": "Yes", "Replica_SQL_Running": "Yes", "Source_Host": "h", "Source_Port": 3306,
                                         "Seconds_Behind_Source": 0, "Retrieved_Gtid_Set": retrieved, "Auto_Position": 1}
    return NodeState("n", "h", 3306, True, version="8.0.36", flavor="mysql", read_only=ro, super_read_only=sro,
                     executed=executed, binlog_pos=executed, binlog_state=executed, replica=f.parse_replica_status(row))


@pytest.mark.parametrize("version, flavor", [
    ("10.11.6-MariaDB-0+deb12u1-log", "mariadb"), ("11.4.2-MariaDB", "mariadb"),
    ("8.0.36", "mysql"), ("5.7.44-log", "mysql"), ("8.4.0-commercial", "mysql"),
])
def test_detect(version, flavor):
    assert flavors.detect(version) == flavor
    assert flavors.get("auto", version).name == flavor


@pytest.mark.parametrize("version, status, stop, start, reset, change", [
    ("5.7.44-log", "SHOW SLAVE STATUS", "STOP SLAVE", "START SLAVE", "RESET SLAVE ALL", "CHANGE MASTER TO MASTER_HOST"),
    ("8.0.21", "SHOW SLAVE STATUS", "STOP SLAVE", "START SLAVE", "RESET SLAVE ALL", "CHANGE MASTER TO MASTER_HOST"),
    ("8.0.22", "SHOW REPLICA STATUS", "STOP REPLICA", "START REPLICA", "RESET REPLICA ALL", "CHANGE MASTER TO MASTER_HOST"),
    ("8.0.23", "SHOW REPLICA STATUS", "STOP REPLICA", "START REPLICA", "RESET REPLICA ALL", "CHANGE REPLICATION SOURCE TO SOURCE_HOST"),
    ("8.4.3", "SHOW REPLICA STATUS", "STOP REPLICA", "START REPLICA", "RESET REPLICA ALL", "CHANGE REPLICATION SOURCE TO SOURCE_HOST"),
    ("9.1.0", "SHOW REPLICA STATUS", "STOP REPLICA", "START REPLICA", "RESET REPLICA ALL", "CHANGE REPLICATION SOURCE TO SOURCE_HOST"),
])
def test_mysql_statements_by_version(version, status, stop, start, reset, change):
    f = flavors.get("mysql", version)
    assert (f.replica_status_query, f.stop_replica, f.start_replica, f.reset_replica) == (status, stop, start, reset)
    assert f.start_sql_thread == f"{start} SQL_THREAD" and f.stop_sql_thread == f"{stop} SQL_THREAD"
    [(sql, args)] = f.change_source("10.0.0.2", 3306, "repl", "s3cret'pw")
    assert sql.startswith(change)
    assert ("SOURCE_AUTO_POSITION = 1" if "SOURCE" in change else "MASTER_AUTO_POSITION = 1") in sql
    assert "s3cret" not in sql and args == ("10.0.0.2", 3306, "repl", "s3cret'pw", 1.0)
    assert "HEARTBEAT_PERIOD = %s" in sql  # a source's heartbeats prove it alive
    assert sql.count("%s") == 5
    # old spellings are gone in 8.4; the new ones do not exist before 8.0.22/23
    if version.startswith(("8.4", "9.")):
        assert "SLAVE" not in sql + f.stop_replica + f.replica_status_query and "MASTER_" not in sql


def test_mysql_public_key_only_on_8():
    assert "GET_MASTER_PUBLIC_KEY" not in flavors.get("mysql", "5.7.44").change_source("h", 1, "u", "p")[0][0]
    assert "GET_MASTER_PUBLIC_KEY = 1" in flavors.get("mysql", "8.0.20").change_source("h", 1, "u", "p")[0][0]
    assert "GET_SOURCE_PUBLIC_KEY = 1" in flavors.get("mysql", "8.4.0").change_source("h", 1, "u", "p")[0][0]


def test_mysql_fencing_uses_super_read_only():
    f = flavors.get("mysql", "8.0.36")
    assert f.fence_statements == ("SET GLOBAL read_only = 1", "SET GLOBAL super_read_only = 1")
    assert f.unfence_statements[0] == "SET GLOBAL super_read_only = 0"
    assert f.is_fenced(mysql_node("", ro=True, sro=True))
    assert not f.is_fenced(mysql_node("", ro=True, sro=False))
    assert "@@global.super_read_only" in f.gtid_query and "@@global.gtid_executed" in f.gtid_query


def test_mysql_wait_errant_and_unapplied():
    f = flavors.get("mysql", "8.0.36")
    assert f.wait_statement(f"{A}:1-5", 2.5) == ("SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)", (f"{A}:1-5", 2.5))
    me = mysql_node(f"{A}:1-10,{B}:1-3", retrieved=f"{A}:1-12")
    assert f.unapplied(me) == f"{A}:11-12"
    assert f.missing(f"{A}:1-15", me) == f"{A}:11-15"
    peer = mysql_node(f"{A}:1-12")
    assert f.errant(me, peer) == f"{B}:1-3"  # GTID_SUBTRACT(me, peer)
    assert f.errant(peer, me) == f"{A}:11-12"


def test_mysql_status_read_by_column_name_both_spellings():
    f = flavors.get("mysql", "5.7.44")
    old = {"Slave_IO_Running": "Connecting", "Slave_SQL_Running": "No", "Master_Host": "10.0.0.1", "Master_Port": 3307,
           "Seconds_Behind_Master": None, "Retrieved_Gtid_Set": f"{A}:1-3,\n{B}:1", "Auto_Position": 1,
           "Last_SQL_Errno": 1062, "Last_SQL_Error": "dup", "Last_IO_Error": "", "Extra_Column_In_The_Future": "x"}
    r = f.parse_replica_status(old)
    assert (r.io, r.sql, r.source_host, r.source_port, r.lag) == (ThreadState.CONNECTING, ThreadState.STOPPED, "10.0.0.1", 3307, None)
    assert r.retrieved == f"{A}:1-3,{B}:1" and r.auto_position and r.sql_error
    new = {k.replace("Slave", "Replica").replace("Master", "Source"): v for k, v in old.items()}
    assert f.parse_replica_status(new) == r
    assert f.parse_replica_status(None) is None


def test_mariadb_statements():
    f = flavors.get("mariadb", "10.11.6-MariaDB")
    assert f.replica_status_query == "SHOW ALL SLAVES STATUS" and f.fence_statements == ("SET GLOBAL read_only = 1",)
    stmts = f.change_source("10.0.0.1", 3306, "repl", "pw")
    assert stmts[0][0] == "SET GLOBAL gtid_slave_pos = @@global.gtid_current_pos"
    assert stmts[1][0] == "SET SESSION character_set_client = @@global.character_set_system"  # 4-byte UTF-8 passwords
    assert stmts[3][0] == "SET SESSION character_set_client = utf8mb4"
    sql, args = stmts[2]
    assert "MASTER_USE_GTID = slave_pos" in sql and args == ("10.0.0.1", 3306, "repl", "pw", 1.0) and "pw" not in sql
    assert "MASTER_HEARTBEAT_PERIOD = %s" in sql
    assert f.wait_statement("0-1-5", 1.0) == ("SELECT MASTER_GTID_WAIT(%s, %s)", ("0-1-5", 1.0))
    assert "gtid_binlog_state" in f.gtid_query


def test_mariadb_status_and_gtid_logic():
    f = flavors.get("mariadb", "10.11.6-MariaDB")
    row = {"Slave_IO_Running": "Yes", "Slave_SQL_Running": "Yes", "Master_Host": "10.0.0.1", "Master_Port": 3306,
           "Seconds_Behind_Master": 3, "Gtid_IO_Pos": "0-1-20", "Using_Gtid": "Slave_Pos", "Last_SQL_Errno": 0}
    r = f.parse_replica_status(row)
    assert r.running and r.auto_position and r.lag == 3 and r.retrieved == "0-1-20"
    assert not f.parse_replica_status({**row, "Using_Gtid": "No"}).auto_position
    me = NodeState("a", "h", 1, True, flavor="mariadb", executed="0-1-18", binlog_pos="0-1-18", binlog_state="0-1-18", replica=r)
    assert f.unapplied(me) == "0-1-20"
    assert f.missing("0-1-19,1-1-4", me) == "0-1-19,1-1-4"
    peer = NodeState("b", "h", 2, True, flavor="mariadb", executed="0-2-18", binlog_pos="0-2-18", binlog_state="0-2-18")
    assert f.errant(me, peer) == "0-1-18"  # same seq, other server id: divergence


def test_mariadb_keeps_the_relay_log_by_switching_to_file_position_mode():
    """Both threads stopped, GTID mode: START SLAVE [SQL_THREAD] would delete the relay log."""
    f = flavors.get("mariadb", "10.11.6-MariaDB")
    r = ReplicaStatus("10.0.0.1", 3306, ThreadState.STOPPED, ThreadState.STOPPED, None, "0-1-51", True,
                      relay_log_file="server2-relay-bin.000002", relay_log_pos=785)
    assert f.preserve_relay_log(r) == [(
        "CHANGE MASTER TO MASTER_USE_GTID = no, RELAY_LOG_FILE = %s, RELAY_LOG_POS = %s", ("server2-relay-bin.000002", 785),
    )]
    me = NodeState("a", "h", 1, True, flavor="mariadb", executed="0-1-1", binlog_pos="0-1-1", binlog_state="0-1-1", replica=r)
    assert f.lacking("0-1-60", me) == "0-1-60" and f.lacking("0-1-51", me) == ""


@pytest.mark.parametrize("version", ["5.7.44-log", "8.0.36", "8.4.3"])
def test_mysql_keeps_the_relay_log_without_extra_statements(version):
    """MySQL: START REPLICA SQL_THREAD resumes the applier inside the kept relay log (auto-position
    or not); only relay_log_recovery at a server restart discards it. So nothing is switched."""
    f = flavors.get("mysql", version)
    r = ReplicaStatus("10.0.0.1", 3306, ThreadState.STOPPED, ThreadState.STOPPED, None, f"{A}:1-12", True,
                      relay_log_file="relay.000002", relay_log_pos=785)
    assert f.preserve_relay_log(r) == []
    assert f.start_sql_thread.endswith("SQL_THREAD")
    me = mysql_node(f"{A}:1-10", retrieved=f"{A}:1-12")
    assert f.lacking(f"{A}:1-15", me) == f"{A}:13-15" and f.lacking(f"{A}:1-12", me) == ""


def test_status_row_keeps_relay_position_and_io_progress():
    f = flavors.get("mariadb", "10.11.6-MariaDB")
    row = {"Slave_IO_Running": "Yes", "Slave_SQL_Running": "No", "Master_Host": "10.0.0.1", "Master_Port": 3306,
           "Relay_Log_File": "r.000003", "Relay_Log_Pos": "4", "Master_Log_File": "b.000001", "Read_Master_Log_Pos": 900,
           "Slave_received_heartbeats": 7, "Slave_heartbeat_period": "1.000", "Using_Gtid": "Slave_Pos"}
    r = f.parse_replica_status(row)
    assert (r.relay_log_file, r.relay_log_pos, r.io_marker, r.heartbeat_period) == ("r.000003", 4, ("b.000001", 900, 7), 1.0)
    assert f.parse_replica_status({**row, "Slave_received_heartbeats": 8}).io_marker != r.io_marker


# --- The install checklist's grants are the flavors' privilege lists ---------------------------------------

INSTALL_PAGE = Path(__file__).resolve().parent.parent / "docs" / "install.md"  # its Accounts step holds the GRANT lines


def readme_orch_grants() -> List[str]:
    """The privilege lists of the install checklist's GRANT ... ON *.* TO 'orch'@ lines (step 5, Accounts)."""
    lines = re.findall(r"^GRANT (.+?) ON \*\.\* TO 'orch'@", INSTALL_PAGE.read_text(), re.M)
    assert len(lines) == 2, f"docs/install.md's orch GRANT lines on *.* changed: {lines}"
    return lines


def names(grant: str) -> List[str]:
    return [p.strip() for p in " ".join(grant.split()).split(",")]


def test_readmes_orch_grant_is_mariadbs_privileges():
    """The Accounts step's first GRANT is what orch doctor checks on MariaDB, in its order."""
    from orchestrator.flavors import mariadb

    assert names(readme_orch_grants()[0]) == [p for p, _ in mariadb.PRIVILEGES]


def test_readmes_semi_sync_grant_is_mariadbs_semi_sync_privilege():
    from orchestrator.flavors import mariadb

    grant = readme_orch_grants()[1]
    assert names(grant) == [mariadb.SEMI_SYNC_PRIVILEGE[0]]
    line = next(l for l in INSTALL_PAGE.read_text().splitlines() if l.startswith(f"GRANT {grant} ON"))
    assert "failover.semi_sync" in line and "failover.semi_sync" in mariadb.SEMI_SYNC_PRIVILEGE[1]


def test_readmes_mysql_grants_are_mysqls_privileges():
    """The MySQL paragraph after the checklist names the orch account's grants on MySQL."""
    from orchestrator.flavors import mysql

    m = re.search(r"in step 5 the orch account's grants are\s+`([^`]+)`", INSTALL_PAGE.read_text())
    assert m, "docs/install.md lost the MySQL grants"
    assert names(m.group(1)) == [p for p, _ in mysql.PRIVILEGES]


def test_each_flavor_declares_what_orch_doctor_reads():
    """Both flavor modules answer the same questions; the variables orch doctor reads are
    one list without repeats, and the GTID settings each flavor requires are among them."""
    from orchestrator.flavors import mariadb, mysql

    for module in (mariadb, mysql):
        assert module.PRIVILEGES and all(p.upper() == p and why for p, why in module.PRIVILEGES)
        assert module.SEMI_SYNC_PRIVILEGE[0] in module.SUPER_COVERS
        assert set(module.GTIDS.values) <= set(flavors.server_variables())
        assert set(module.READ_ONLY_ORIGINS.values()) == {"config", "runtime", "default"}
    assert len(set(flavors.server_variables())) == len(flavors.server_variables())
    assert flavors.requirements("mysql") is mysql and flavors.requirements("mariadb") is mariadb
