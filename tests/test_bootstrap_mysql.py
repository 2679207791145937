"""orch bootstrap on MySQL 8.0 and 8.4, at the statement level (no MySQL server can run here).

The real command runs (observe, doctor's checks, the decision, the effects) against
FakeMySQL: db.Server with its one door, ``query``, replaced by a recorder that answers as
MySQL would from a state kept in a JSON file per server, and refuses as MySQL refuses
(super_read_only, GTID_PURGED over a non-empty gtid_executed, a statement spelling the
version lacks). mysqldump and mysql are small scripts that record their argv, option file
(the password only as a hash) and stdin, and act on the same state: the dump is made from
the source's state, the load applied to the target's, failing as mysql would.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
import yaml

from orchestrator import flavors
from orchestrator.commands import bootstrap as boot
from orchestrator.commands import doctor
from orchestrator.config import Account, Node
from orchestrator.db import Server
from orchestrator.errors import ALIVE, DatabaseError, OrchError, Refused
from orchestrator.flavors.common import version_tuple
from orchestrator.gtid import GtidSet
from orchestrator.model import NodeState

A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"  # server1's server_uuid
B = "4f22ab58-82db-22f2-af44-d91bba53a673"  # server2's
C = "5a33bc69-93ec-33a3-b055-e02ccb64b784"  # a former master of server1
ADMIN_PASSWORD = "adm'S3cret #pw\u00e0"
REPL_PASSWORD = "rpl\"S3cret;pw'x"
SECRETS = (ADMIN_PASSWORD, REPL_PASSWORD)
HOSTS = {"server1": "10.0.0.1", "server2": "10.0.0.2"}
SOURCE_GTIDS = f"{A}:1-57,\n{C}:1-3"  # as MySQL prints a set of two UUIDs


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def union(*sets: str) -> str:
    return str(GtidSet.parse(",".join(s.replace("\n", "") for s in sets if s.strip())))


def is_write(sql: str) -> bool:
    return not sql.startswith(("SELECT", "SHOW"))


# --- the stand-in server ---------------------------------------------------------------------


class MySQLError(DatabaseError):
    pass


class FakeMySQL(Server):
    """A recording stand-in for one MySQL server: every statement (with its bound
    parameters) in ``statements``; its state in ``path`` (shared with the fake clients)."""

    def __init__(self, node: Node, account: Account, path: Path, **state: Any) -> None:
        super().__init__(node, account, 10.0)
        self.path = path
        self.statements: List[Tuple[str, Tuple[Any, ...]]] = []
        self.unexpected: List[str] = []
        self.save(state)

    # What db.Server does over the network, done here.
    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def state(self) -> Dict[str, Any]:
        return json.loads(self.path.read_text())

    def save(self, st: Dict[str, Any]) -> None:
        self.path.write_text(json.dumps(st, indent=1, sort_keys=True))

    @property
    def writes(self) -> List[Tuple[str, Tuple[Any, ...]]]:
        return [(sql, args) for sql, args in self.statements if is_write(sql)]

    def query(self, sql: str, args: Sequence[Any] = (), timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        self.statements.append((sql, tuple(args)))
        st = self.state()
        if is_write(sql):
            self._write(sql, tuple(args), st)
            self.save(st)
            return []
        return self._read(sql, tuple(args), st)

    def _error(self, code: int, text: str, sql: str) -> MySQLError:
        return MySQLError(f"{self.label}: {sql[:60]}: ({code}) {text}", ALIVE, code)

    def _read(self, sql: str, args: Tuple[Any, ...], st: Dict[str, Any]) -> List[Dict[str, Any]]:
        v = version_tuple(st["version"])
        if sql.startswith("SELECT VERSION() AS version"):
            return [{"version": st["version"], "server_id": st["server_id"], "read_only": int(st["read_only"])}]
        if sql in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
            if sql == "SHOW SLAVE STATUS" and v >= (8, 4, 0):
                raise self._error(1064, "You have an error in your SQL syntax", sql)
            r = st["replica"]
            if r is None:
                return []
            yes = "Yes" if r["running"] else "No"
            io_state = yes
            if r["running"] and r.get("connecting"):  # the IO thread's first look after START REPLICA
                io_state = "Connecting"
                r["connecting"] -= 1
                self.save(st)
            return [{"Channel_Name": "", "Source_Host": r["host"], "Source_Port": r["port"], "Source_User": r["user"],
                     "Replica_IO_Running": io_state, "Replica_SQL_Running": yes, "Seconds_Behind_Source": 0 if r["running"] else None,
                     "Retrieved_Gtid_Set": st["gtid_executed"] if r["running"] else "", "Auto_Position": r["auto_position"],
                     "Last_IO_Error": "", "Last_SQL_Errno": 0, "Last_SQL_Error": "", "Source_Log_File": "binlog.000001",
                     "Read_Source_Log_Pos": 157}]
        if sql.startswith("SELECT @@global.gtid_executed AS executed"):  # the flavor's gtid_query
            g = st["gtid_executed"]
            return [{"executed": g, "binlog_pos": g, "binlog_state": g, "super_read_only": int(st["super_read_only"])}]
        if sql == "SELECT @@global.gtid_executed":
            return [{"@@global.gtid_executed": st["gtid_executed"]}]
        if sql.startswith("SHOW GLOBAL VARIABLES WHERE Variable_name IN"):
            known = {
                "log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "log_replica_updates": "ON",
                "log_slave_updates": "ON", "gtid_mode": st["gtid_mode"], "enforce_gtid_consistency": st["enforce_gtid_consistency"],
                "server_id": str(st["server_id"]), "server_uuid": st["server_uuid"], "read_only": "ON" if st["read_only"] else "OFF",
                "super_read_only": "ON" if st["super_read_only"] else "OFF", "auto_increment_increment": str(st["increment"]),
                "auto_increment_offset": str(st["offset"]),
            }
            return [{"Variable_name": n, "Value": known[n]} for n in args if n in known]
        if sql.startswith("SELECT VARIABLE_SOURCE AS origin FROM performance_schema.variables_info"):
            return [{"origin": "GLOBAL"}]
        if sql == "SHOW GRANTS":
            return [{"Grants for admin@%": "GRANT ALL PRIVILEGES ON *.* TO `admin`@`%` WITH GRANT OPTION"}]
        if sql.startswith("SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA"):
            assert set(args) == set(boot.SYSTEM_SCHEMAS)
            return [{"name": name} for name in st["schemas"]]
        if sql.startswith("SELECT COUNT(*) FROM information_schema.TABLES"):
            return [{"COUNT(*)": sum(s["tables"] for s in st["schemas"].values())}]
        if sql.startswith("SELECT (SELECT COUNT(*) FROM information_schema.ROUTINES"):
            return [{"n": sum(s.get("routines", 0) for s in st["schemas"].values())}]
        if sql == "SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = %s":
            return [{"COUNT(*)": sum(1 for u in st["users"] if (u[0], u[1]) == args)}]
        if sql.startswith("SELECT @@global.auto_increment_increment AS step"):
            return [{"step": st["increment"], "start": st["offset"]}]
        if sql == "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)":
            r = st["replica"]
            if r is not None and r["running"]:  # the applier catches up with its source
                source = json.loads((self.path.parent / f"{r['host']}.json").read_text())
                st["gtid_executed"] = union(st["gtid_executed"], source["gtid_executed"])
                self.save(st)
            caught_up = not GtidSet.parse(args[0]).subtract(GtidSet.parse(st["gtid_executed"]))
            return [{"WAIT_FOR_EXECUTED_GTID_SET": 0 if caught_up else 1}]
        self.unexpected.append(sql)
        raise self._error(1064, "not a statement this stand-in knows", sql)

    def _write(self, sql: str, args: Tuple[Any, ...], st: Dict[str, Any]) -> None:
        v = version_tuple(st["version"])

        def writable() -> None:
            if st["super_read_only"]:
                raise self._error(1290, "The MySQL server is running with the --super-read-only option so it cannot execute this statement", sql)

        def syntax() -> MySQLError:
            return self._error(1064, "You have an error in your SQL syntax", sql)

        if sql in ("SET SESSION sql_log_bin = 0", "SET SESSION sql_log_bin = 1"):
            return
        if sql == "CREATE USER %s@%s IDENTIFIED BY %s":
            writable()
            if any((u[0], u[1]) == args[:2] for u in st["users"]):
                raise self._error(1396, "Operation CREATE USER failed", sql)
            st["users"].append([args[0], args[1], sha(args[2])])
            return
        if sql == "GRANT REPLICATION SLAVE ON *.* TO %s@%s":
            writable()
            if not any((u[0], u[1]) == args for u in st["users"]):
                raise self._error(1410, "You are not allowed to create a user with GRANT", sql)
            return
        if sql == "SET GLOBAL auto_increment_increment = 2, auto_increment_offset = %s":
            st["increment"], st["offset"] = 2, int(args[0])
            return
        if sql == "SET GLOBAL read_only = 1":
            st["read_only"] = True
            return
        if sql == "SET GLOBAL super_read_only = 1":
            st["read_only"] = st["super_read_only"] = True  # as MySQL does
            return
        if sql == "SET GLOBAL super_read_only = 0":
            st["super_read_only"] = False  # read_only stays as it is
            return
        if sql in ("RESET MASTER", "RESET BINARY LOGS AND GTIDS"):
            if (sql == "RESET MASTER" and v >= (8, 4, 0)) or (sql != "RESET MASTER" and v < (8, 2, 0)):
                raise syntax()
            writable()
            st["gtid_executed"] = ""
            return
        if sql == "SET GLOBAL gtid_purged = %s":
            writable()
            if st["gtid_executed"]:
                raise self._error(1840, "@@GLOBAL.GTID_PURGED can only be set when @@GLOBAL.GTID_EXECUTED is empty", sql)
            st["gtid_executed"] = union(args[0])
            return
        if sql in ("STOP REPLICA", "START REPLICA", "STOP SLAVE", "START SLAVE"):
            if "SLAVE" in sql and v >= (8, 4, 0):
                raise syntax()
            if st["replica"] is not None:
                st["replica"]["running"] = sql.startswith("START")
                st["replica"]["connecting"] = 1 if sql.startswith("START") else 0
            elif sql.startswith("START"):
                raise self._error(13117, "Replica failed to initialize: no source configured", sql)
            return
        if sql.startswith("CHANGE REPLICATION SOURCE TO ") and v >= (8, 0, 23):
            if st["replica"] is not None and st["replica"]["running"]:
                raise self._error(3021, "This operation cannot be performed with a running replica", sql)
            host, port, user, password, heartbeat = args
            st["replica"] = {"host": host, "port": port, "user": user, "password_sha256": sha(password), "heartbeat": heartbeat,
                             "auto_position": int("SOURCE_AUTO_POSITION = 1" in sql), "running": False}
            return
        self.unexpected.append(sql)
        raise syntax()


# --- the stand-in clients --------------------------------------------------------------------

CLIENT_COMMON = '''
import hashlib, json, os, stat, sys
STATE = os.environ["FAKE_MYSQL_STATE"]
RECORD = os.environ["FAKE_MYSQL_RECORD"]

def unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out, i, body = [], 0, value[1:-1]
        while i < len(body):
            if body[i] == "\\\\" and i + 1 < len(body):
                out.append({"n": "\\n", "r": "\\r", "t": "\\t"}.get(body[i + 1], body[i + 1]))
                i += 2
            else:
                out.append(body[i])
                i += 1
        return "".join(out)
    return value

def option_file(args):
    """The option file as a client reads it (it must come first); the password only hashed."""
    if not args or not args[0].startswith("--defaults-file="):
        sys.stderr.write("mysql: [ERROR] no --defaults-file first\\n")
        sys.exit(2)
    path = args[0].split("=", 1)[1]
    info = {"mode": oct(stat.S_IMODE(os.stat(path).st_mode)), "dir_mode": oct(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)),
            "lines": []}
    with open(path, encoding="utf-8") as fh:
        for line in fh.read().splitlines():
            key, _, value = line.partition("=")
            if key == "password":
                info["password_sha256"] = hashlib.sha256(unquote(value).encode("utf-8")).hexdigest()
                info["lines"].append("password=<hashed>")
                continue
            info["lines"].append(line)
            if key in ("host", "port", "user"):
                info[key] = unquote(value)
    return info

def record(entry):
    with open(RECORD, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\\n")

def state_path(info):
    return os.path.join(STATE, info["host"] + ".json")

def fail(text):
    sys.stderr.write(text + "\\n")
    sys.exit(1)
'''

FAKE_MYSQLDUMP = CLIENT_COMMON + '''
args = sys.argv[1:]
info = option_file(args)
record({"prog": "mysqldump", "argv": args, "option_file": info})
with open(state_path(info), encoding="utf-8") as fh:
    st = json.load(fh)
databases = args[args.index("--databases") + 1:]
out = ["-- MySQL dump 10.13  Distrib %s, for Linux (x86_64)\\n--\\n-- Host: %s    Database: \\n" % (st["version"], info["host"])]
purged = "--set-gtid-purged=ON" in args
if purged:
    out.append("SET @MYSQLDUMP_TEMP_LOG_BIN = @@SESSION.SQL_LOG_BIN;\\nSET @@SESSION.SQL_LOG_BIN= 0;\\n")
    out.append("\\n--\\n-- GTID state at the beginning of the backup \\n--\\n\\n")
    out.append("SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '%s';\\n" % st["gtid_executed"])
if "--source-data=2" in args:
    out.append("\\n-- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='binlog.000003', SOURCE_LOG_POS=1234;\\n")
for db in databases:
    out.append("\\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `%s`;\\n\\nUSE `%s`;\\n" % (db, db))
    for i in range(st["schemas"][db]["tables"]):
        out.append("DROP TABLE IF EXISTS `t%d`;\\nCREATE TABLE `t%d` (id int PRIMARY KEY, note varchar(20));\\n"
                   "INSERT INTO `t%d` VALUES (1,'it''s');\\n" % (i, i, i))
if purged:
    out.append("SET @@SESSION.SQL_LOG_BIN = @MYSQLDUMP_TEMP_LOG_BIN;\\n")
out.append("-- Dump completed\\n")
sys.stdout.write("".join(out))
sys.stderr.write("Warning: A partial dump from a server that has GTIDs will by default include the GTIDs of all transactions\\n")
'''

FAKE_MYSQL = CLIENT_COMMON + '''
import re
sys.path.insert(0, os.environ["FAKE_MYSQL_SOURCE_TREE"])
from orchestrator.gtid import GtidSet

args = sys.argv[1:]
info = option_file(args)
data = sys.stdin.read()
record({"prog": "mysql", "argv": args, "option_file": info, "stdin": data})
if os.environ.get("FAKE_MYSQL_FAIL"):
    fail("ERROR 1045 (28000): Access denied for user 'admin'@'10.0.0.9' (using password: YES)")
path = state_path(info)
with open(path, encoding="utf-8") as fh:
    st = json.load(fh)
if st["super_read_only"]:
    fail("ERROR 1290 (HY000) at line 2: The MySQL server is running with the --super-read-only option so it cannot execute this statement")
log_bin_off = "--init-command=SET SESSION sql_log_bin = 0" in args or "SET @@SESSION.SQL_LOG_BIN= 0;" in data
if os.environ.get("FAKE_MYSQL_BINLOGS_THE_LOAD"):  # a server that logs the load all the same
    log_bin_off = False
executed = GtidSet.parse(st["gtid_executed"])
m = re.search(r"SET @@GLOBAL.GTID_PURGED=(/\\*!80000 '\\+'\\*/ )?'([^']*)';", data)
if m:
    added = GtidSet.parse(m.group(2))
    if m.group(1) and executed.subtract(executed.subtract(added)):
        fail("ERROR 3546 (HY000) at line 12: @@GLOBAL.GTID_PURGED cannot be changed: the added gtid set must not overlap with @@GLOBAL.GTID_EXECUTED")
    if not m.group(1) and executed:
        fail("ERROR 1840 (HY000) at line 12: @@GLOBAL.GTID_PURGED can only be set when @@GLOBAL.GTID_EXECUTED is empty.")
    executed = GtidSet.parse(",".join(x for x in (str(executed), str(added)) if x))
db = None
created = 0
for line in data.splitlines():
    use = re.match(r"USE `([^`]+)`;", line)
    if use:
        db = use.group(1)
        st["schemas"].setdefault(db, {"tables": 0})
    if line.startswith("CREATE TABLE"):
        st["schemas"][db]["tables"] += 1
        created += 1
if created and not log_bin_off:  # each statement a transaction of the target's own
    executed = GtidSet.parse(",".join(x for x in (str(executed), "%s:1-%d" % (st["server_uuid"], created)) if x))
st["gtid_executed"] = str(executed)
with open(path, "w", encoding="utf-8") as fh:
    json.dump(st, fh, indent=1, sort_keys=True)
'''


# --- the harness -------------------------------------------------------------------------------


def server_state(version: str, server_id: int, uuid: str, **changes: Any) -> Dict[str, Any]:
    st: Dict[str, Any] = {
        "version": version, "server_id": server_id, "server_uuid": uuid, "read_only": False, "super_read_only": False,
        "gtid_mode": "ON", "enforce_gtid_consistency": "ON", "gtid_executed": "", "schemas": {},
        "users": [["admin", "%", sha(ADMIN_PASSWORD)]], "increment": 1, "offset": 1, "replica": None,
    }
    st.update(changes)
    return st


class Pair:
    """Two stand-in servers, the stand-in clients, an orch config: ``run()`` is orch bootstrap."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s1: Dict[str, Any], s2: Dict[str, Any]) -> None:
        self.tmp = tmp_path
        self.states = tmp_path / "servers"
        self.states.mkdir()
        self.record = tmp_path / "clients.jsonl"
        self.state_dir = tmp_path / "state"
        self.tempdir = tmp_path / "tmp"  # where the option files are made
        self.tempdir.mkdir()
        raw = {
            "cluster": "test", "flavor": "auto", "self": "server1",
            "nodes": {name: {"host": host, "port": 3306} for name, host in HOSTS.items()},
            "mysql": {"user": "admin", "password": ADMIN_PASSWORD, "connect_timeout": 1},
            "replication": {"user": "repl", "password": REPL_PASSWORD},
            "failover": {"catchup_timeout": 5, "block_seconds": 0},
            "state_dir": str(self.state_dir),
            "keepalived": {"vip_check": False},
        }
        self.config = tmp_path / "orch.yaml"
        self.config.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
        self.config.chmod(0o600)
        account = Account("admin", ADMIN_PASSWORD)
        self.servers = {name: FakeMySQL(Node(name, HOSTS[name]), account, self.states / f"{HOSTS[name]}.json", **st)
                        for name, st in (("server1", s1), ("server2", s2))}
        for name, text in (("mysqldump", FAKE_MYSQLDUMP), ("mysql", FAKE_MYSQL)):
            script = tmp_path / "bin" / name
            script.parent.mkdir(exist_ok=True)
            script.write_text(f"#!{sys.executable}\n" + text)
            script.chmod(0o755)
        monkeypatch.setattr(boot, "MYSQL_DUMP", str(tmp_path / "bin" / "mysqldump"))
        monkeypatch.setattr(boot, "MYSQL_CLIENT", str(tmp_path / "bin" / "mysql"))
        # The MariaDB clients must not be what runs here.
        monkeypatch.setattr(boot, "DUMP", "/nonexistent/mariadb-dump")
        monkeypatch.setattr(boot, "CLIENT", "/nonexistent/mariadb")
        monkeypatch.setenv("FAKE_MYSQL_STATE", str(self.states))
        monkeypatch.setenv("FAKE_MYSQL_RECORD", str(self.record))
        monkeypatch.setenv("FAKE_MYSQL_SOURCE_TREE", str(Path(__file__).resolve().parent.parent))
        monkeypatch.setattr(tempfile, "tempdir", str(self.tempdir))
        monkeypatch.setattr("orchestrator.db.open_servers", lambda cfg, read_timeout=None: self.servers)
        # The replication account's real login (a network connection): said to work.
        monkeypatch.setattr(doctor, "_repl_login", lambda server, cfg: "")

    def run(self, *flags: str) -> Tuple[int, str]:
        """orch -c orch.yaml --node server1 bootstrap FLAGS: (exit code, what it printed)."""
        args = argparse.Namespace(config=str(self.config), node="server1", command="bootstrap", verbose=False,
                                  yes="--yes" in flags, dry_run="--dry-run" in flags, repl_host=None)
        out = io.StringIO()
        code = boot.bootstrap(args, out, io.StringIO())
        return code, out.getvalue()

    def writes(self, name: str) -> List[Tuple[str, Tuple[Any, ...]]]:
        return self.servers[name].writes

    def clients(self) -> List[Dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def state(self, name: str) -> Dict[str, Any]:
        return self.servers[name].state()

    def everything_written(self) -> str:
        """Every file a run may leave behind, and the clients' records, as one text."""
        texts = [p.read_text(errors="replace") for p in self.tmp.rglob("*") if p.is_file() and p.suffix != ".yaml"]
        return "\n".join(texts)


def source_with_data(version: str, **changes: Any) -> Dict[str, Any]:
    return server_state(version, 1, A, gtid_executed=SOURCE_GTIDS,
                        schemas={"app": {"tables": 3, "routines": 1}, "shop": {"tables": 1}}, **changes)


def empty_server(version: str, **changes: Any) -> Dict[str, Any]:
    return server_state(version, 2, B, **changes)


def statements(pair: Pair, name: str, start: int = 0) -> List[str]:
    """The writes, the seed's GTID check and the catch-up wait, in order, without parameters."""
    return [sql for sql, _ in pair.servers[name].statements[start:]
            if is_write(sql) or sql in ("SELECT @@global.gtid_executed", "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)")]


CHANGE_SOURCE = ("CHANGE REPLICATION SOURCE TO SOURCE_HOST = %s, SOURCE_PORT = %s, SOURCE_USER = %s, SOURCE_PASSWORD = %s, "
                 "SOURCE_AUTO_POSITION = 1, SOURCE_CONNECT_RETRY = 1, GET_SOURCE_PUBLIC_KEY = 1, SOURCE_HEARTBEAT_PERIOD = %s")
ACCOUNT = ["SET SESSION sql_log_bin = 0", "CREATE USER %s@%s IDENTIFIED BY %s", "GRANT REPLICATION SLAVE ON *.* TO %s@%s",
           "SET SESSION sql_log_bin = 1"]
AUTO_INCREMENT = "SET GLOBAL auto_increment_increment = 2, auto_increment_offset = %s"
DUMP_OPTIONS = ["--single-transaction", "--set-gtid-purged=ON", "--source-data=2", "--triggers", "--routines", "--events",
                "--hex-blob", "--databases", "app", "shop"]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret leaked: {secret!r}"


# --- the pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize("version, statement", [
    ("8.0.23", "RESET MASTER"), ("8.0.36", "RESET MASTER"), ("8.1.0", "RESET MASTER"),
    ("8.2.0", "RESET BINARY LOGS AND GTIDS"), ("8.4.2", "RESET BINARY LOGS AND GTIDS"), ("9.1.0", "RESET BINARY LOGS AND GTIDS"),
])
def test_reset_statement_by_version(version, statement):
    assert flavors.get("mysql", version).reset_binary_logs == statement
    assert flavors.get("mariadb", "10.11.6-MariaDB").reset_binary_logs == "RESET MASTER"


def test_dump_gtid_set_reads_the_one_statement_over_its_lines():
    dump = ["-- MySQL dump\n", "SET @@SESSION.SQL_LOG_BIN= 0;\n",
            f"SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '{A}:1-57,\n", f"{C}:1-3';\n", "CREATE TABLE t (id int);\n"]
    assert boot.dump_gtid_set(dump) == f"{A}:1-57,{C}:1-3"
    assert boot.dump_gtid_set([f"SET @@GLOBAL.GTID_PURGED='{A}:1-5';\n"]) == f"{A}:1-5"  # the form without '+'
    assert boot.dump_gtid_set(["SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '';\n"]) == ""
    with pytest.raises(OrchError, match="0 GTID_PURGED statements"):
        boot.dump_gtid_set(["-- MySQL dump\n", "CREATE TABLE t (id int);\n"])  # taken with --set-gtid-purged=OFF
    with pytest.raises(OrchError, match="2 GTID_PURGED statements"):
        boot.dump_gtid_set([f"SET @@GLOBAL.GTID_PURGED='{A}:1-5';\n"] * 2)
    with pytest.raises(OrchError, match="GTID set"):
        boot.dump_gtid_set(["SET @@GLOBAL.GTID_PURGED='not-a-gtid:1';\n"])


@pytest.mark.parametrize("tls, ca, expected", [
    ("preferred", "", []),
    ("disabled", "", ["ssl-mode=DISABLED"]),
    ("required", "", ["ssl-mode=REQUIRED"]),
    ("required", "/etc/orch/ca.pem", ['ssl-ca="/etc/orch/ca.pem"', "ssl-mode=VERIFY_IDENTITY"]),
])
def test_mysql_option_file_spells_tls_as_mysql_8_clients_do(tls, ca, expected):
    text = boot.mysql_client_options(Account("admin", 'p"w#', tls=tls, tls_ca=ca), "10.0.0.1", 3306)
    lines = text.splitlines()
    assert lines[:5] == ["[client]", 'host="10.0.0.1"', "port=3306", 'user="admin"', 'password="p\\"w#"']
    assert lines[5:] == expected  # never --ssl, --skip-ssl or ssl-verify-server-cert (gone in MySQL 8)


def node(name: str, version: str, flavor: str = "mysql") -> NodeState:
    return NodeState(name, HOSTS[name], 3306, True, version=version, flavor=flavor)


def test_unsupported_versions_and_mixed_flavors():
    assert boot.unsupported(node("server1", "8.0.36"), node("server2", "8.4.2")) == ""
    assert boot.unsupported(node("server1", "8.0.23"), node("server2", "8.0.23-log")) == ""
    old = boot.unsupported(node("server1", "8.0.36"), node("server2", "8.0.22"))
    assert old == "server2 runs MySQL 8.0.22: bootstrap needs 8.0.23 or later (CHANGE REPLICATION SOURCE TO)"
    mixed = boot.unsupported(node("server1", "10.11.6-MariaDB", "mariadb"), node("server2", "8.0.36"))
    assert "a pair is of one flavor" in mixed
    assert boot.unsupported(node("server1", "10.11.6-MariaDB", "mariadb"), node("server2", "10.6.1-MariaDB", "mariadb")) == ""


def mysql_side(name: str, tables: int = 0, routines: int = 0, gtids: str = "", sro: Optional[bool] = False, **kw: Any) -> boot.Side:
    return boot.Side(name, HOSTS[name], 3306, tables, ("app",) if tables or routines else (), gtids, kw.get("writable", True),
                     kw.get("account", True), kw.get("inc", 1), kw.get("off", 1), routines, sro, "8.4.2", "mysql",
                     kw.get("replica_source", ""))


REPL_HOSTS = {"server1": "10.0.0.2", "server2": "10.0.0.1"}


@pytest.mark.parametrize("source, target, warned", [
    ("8.4.2", "8.4.0", False), ("8.0.36-log", "8.0.23", False), ("8.0.36", "8.4.2", True), ("8.4.2", "8.0.36", True),
    ("9.1.0", "9.2.0", True),
])
def test_a_pair_of_two_release_series_is_seeded_with_a_warning(source, target, warned):
    """Each failover reverses replication, and newer-to-older across release series is not
    supported: bootstrap says so in its plan, before anything is done (it does not refuse:
    seeding a replica of the newer series is the first step of a rolling upgrade)."""
    from dataclasses import replace

    plan = boot.decide_bootstrap(replace(mysql_side("server1", tables=3), version=source),
                                 replace(mysql_side("server2"), version=target), None, {}, "repl", REPL_HOSTS)
    assert not plan.refused and any(s.action == "seed" for s in plan.steps)
    assert bool(plan.warnings) == warned, plan.warnings
    text = plan.render()
    assert ("warning: server1 runs " in text and "not supported" in text) == warned, text


def test_decision_routines_and_events_are_user_data():
    plan = boot.decide_bootstrap(mysql_side("server1", tables=2), mysql_side("server2", routines=1), None, {}, "repl", REPL_HOSTS)
    assert plan.refused and "both server1 and server2 hold tables, views, routines or events" in plan.reason
    # The server with only a routine is the one with data when the other is empty.
    plan = boot.decide_bootstrap(mysql_side("server1"), mysql_side("server2", routines=1), None, {}, "repl", REPL_HOSTS)
    assert not plan.refused and (plan.source, plan.target) == ("server2", "server1")


def test_decision_mysql_steps_and_seed_detail():
    plan = boot.decide_bootstrap(mysql_side("server1", tables=2, gtids=f"{A}:1-9"), mysql_side("server2", gtids=f"{A}:1-2"),
                                 None, {"server2": ""}, "repl", REPL_HOSTS)
    assert [s.action for s in plan.steps] == ["auto_increment", "auto_increment", "fence", "seed", "replicate", "super_read_only"]
    seed = plan.steps[3].detail
    assert seed.startswith(f"RESET BINARY LOGS AND GTIDS: forget its GTIDs ({A}:1-2)") and "--set-gtid-purged=ON" in seed
    # Nothing to forget: no reset.
    plan = boot.decide_bootstrap(mysql_side("server1", tables=2, gtids=f"{A}:1-9"), mysql_side("server2"), None, {}, "repl", REPL_HOSTS)
    assert "RESET" not in plan.steps[3].detail
    # Already super_read_only: lifted around the writes, no last step.
    plan = boot.decide_bootstrap(mysql_side("server1", tables=2, gtids=f"{A}:1-9"),
                                 mysql_side("server2", sro=True, writable=False, account=False, inc=2, off=2),
                                 None, {}, "repl", REPL_HOSTS)
    assert [s.action for s in plan.steps] == ["account", "auto_increment", "auto_increment", "seed", "replicate"]
    assert all(s.detail.endswith("(super_read_only off meanwhile, read_only stays on)") for s in plan.steps if s.node == "server2"
               and s.action in ("account", "seed"))
    # A made pair whose replica lacks super_read_only only gets it.
    plan = boot.decide_bootstrap(mysql_side("server1", tables=2, inc=2, off=1), mysql_side("server2", tables=2, writable=False, inc=2, off=2),
                                 "server2", {}, "repl", REPL_HOSTS)
    assert [s.action for s in plan.steps] == ["super_read_only"] and "completing" in plan.reason


def test_decision_refuses_a_target_replicating_from_a_third_server():
    plan = boot.decide_bootstrap(mysql_side("server1", tables=2), mysql_side("server2", replica_source="10.0.0.9:3306"),
                                 None, {}, "repl", REPL_HOSTS)
    assert plan.refused and plan.reason.startswith("server2 replicates from 10.0.0.9:3306, not from server1") and not plan.steps


# --- the command against stand-in servers --------------------------------------------------------


@pytest.mark.parametrize("version, reset", [("8.0.36", "RESET MASTER"), ("8.4.2", "RESET BINARY LOGS AND GTIDS")])
def test_bootstrap_mysql_statements_then_a_second_run_changes_nothing(tmp_path, monkeypatch, caplog, version, reset):
    caplog.set_level(logging.DEBUG)
    # server2 once applied server1's first two transactions (its only GTIDs) and holds nothing.
    pair = Pair(tmp_path, monkeypatch, source_with_data(version), empty_server(version, gtid_executed=f"{A}:1-2"))

    code, out = pair.run("--dry-run")
    assert code == 0 and "dry run: nothing changed" in out, out
    assert pair.writes("server1") == pair.writes("server2") == [] and pair.clients() == []

    code, out = pair.run("--yes")
    assert code == 0, out
    assert "plan: server1 has the data; server2 is empty: seed it and make it server1's replica" in out
    assert f"{reset}: forget its GTIDs ({A}:1-2)" in out

    # server1: its replication account and auto_increment; nothing else is written there.
    assert statements(pair, "server1") == ACCOUNT + [AUTO_INCREMENT]
    assert pair.writes("server1")[1][1] == ("repl", "10.0.0.2", REPL_PASSWORD)
    assert pair.writes("server1")[4][1] == (1,)
    # server2, in order: account, auto_increment, fenced, its GTID history reset, (the load),
    # the GTID check, replication, the wait, super_read_only.
    assert statements(pair, "server2") == ACCOUNT + [
        AUTO_INCREMENT, "SET GLOBAL read_only = 1", "SELECT @@global.gtid_executed", reset, "SELECT @@global.gtid_executed",
        "STOP REPLICA", CHANGE_SOURCE, "START REPLICA", "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)", "SET GLOBAL super_read_only = 1",
    ]
    writes = dict(pair.writes("server2"))
    assert writes["CREATE USER %s@%s IDENTIFIED BY %s"] == ("repl", "10.0.0.1", REPL_PASSWORD)
    assert writes[AUTO_INCREMENT] == (2,)
    assert writes[CHANGE_SOURCE] == ("10.0.0.1", 3306, "repl", REPL_PASSWORD, 1.0)  # the password only as a parameter
    wait = [args for sql, args in pair.servers["server2"].statements if sql.startswith("SELECT WAIT_FOR")]
    assert wait == [(f"{A}:1-57,{C}:1-3", 60.0)]
    assert not pair.servers["server1"].unexpected and not pair.servers["server2"].unexpected

    # The clients: mysqldump on server1, mysql into server2, the option file first, no secret in argv.
    dump, load = pair.clients()
    assert (dump["prog"], dump["option_file"]["host"]) == ("mysqldump", "10.0.0.1")
    assert dump["argv"][0].startswith("--defaults-file=" + str(pair.tempdir)) and dump["argv"][1:] == DUMP_OPTIONS
    assert (load["prog"], load["option_file"]["host"]) == ("mysql", "10.0.0.2")
    assert load["argv"][1:] == ["--binary-mode", "--init-command=SET SESSION sql_log_bin = 0"]
    for client in (dump, load):
        assert_no_secret(" ".join(client["argv"]))
        assert client["option_file"]["mode"] == "0o600" and client["option_file"]["dir_mode"] == "0o700"
        assert client["option_file"]["password_sha256"] == sha(ADMIN_PASSWORD)  # the right password, quoted so it survives
        assert client["option_file"]["user"] == "admin" and client["option_file"]["port"] == "3306"
    assert f"SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '{SOURCE_GTIDS}';" in load["stdin"]
    assert list(pair.tempdir.iterdir()) == [], "option files removed"
    assert list((pair.state_dir / "bootstrap").iterdir()) == [], "the dump removed"

    # What the servers now are.
    s1, s2 = pair.state("server1"), pair.state("server2")
    assert GtidSet.parse(s2["gtid_executed"]) == GtidSet.parse(s1["gtid_executed"]) == GtidSet.parse(SOURCE_GTIDS)
    assert {db: s["tables"] for db, s in s2["schemas"].items()} == {"app": 3, "shop": 1}
    assert s2["read_only"] and s2["super_read_only"] and not s1["read_only"]
    assert s2["replica"] == {"host": "10.0.0.1", "port": 3306, "user": "repl", "password_sha256": sha(REPL_PASSWORD),
                             "heartbeat": 1.0, "auto_position": 1, "running": True, "connecting": 0}
    assert (s1["increment"], s1["offset"], s2["increment"], s2["offset"]) == (2, 1, 2, 2)
    assert ["repl", "10.0.0.2", sha(REPL_PASSWORD)] in s1["users"] and ["repl", "10.0.0.1", sha(REPL_PASSWORD)] in s2["users"]
    assert "0 fail" in out  # doctor's checks on the result
    journal = [json.loads(line) for line in (pair.state_dir / "journal.jsonl").read_text().splitlines()]
    assert [(j["event"], j["phase"], j.get("result")) for j in journal] == [("BOOTSTRAP", "begin", None), ("BOOTSTRAP", "end", "act")]
    # Every state change said why.
    said = [r.getMessage() for r in caplog.records if r.name == "orchestrator.db"]
    assert f"server2: {reset}  -- the empty server's GTID history, all of it the source's too, makes way for the seed's" in said
    assert "server2: SET GLOBAL super_read_only = 1  -- the replica: not even an administrator writes there" in said

    # A second run finds the pair made and changes nothing.
    before = {name: pair.state(name) for name in pair.servers}
    marks = {name: len(s.statements) for name, s in pair.servers.items()}
    code, again = pair.run("--yes")
    assert code == 0, again
    assert "plan: server2 already replicates from server1: nothing to do" in again
    for name, server in pair.servers.items():
        assert [sql for sql, _ in server.statements[marks[name]:] if is_write(sql)] == []
    assert {name: pair.state(name) for name in pair.servers} == before
    assert len(pair.clients()) == 2 and len(journal) == 2

    assert_no_secret(out, again, caplog.text, "\n".join(r.getMessage() for r in caplog.records), pair.everything_written())


def test_a_target_already_super_read_only_is_lifted_only_around_its_writes(tmp_path, monkeypatch):
    pair = Pair(tmp_path, monkeypatch, source_with_data("8.0.36"),
                empty_server("8.0.36", read_only=True, super_read_only=True))
    code, out = pair.run("--yes")
    assert code == 0, out
    lift, restore = "SET GLOBAL super_read_only = 0", "SET GLOBAL super_read_only = 1"
    # No GTIDs on server2: nothing to reset. CREATE USER and the load (the stand-ins refuse
    # both under super_read_only) happen with it off, read_only on all along.
    assert statements(pair, "server2") == [lift] + ACCOUNT + [restore, AUTO_INCREMENT, lift, "SELECT @@global.gtid_executed", restore,
                                           "STOP REPLICA", CHANGE_SOURCE, "START REPLICA", "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)"]
    s2 = pair.state("server2")
    assert s2["read_only"] and s2["super_read_only"] and s2["replica"]["running"]
    code, again = pair.run("--yes")
    assert code == 0 and "nothing to do" in again, again


def test_a_failed_load_stops_before_replication_and_restores_super_read_only(tmp_path, monkeypatch):
    pair = Pair(tmp_path, monkeypatch, source_with_data("8.4.2"), empty_server("8.4.2", read_only=True, super_read_only=True))
    monkeypatch.setenv("FAKE_MYSQL_FAIL", "1")
    with pytest.raises(OrchError) as failed:
        pair.run("--yes")
    message = str(failed.value)
    assert message.startswith("orch bootstrap stopped: ") and "exit code 1: ERROR 1045 (28000): Access denied" in message
    assert_no_secret(message)
    written = statements(pair, "server2")
    assert written[-2:] == ["SET GLOBAL super_read_only = 0", "SET GLOBAL super_read_only = 1"]
    assert not any(sql.startswith(("STOP", "CHANGE", "START")) for sql in written)
    assert pair.state("server2")["super_read_only"] and pair.state("server2")["replica"] is None
    assert list((pair.state_dir / "bootstrap").iterdir()) == [] and list(pair.tempdir.iterdir()) == []


def test_gtids_that_appear_after_the_check_are_never_reset(tmp_path, monkeypatch):
    pair = Pair(tmp_path, monkeypatch, source_with_data("8.4.2"), empty_server("8.4.2", gtid_executed=f"{A}:1-2"))
    target = pair.servers["server2"]
    fence = target._write

    def commit_during_the_fence(sql: str, args: Tuple[Any, ...], st: Dict[str, Any]) -> None:
        fence(sql, args, st)
        if sql == "SET GLOBAL read_only = 1":  # a session of a SUPER user committed just before
            st["gtid_executed"] = union(st["gtid_executed"], f"{B}:1")

    monkeypatch.setattr(target, "_write", commit_during_the_fence)
    with pytest.raises(OrchError, match=f"server2: its GTIDs changed since they were checked .*{B}:1.*: nothing reset"):
        pair.run("--yes")
    assert "RESET BINARY LOGS AND GTIDS" not in statements(pair, "server2") and pair.clients() == []
    assert GtidSet.parse(pair.state("server2")["gtid_executed"]) == GtidSet.parse(f"{A}:1-2,{B}:1")


def test_a_seed_that_added_gtids_of_its_own_is_not_replicated(tmp_path, monkeypatch):
    pair = Pair(tmp_path, monkeypatch, source_with_data("8.0.36"), empty_server("8.0.36"))
    monkeypatch.setenv("FAKE_MYSQL_BINLOGS_THE_LOAD", "1")
    with pytest.raises(OrchError) as failed:
        pair.run("--yes")
    assert str(failed.value).startswith("orch bootstrap stopped: server2: gtid_executed is ")
    assert str(failed.value).endswith(f"after the seed, not the dump's '{A}:1-57,{C}:1-3': replication not started")
    assert not any(sql.startswith(("STOP", "CHANGE", "START")) for sql in statements(pair, "server2"))
    assert pair.state("server2")["replica"] is None


def test_a_source_without_user_schemas_hands_over_its_gtids_without_a_dump(tmp_path, monkeypatch):
    pair = Pair(tmp_path, monkeypatch, server_state("8.4.2", 1, A, gtid_executed=f"{A}:1-4"), empty_server("8.4.2"))
    code, out = pair.run("--yes")
    assert code == 0, out
    assert "no user schema to copy: set its gtid_purged to server1's gtid_executed" in out
    assert pair.clients() == []
    purged = [args for sql, args in pair.writes("server2") if sql == "SET GLOBAL gtid_purged = %s"]
    assert purged == [(f"{A}:1-4",)] and pair.state("server2")["gtid_executed"] == f"{A}:1-4"


def refusal_cases() -> List[Any]:
    v = "8.0.36"
    return [
        pytest.param(source_with_data(v), empty_server(v, gtid_mode="OFF"), "server2: GTIDs: gtid_mode=OFF, enforce_gtid_consistency=ON",
                     id="gtid_mode-off"),
        pytest.param(source_with_data(v, enforce_gtid_consistency="WARN"), empty_server(v),
                     "server1: GTIDs: gtid_mode=ON, enforce_gtid_consistency=WARN", id="enforce-gtid-consistency-warn"),
        pytest.param(source_with_data(v), empty_server(v, gtid_executed=f"{A}:1-2", schemas={"scratch": {"tables": 1}}),
                     "refused: both server1 and server2 hold tables", id="target-with-a-user-table"),
        pytest.param(source_with_data(v), empty_server(v, schemas={"scratch": {"tables": 0, "routines": 1}}),
                     "refused: both server1 and server2 hold tables, views, routines or events", id="target-with-a-routine"),
        pytest.param(source_with_data(v), empty_server(v, gtid_executed=f"{A}:1-2,\n{B}:1-3"),
                     f"refused: server2 has transactions server1 lacks ({B}:1-3)", id="target-with-gtids-the-source-lacks"),
        pytest.param(source_with_data(v), empty_server("8.0.22"), "server2 runs MySQL 8.0.22: bootstrap needs 8.0.23 or later",
                     id="mysql-8.0.22"),
        pytest.param(source_with_data(v), empty_server(v, replica={"host": "10.0.0.9", "port": 3306, "user": "repl", "password_sha256": "",
                                                                    "heartbeat": 1.0, "auto_position": 1, "running": True}),
                     "refused: server2 replicates from 10.0.0.9:3306, not from server1", id="target-replicating-elsewhere"),
    ]


@pytest.mark.parametrize("s1, s2, said", refusal_cases())
def test_refusals_change_nothing(tmp_path, monkeypatch, s1, s2, said):
    pair = Pair(tmp_path, monkeypatch, s1, s2)
    before = {name: pair.state(name) for name in pair.servers}
    try:
        code, out = pair.run("--yes")
    except Refused as exc:  # the CLI prints it as one line, exit 1
        code, out = 1, str(exc)
        assert out.endswith(": nothing changed") and "\n" not in out
    assert code == 1 and said in out, out
    assert pair.writes("server1") == pair.writes("server2") == [], "nothing written"
    assert pair.clients() == [], "no client ran"
    assert {name: pair.state(name) for name in pair.servers} == before
    assert not (pair.state_dir / "journal.jsonl").exists()
    assert_no_secret(out)


def test_the_fake_clients_refuse_as_mysql_would(tmp_path, monkeypatch):
    """The stand-ins have teeth: a load over a non-empty gtid_executed fails as mysql does,
    and a load with the binary log on adds the target's own GTIDs."""
    import subprocess

    pair = Pair(tmp_path, monkeypatch, source_with_data("8.0.36"), empty_server("8.0.36", gtid_executed=f"{A}:1-2"))
    options = tmp_path / "client.cnf"
    options.write_text('[client]\nhost="10.0.0.2"\nport=3306\nuser="admin"\npassword="x"\n')
    dump = f"SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '{A}:1-57';\nUSE `app`;\nCREATE TABLE `t0` (id int);\n"
    mysql = [boot.MYSQL_CLIENT, f"--defaults-file={options}"]
    overlap = subprocess.run(mysql, input=dump, capture_output=True, text=True, check=False)
    assert overlap.returncode == 1 and "ERROR 3546" in overlap.stderr
    st = pair.state("server2")
    st["gtid_executed"] = ""
    pair.servers["server2"].save(st)
    logged = subprocess.run(mysql, input=dump, capture_output=True, text=True, check=False)
    assert logged.returncode == 0, logged.stderr
    assert GtidSet.parse(pair.state("server2")["gtid_executed"]) == GtidSet.parse(f"{A}:1-57,{B}:1")
    with pytest.raises(DatabaseError, match="1064"):
        FakeMySQL(Node("x", "10.0.0.3"), Account("a", "b"), tmp_path / "x.json", **empty_server("8.4.2")).execute("RESET MASTER")
    assert stat.S_IMODE(os.stat(boot.MYSQL_DUMP).st_mode) & stat.S_IXUSR


def test_two_release_series_are_seeded_with_the_warning_shown_logged_and_journaled(tmp_path, monkeypatch, caplog):
    import json

    pair = Pair(tmp_path, monkeypatch, source_with_data("8.0.36"), empty_server("8.4.2"))
    code, out = pair.run("--yes")
    assert code == 0 and pair.state("server2")["replica"]["running"], out
    assert "warning: server1 runs 8.0.36 and server2 8.4.2: each failover reverses replication" in out
    assert any("server1 runs 8.0.36 and server2 8.4.2" in r.getMessage() for r in caplog.records)
    begin = [json.loads(line) for line in (pair.state_dir / "journal.jsonl").read_text().splitlines()][0]
    assert begin["event"] == "BOOTSTRAP" and "not supported" in begin["warnings"][0]
    assert "release series" in out and "WARN  release series" in out  # and doctor's table after it
