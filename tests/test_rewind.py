"""Rewind a divergent tail: the pure parts table-tested, then end to end on a real
MariaDB pair with a diverged node (orch demote --rewind, and the automatic path)."""

from __future__ import annotations

import calendar
import glob
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from orchestrator import clientfile
from orchestrator import rewind as rw
from orchestrator.config import parse
from orchestrator.decide import BACKUP, decide
from orchestrator.errors import Refused
from orchestrator.gtid import BinlogState, parse_mariadb_gtids
from orchestrator.lab import mariadb as lab
from orchestrator.model import ClusterView, NodeState
from orchestrator.plan import ACT, REFUSED, ChangeSource, Fence, MarkRewind, Rewind, StartReplica, StopReplica

from . import orchtest as t
from .test_decide import repl

# --------------------------------------------------------------------------- pure


def ev(file: str, pos: int, end: int, typ: str, info: str = "", sid: int = 1) -> rw.BinlogEvent:
    return rw.BinlogEvent(file, pos, end, typ, sid, info)


def trx(file: str, pos: int, gtid: str, *types: str, standalone: bool = False) -> List[rw.BinlogEvent]:
    out = [ev(file, pos, pos + 40, "Gtid", ("GTID " if standalone else "BEGIN GTID ") + gtid + " cid=7")]
    p = pos + 40
    for typ in types:
        info = typ.split(":", 1)[1] if ":" in typ else ""
        out.append(ev(file, p, p + 50, typ.split(":", 1)[0], info))
        p += 50
    return out


ROWS = ("Annotate_rows", "Table_map", "Write_rows_v1", "Xid")
HEAD = [ev("b.000002", 4, 256, "Format_desc"), ev("b.000002", 256, 285, "Gtid_list", "[0-1-2]"), ev("b.000002", 285, 330, "Binlog_checkpoint")]


def binlog(*transactions: List[rw.BinlogEvent]) -> List[rw.BinlogEvent]:
    return HEAD + [e for t_ in transactions for e in t_]


PEER = BinlogState.parse("0-1-3,0-2-6")  # the peer has 0-1-3, then its own 0-2-4..6


def test_find_tail_takes_exactly_the_errant_transactions():
    events = binlog(trx("b.000002", 330, "0-1-3", *ROWS), trx("b.000002", 600, "0-1-4", *ROWS),
                    trx("b.000002", 900, "0-1-5", "Annotate_rows", "Table_map", "Update_rows_v1", "Delete_rows_compressed_v1", "Xid"))
    tail = rw.find_tail(events, parse_mariadb_gtids("0-1-2"), PEER, BinlogState.parse("0-1-5"))
    assert [str(g) for g in tail.gtids] == ["0-1-4", "0-1-5"]
    assert tail.common_state == "0-1-3" and tail.common_pos == "0-1-3"
    assert tail.ranges() == [("b.000002", 600, 900 + 40 + 5 * 50)]
    rw.check_errant_matches(tail, "0-1-5")
    with pytest.raises(Refused, match="GTID domains"):
        rw.check_errant_matches(tail, "0-1-5,1-1-3")


def test_find_tail_across_files_and_domains_keeps_the_common_state():
    second = [ev("b.000003", 4, 256, "Format_desc"), ev("b.000003", 256, 300, "Gtid_list", "[0-1-4,0-2-3]")]
    events = (HEAD + trx("b.000002", 330, "0-2-3", *ROWS) + [ev("b.000002", 600, 650, "Rotate", "b.000003;pos=4")]
              + second + trx("b.000003", 300, "0-1-4", *ROWS) + trx("b.000003", 600, "1-1-1", *ROWS))
    peer = BinlogState.parse("0-1-2,0-2-9")
    tail = rw.find_tail(events, parse_mariadb_gtids("0-1-2"), peer, BinlogState.parse("0-1-4,0-2-3,1-1-1"))
    assert [str(g) for g in tail.gtids] == ["0-1-4", "1-1-1"]
    assert tail.common_state == "0-1-2,0-2-3" and tail.common_pos == "0-2-3"  # domain 1 is errant from its start
    assert tail.ranges() == [("b.000003", 300, 600 + 40 + 4 * 50)]


@pytest.mark.parametrize("bad, fragment", [
    (trx("b.000002", 600, "0-1-4", "Query:ALTER TABLE test.t ADD c INT", standalone=True), "DDL or a non-transactional statement ('ALTER TABLE"),
    (trx("b.000002", 600, "0-1-4", "Query:INSERT INTO t VALUES (1)", "Xid"), "holds a Query event"),
    (trx("b.000002", 600, "0-1-4", "Table_map", "Write_rows_v1", "Query:COMMIT"), "holds a Query event"),
    (trx("b.000002", 600, "0-1-4", "Table_map", "Write_rows_v1"), "does not end with a transactional commit"),
    (trx("b.000002", 600, "0-1-4", "Xid"), "holds no row events"),
])
def test_find_tail_refuses_what_flashback_cannot_undo(bad, fragment):
    events = binlog(trx("b.000002", 330, "0-1-3", *ROWS), bad)
    with pytest.raises(Refused, match="cannot rewind") as exc:
        rw.find_tail(events, parse_mariadb_gtids("0-1-2"), PEER, BinlogState.parse("0-1-4"))
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_find_tail_refuses_a_tail_that_is_not_the_binlogs_end():
    # 0-1-4 is errant, then 1-2-1 (which the peer has) follows it
    events = binlog(trx("b.000002", 330, "0-1-4", *ROWS), trx("b.000002", 600, "1-2-1", *ROWS))
    with pytest.raises(Refused, match="not the binlog's tail"):
        rw.find_tail(events, parse_mariadb_gtids("0-1-2"), BinlogState.parse("0-1-3,1-2-1"), BinlogState.parse("0-1-4,1-2-1"))


def test_find_tail_refuses_binlogs_that_do_not_match_the_state():
    events = binlog(trx("b.000002", 330, "0-1-3", *ROWS), trx("b.000002", 600, "0-1-4", *ROWS))
    with pytest.raises(Refused, match="gtid_binlog_state is 0-1-5"):
        rw.find_tail(events, parse_mariadb_gtids("0-1-2"), PEER, BinlogState.parse("0-1-5"))


def test_start_file_and_purged_binlogs():
    heads = [("b.000001", "[]"), ("b.000002", "[0-1-2]"), ("b.000003", "[0-1-4]")]
    assert rw.start_file(heads, PEER) == "b.000002"  # 0-1-4 is errant: the tail starts in .000002
    assert rw.start_file(heads, BinlogState.parse("0-1-9")) == "b.000003"
    assert rw.start_file([("b.000003", "[0-1-4]")], PEER) is None  # the file that held 0-1-3..4 is purged


@pytest.mark.parametrize("fmt, image, log_bin, fragment", [
    ("MIXED", "FULL", 1, "binlog_format is MIXED, it must be ROW"),
    ("ROW", "MINIMAL", 1, "binlog_row_image is MINIMAL, it must be FULL"),
    ("ROW", "FULL", 0, "binary logging is off"),
])
def test_settings_refused(fmt, image, log_bin, fragment):
    with pytest.raises(Refused, match=fragment):
        rw.check_settings(fmt, image, log_bin)
    rw.check_settings("ROW", "FULL", 1)


MIN = 86_400_000
GOOD = rw.SemiSyncFacts(True, True, 31_536_000_000, True, 1000.0, 1500.0, 1, (1,))


@pytest.mark.parametrize("change, proven, fragment", [
    ({}, True, "semi-sync without fallback was on since"),
    ({"first_errant_at": 1000.0}, True, "before the tail began"),  # the same second counts
    ({"configured": False}, False, "failover.semi_sync is off"),
    ({"enabled": False}, False, "rpl_semi_sync_master_enabled is OFF"),
    ({"timeout_ms": 2000}, False, "may fall back to asynchronous"),
    ({"wait_no_replica": False}, False, "wait_no_slave is OFF"),
    ({"wait_on_since": None}, False, "switched the semi-sync wait off last"),
    ({"wait_on_since": 1600.0}, False, "after the first errant transaction"),
    ({"first_errant_at": None}, False, "time is unknown"),
    ({"errant_server_ids": (1, 2)}, False, "server id(s) [2]"),
])
def test_unacknowledged_proof(change, proven, fragment):
    from dataclasses import replace

    ok, why = rw.unacknowledged(replace(GOOD, **change), MIN)
    assert ok is proven and fragment in why


def test_event_times_and_flashback_statements():
    out = (
        "DELIMITER /*!*/;\n# at 730\n#261126  9:56:55 server id 1  end_log_pos 772 CRC32 0x00b557ca \tGTID 0-1-3 trans\n"
        "/*M!100001 SET @@session.gtid_seq_no=3*//*!*/;\nSTART TRANSACTION\n/*!*/;\n"
        "#261126  9:56:55 server id 1  end_log_pos 926 CRC32 0x0e5b462c \tWrite_rows: table id 18\n\nBINLOG '\nAAAA\nBBBB\n'/*!*/;\n"
        "COMMIT\n/*!*/;\nDELIMITER ;\n# End of log file\nROLLBACK /* added by mysqlbinlog */;\n"
    )
    assert rw.event_times(out) == {"0-1-3": float(calendar.timegm((2026, 11, 26, 9, 56, 55)))}
    assert rw.flashback_statements(out) == ["BINLOG '\nAAAA\nBBBB\n'"]
    with pytest.raises(Refused):
        rw.flashback_statements("garbage")


def test_option_file_keeps_any_password():
    text = clientfile.client_options("orch", 'p "#\\ à\t')
    assert text == '[client]\nuser="orch"\npassword="p \\"#\\\\ à\\t"\n'
    assert clientfile.client_options("orch", "x", "required", "/etc/ca.pem").endswith('ssl\nssl-ca="/etc/ca.pem"\nssl-verify-server-cert\n')
    assert clientfile.client_options("orch", "x", "disabled").endswith("skip-ssl\n")


def test_mysql_refuses_before_touching_anything():
    """Flavor statement level: a MySQL node is refused with the rebuild path, and nothing
    is even read (no servers are given)."""
    from orchestrator import flavors

    mysql = flavors.get("mysql", "8.0.36")
    step = Rewind("server1", "server2", "3e11fa47-71ca-11e1-9e33-c80aa9429562:5", proven=False)
    with pytest.raises(Refused, match=r"^MySQL: rewind is not supported; rebuild the node from the peer: .*CLONE INSTANCE"):
        rw.perform(None, {}, step, mysql)


# --------------------------------------------------------------------------- decisions


def cfg(**failover: Any):
    return parse({
        "self": "server1",
        "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
        "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
        "failover": failover, "keepalived": {"vip_check": False},
    })


def maria(name: str, ro: bool, pos: str, state: str, replica=None) -> NodeState:
    n = int(name[-1])
    return NodeState(name=name, host=f"10.0.0.{n}", port=3306, reachable=True, version="10.11.6-MariaDB", flavor="mariadb",
                     server_id=n, read_only=ro, executed=pos, binlog_pos=pos, binlog_state=state, replica=replica)


DIVERGED = ClusterView(maria("server1", True, "0-1-5", "0-1-5"), maria("server2", False, "0-2-7", "0-1-3,0-2-7"))
TAIL = ChangeSource("server1", "server2", "10.0.0.2", 3306), StartReplica("server1")


def test_decide_operator_rewind():
    plan = decide(DIVERGED, BACKUP, cfg(), operator=True, rewind=True)
    assert plan.outcome == ACT
    assert plan.steps == (MarkRewind("server1"), Rewind("server1", "server2", "0-1-5", proven=False)) + TAIL
    assert "rolling them back (on the operator's word, saved first)" in plan.reason
    assert "on the operator's word" in plan.steps[1].describe()


def test_decide_refuses_without_rewind_and_names_it():
    plan = decide(DIVERGED, BACKUP, cfg(), operator=True)
    assert plan.outcome == REFUSED and plan.steps == ()
    assert "errant GTIDs 0-1-5" in plan.reason and "orch demote --rewind" in plan.reason


def test_decide_automatic_only_with_semi_sync_and_auto_rewind():
    auto = cfg(semi_sync=True, witness="10.0.0.254")
    writable = ClusterView(maria("server1", False, "0-1-5", "0-1-5", repl(io=t_stopped(), sql=t_stopped())), DIVERGED.peer)
    plan = decide(writable, BACKUP, auto)
    assert plan.outcome == ACT
    assert plan.steps == (Fence("server1"), MarkRewind("server1"), StopReplica("server1"),
                          Rewind("server1", "server2", "0-1-5", proven=True)) + TAIL
    off = decide(DIVERGED, BACKUP, cfg(semi_sync=True, witness="10.0.0.254", auto_rewind=False))
    assert off.outcome == REFUSED and "orch demote --rewind" in off.reason
    assert decide(DIVERGED, BACKUP, cfg()).outcome == REFUSED  # no semi-sync: never automatic


def test_status_says_a_node_is_being_rewound():
    from dataclasses import replace

    from orchestrator.commands.status import table_rows
    from orchestrator.statusdoc import node_summary

    me = replace(DIVERGED.me, rewinding=True)
    view = ClusterView(me, DIVERGED.peer)
    doc = node_summary(view, me, view.peer, cfg())
    assert doc["rewinding"] is True and doc["errant_gtids"] == "0-1-5"
    assert dict(table_rows(doc))["errant GTIDs"] == "0-1-5 (being rewound)"
    quiet = node_summary(DIVERGED, DIVERGED.me, DIVERGED.peer, cfg())
    assert quiet["rewinding"] is False and dict(table_rows(quiet))["errant GTIDs"] == "0-1-5"


def t_stopped():
    from orchestrator.model import ThreadState

    return ThreadState.STOPPED


def test_decide_mysql_refuses_with_the_rebuild_path():
    uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    other = "4e11fa47-71ca-11e1-9e33-c80aa9429562"

    def my(name, ro, executed):
        n = int(name[-1])
        return NodeState(name=name, host=f"10.0.0.{n}", port=3306, reachable=True, version="8.0.36", flavor="mysql", server_id=n,
                         read_only=ro, super_read_only=ro, executed=executed, binlog_pos=executed, binlog_state=executed)

    view = ClusterView(my("server1", True, f"{uuid}:1-5"), my("server2", False, f"{uuid}:1-3,{other}:1-9"))
    for kwargs, c in (({"rewind": True, "operator": True}, cfg()), ({}, cfg(semi_sync=True, witness="10.0.0.254"))):
        plan = decide(view, BACKUP, c, **kwargs)
        assert plan.outcome == REFUSED and plan.steps == ()
        assert "MySQL: rewind is not supported; rebuild the node from the peer" in plan.reason


# --------------------------------------------------------------------------- real servers

U8 = lab.Credentials("orch_rw", 'pässwörd-密码-🔑 #"\\')


def rows(server: lab.MariaDBInstance) -> List[Tuple[Any, ...]]:
    return [tuple(r.values()) for r in server.sql("SELECT * FROM test.t ORDER BY id")]


def diverge(s1: lab.MariaDBInstance, s2: lab.MariaDBInstance, ddl: bool = False, rotate: bool = False) -> str:
    """server1 takes a tail server2 never receives, is fenced; server2 is promoted and writes.
    Returns server1's errant GTID."""
    s1.sql("INSERT INTO test.t VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    lab.wait_gtid_equal(s1, s2)
    s2.sql("STOP SLAVE")
    # the tail to discard: an insert, an update, a delete, and one multi-statement transaction
    s1.sql("INSERT INTO test.t VALUES (100, 'discarded-insert')")
    if rotate:
        # the tail spans two binlog files, the second changing a row the first inserted:
        # undone in the wrong order, the rollback fails
        s1.sql("FLUSH BINARY LOGS")
        s1.sql("UPDATE test.t SET v = 'discarded-changed' WHERE id = 100")
    s1.sql("UPDATE test.t SET v = 'discarded-update' WHERE id = 1")
    with s1.connect() as conn, conn.cursor() as cur:
        cur.execute("START TRANSACTION")
        cur.execute("DELETE FROM test.t WHERE id = 2")
        cur.execute("INSERT INTO test.t VALUES (101, 'discarded-in-trx')")
        cur.execute("COMMIT")
    if ddl:
        s1.sql("ALTER TABLE test.t ADD COLUMN extra INT")
    s1.sql("SET GLOBAL read_only = 1")
    s2.sql("RESET SLAVE ALL")
    s2.sql("SET GLOBAL read_only = 0")
    s2.sql("INSERT INTO test.t VALUES (200, 'peer'), (201, 'peer')")
    s2.sql("UPDATE test.t SET v = 'peer-update' WHERE id = 2")
    return t.gtid(s1, "gtid_binlog_pos")


def rewind_dirs(state: str) -> List[str]:
    return sorted(glob.glob(os.path.join(state, "rewind", "*")))


def option_dirs() -> List[str]:
    return sorted(glob.glob(os.path.join(tempfile.gettempdir(), "orch-rewind-*")))


def u8_config(s1, s2, tmp_path: Path, state: str, **failover: Any) -> str:
    for s in (s1, s2):
        s.create_account(U8, "ALL PRIVILEGES")
    d = t.config_dict(s1, s2, state)
    d["mysql"] = {"user": U8.user, "password": U8.password, "connect_timeout": 1}
    d["failover"] = {**d["failover"], **failover}
    return t.write_config(tmp_path / "orch-u8.yaml", d)


def rewind_record(state: str) -> Dict[str, Any]:
    ends = [r for r in t.journal(state) if r.get("phase") == "end" and any(s["step"] == "Rewind" for s in r["steps"])]
    assert ends, t.journal(state)
    return ends[-1]


def assert_converged(s1, s2) -> None:
    lab.wait_replica_running(s1)
    s2.sql("INSERT INTO test.t VALUES (300, 'after')")
    lab.wait_gtid_equal(s1, s2)
    assert rows(s1) == rows(s2)
    for var in ("gtid_binlog_state", "gtid_current_pos"):
        assert t.gtid(s1, var) == t.gtid(s2, var), var
    assert t.read_only(s1) and not t.read_only(s2)


@pytest.mark.mariadb
def test_demote_rewind_rolls_back_the_tail_and_rejoins(cluster, tmp_path):
    s1, s2, _, state = cluster
    assert s1.query_value("SELECT @@global.binlog_row_image") == "FULL"
    cfg_path = u8_config(s1, s2, tmp_path, state)  # a UTF-8 password reaches mariadb-binlog through its option file
    errant = diverge(s1, s2)
    before_tmp = option_dirs()

    r = t.orch(cfg_path, "server1", "demote", "--rewind", "--yes")
    assert r.code == 0, r
    assert f"rewind server1: save, then roll back its errant transactions {errant}" in r.stdout
    t.assert_no_secrets(r.stdout, r.stderr, extra=(U8.password, "密码", "🔑"))
    assert option_dirs() == before_tmp, "the option file's private directory must be removed"
    assert_converged(s1, s2)
    assert (1, "one") in rows(s1) and (2, "peer-update") in rows(s1) and (100, "discarded-insert") not in rows(s1)

    [where] = rewind_dirs(state)
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.dirname(where)).st_mode) == 0o700
    files = {p.name: p.read_text() for p in Path(where).iterdir()}
    assert set(files) == {"transactions.sql", "excerpt.binlog.sql", "flashback.sql", "summary.json"}
    readable = files["transactions.sql"]
    for fragment in ("### INSERT INTO `test`.`t`", "'discarded-insert'", "### UPDATE `test`.`t`", "'discarded-update'",
                     "### DELETE FROM `test`.`t`", "'discarded-in-trx'", "GTID 0-1-"):
        assert fragment in readable, fragment
    assert "BINLOG '" not in readable
    excerpt = files["excerpt.binlog.sql"]
    assert "BINLOG '" in excerpt and "'discarded-in-trx'" in excerpt
    assert "BINLOG '" in files["flashback.sql"]
    summary = json.loads(files["summary.json"])
    assert summary["errant"] == errant and summary["peer"] == "server2" and summary["applied"] is True
    assert summary["proven"] is False and len(summary["transactions"]) == 3 and summary["ranges"]
    for p in Path(where).iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        t.assert_no_secrets(p.read_text(), extra=(U8.password,))

    record = rewind_record(state)
    [step] = [s for s in record["steps"] if s["step"] == "Rewind"]
    assert step["result"] == "ok" and where in step["detail"]
    assert record["result"] == "act"

    # run again: nothing errant any more, nothing to do
    again = t.orch(cfg_path, "server1", "demote", "--rewind", "--yes")
    assert again.code == 0, again
    assert rewind_dirs(state) == [where]


@pytest.mark.mariadb
def test_dry_run_changes_nothing(cluster):
    s1, s2, cfg_path, state = cluster
    errant = diverge(s1, s2)
    before, data = t.snapshot(s1, s2), (rows(s1), rows(s2))
    r = t.orch(cfg_path, "server1", "demote", "--rewind", "--dry-run")
    assert r.code == 0, r
    assert f"rewind server1: save, then roll back its errant transactions {errant}" in r.stdout
    assert "dry run: nothing changed" in r.stdout
    assert t.snapshot(s1, s2) == before and (rows(s1), rows(s2)) == data
    assert rewind_dirs(state) == [] and t.journal(state) == []


@pytest.mark.mariadb
def test_without_rewind_refuses_and_names_the_flag(cluster):
    s1, s2, cfg_path, state = cluster
    errant = diverge(s1, s2)
    before = t.snapshot(s1, s2)
    r = t.orch(cfg_path, "server1", "demote", "--yes")
    assert r.code == 1, r
    assert f"errant GTIDs {errant}" in r.output and "orch demote --rewind" in r.output
    assert t.snapshot(s1, s2) == before and rewind_dirs(state) == []


@pytest.mark.mariadb
def test_ddl_in_the_tail_refuses_and_changes_nothing(cluster):
    """Refused while locating the tail, before anything is saved: no files, no change."""
    s1, s2, cfg_path, state = cluster
    diverge(s1, s2, ddl=True)
    before, data = t.snapshot(s1, s2), (rows(s1), rows(s2))
    r = t.orch(cfg_path, "server1", "demote", "--rewind", "--yes")
    assert r.code == 1, r
    assert "cannot rewind" in r.stderr and "DDL" in r.stderr and "ALTER TABLE" in r.stderr
    assert t.snapshot(s1, s2) == before and (rows(s1), rows(s2)) == data
    assert rewind_dirs(state) == []
    [step] = [s for s in rewind_record(state)["steps"] if s["step"] == "Rewind"]
    assert step["result"] == "failed" and "DDL" in step["detail"]


def semi_sync_config(s1, s2, tmp_path: Path, state: str) -> str:
    d = t.config_dict(s1, s2, state)
    d["failover"] = {**d["failover"], "semi_sync": True, "witness": "127.0.0.1"}
    return t.write_config(tmp_path / "orch-semi.yaml", d)


def no_fallback(server: lab.MariaDBInstance) -> None:
    # Uptime and binlog times have whole seconds: the proof rounds against itself, so a
    # tail written within a second or two of the server's start is not proven.
    # Set after the tail was written (it would wait for ever without a replica): the proof
    # trusts the server's settings since its start, as semisync.wait_on_since documents.
    server.sql("SET GLOBAL rpl_semi_sync_master_timeout = 31536000000, rpl_semi_sync_master_wait_no_slave = ON, "
               "rpl_semi_sync_master_enabled = ON")


@pytest.mark.mariadb
def test_automatic_rewind_when_proven_unacknowledged(cluster, tmp_path):
    s1, s2, _, state = cluster
    cfg_path = semi_sync_config(s1, s2, tmp_path, state)
    time.sleep(max(0.0, 2.5 - float(s1.sql("SHOW GLOBAL STATUS LIKE 'Uptime'")[0]["Value"] or 0)))  # see no_fallback
    errant = diverge(s1, s2)
    no_fallback(s1)
    r = t.orch(cfg_path, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 0, r
    assert "rolling them back (automatically, if proven never acknowledged" in r.stderr
    # MariaDB 10.11: with the master-side wait on (no fallback) and no semi-sync replica of its
    # own, a replica's SQL thread waits for an ACK at every commit ("Waiting for semi-sync ACK
    # from slave"): switching it off on a replica is the semi-sync policy's job, not the rewind's.
    s1.sql("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
    assert_converged(s1, s2)
    [where] = rewind_dirs(state)
    summary = json.loads(Path(where, "summary.json").read_text())
    assert summary["proven"] is True and "semi-sync without fallback was on since" in summary["proof"]
    assert summary["errant"] == errant
    [step] = [s for s in rewind_record(state)["steps"] if s["step"] == "Rewind"]
    assert step["result"] == "ok" and where in step["detail"] and "proven unacknowledged" in step["detail"]


@pytest.mark.mariadb
@pytest.mark.parametrize("record_on, fragment", [(False, "switched the semi-sync wait off last"), (True, "after the first errant transaction")])
def test_automatic_rewind_refused_without_proof(cluster, tmp_path, record_on, fragment):
    from orchestrator import semisync

    s1, s2, _, state = cluster
    cfg_path = semi_sync_config(s1, s2, tmp_path, state)
    errant = diverge(s1, s2)
    no_fallback(s1)
    time.sleep(1.1)  # a record written now is in a later second than the tail
    os.makedirs(state, exist_ok=True)
    semisync.write_record(state, record_on, "test", "server1")
    before, data = t.snapshot(s1, s2), (rows(s1), rows(s2))
    r = t.orch(cfg_path, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 1, r
    assert f"tail {errant} is not proven unacknowledged" in r.stderr and fragment in r.stderr
    assert "orch demote --rewind" in r.stderr
    assert t.snapshot(s1, s2) == before and (rows(s1), rows(s2)) == data
    assert rewind_dirs(state) == []


# The install checklist's grants for orch, and what a rewind needs on top of them: each one needed.
BASE_GRANTS = "RELOAD, PROCESS, CONNECTION ADMIN, REPLICATION SLAVE ADMIN, READ_ONLY ADMIN, SLAVE MONITOR"
REWIND_GRANTS = ("BINLOG MONITOR", "REPLICATION SLAVE", "BINLOG ADMIN", "BINLOG REPLAY", "REPLICATION MASTER ADMIN")


@pytest.mark.mariadb
@pytest.mark.parametrize("missing", (None,) + REWIND_GRANTS)
def test_rewind_grants(cluster, tmp_path, missing):
    """With the documented grants a rewind works; without any one of them it is refused
    before anything is saved or changed, and the message names the privilege."""
    s1, s2, _, state = cluster
    account = lab.Credentials("orch_min", "min-pw-ü")
    privileges = ", ".join([BASE_GRANTS] + [g for g in REWIND_GRANTS if g != missing])
    for s in (s1, s2):
        s.create_account(account, privileges)
    d = t.config_dict(s1, s2, state)
    d["mysql"] = {"user": account.user, "password": account.password, "connect_timeout": 1}
    cfg_path = t.write_config(tmp_path / "orch-min.yaml", d)
    errant = diverge(s1, s2)
    before, data = t.snapshot(s1, s2), (rows(s1), rows(s2))
    r = t.orch(cfg_path, "server1", "demote", "--rewind", "--yes")
    if missing is None:
        assert r.code == 0, r
        assert_converged(s1, s2)
        return
    assert r.code == 1, r
    result = [line for line in r.stdout.splitlines() if line.startswith("result:")]
    assert len(result) == 1 and result[0].startswith("result: ") and missing in result[0], r
    assert t.snapshot(s1, s2) == before and (rows(s1), rows(s2)) == data
    assert t.gtid(s1, "gtid_binlog_pos") == errant and rewind_dirs(state) == []


@pytest.mark.mariadb
def test_run_cut_off_after_the_rollback_is_finished_by_the_next(cluster, monkeypatch):
    """The rollback committed, then the run stopped before the GTID reset: the next run
    finds the saved record and only resets the GTID state (a second rollback would fail)."""
    from orchestrator import flavors
    from orchestrator.config import load
    from orchestrator.db import open_servers

    s1, s2, cfg_path, state = cluster
    errant = diverge(s1, s2)
    cfg = load(cfg_path, "server1")
    servers = open_servers(cfg)

    def cut_off(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rw, "reset_gtid_state", cut_off)
    try:
        with pytest.raises(KeyboardInterrupt):
            rw.perform(cfg, servers, Rewind("server1", "server2", errant, proven=False), flavors.get("mariadb", "10.11.6-MariaDB"))
    finally:
        for server in servers.values():
            server.close()
    monkeypatch.undo()
    assert (100, "discarded-insert") not in rows(s1) and t.gtid(s1, "gtid_binlog_pos") == errant
    [where] = rewind_dirs(state)
    r = t.orch(cfg_path, "server1", "demote", "--rewind", "--yes")
    assert r.code == 0, r
    assert f"finished the rewind saved in {where}" in r.stdout
    assert rewind_dirs(state) == [where]
    assert json.loads(Path(where, "summary.json").read_text())["applied"] is True
    assert_converged(s1, s2)


@pytest.mark.mariadb
def test_tail_across_binlog_files_is_undone_last_file_first(cluster):
    s1, s2, cfg_path, state = cluster
    errant = diverge(s1, s2, rotate=True)
    assert len(s1.sql("SHOW BINARY LOGS")) >= 2
    r = t.orch(cfg_path, "server1", "demote", "--rewind", "--yes")
    assert r.code == 0, r
    assert_converged(s1, s2)
    [where] = rewind_dirs(state)
    summary = json.loads(Path(where, "summary.json").read_text())
    assert summary["errant"] == errant and len(summary["ranges"]) == 2 and len(summary["transactions"]) == 4
    assert "'discarded-changed'" in Path(where, "transactions.sql").read_text()


@pytest.mark.mariadb
def test_purged_tail_refuses_and_changes_nothing(cluster):
    s1, s2, cfg_path, state = cluster
    diverge(s1, s2)
    s1.sql("FLUSH BINARY LOGS")
    last = s1.sql("SHOW BINARY LOGS")[-1]["Log_name"]
    deadline = time.monotonic() + 10
    while len(s1.sql("SHOW BINARY LOGS")) > 1:  # a file is purged only once InnoDB checkpointed its commits
        assert time.monotonic() < deadline, "the binlog holding the tail could not be purged"
        s1.sql(f"PURGE BINARY LOGS TO '{last}'")
        time.sleep(0.1)
    before, data = t.snapshot(s1, s2), (rows(s1), rows(s2))
    r = t.orch(cfg_path, "server1", "demote", "--rewind", "--yes")
    assert r.code == 1, r
    assert "the errant transactions are no longer in the binary logs" in r.stdout
    assert t.snapshot(s1, s2) == before and (rows(s1), rows(s2)) == data and rewind_dirs(state) == []


@pytest.mark.mariadb
def test_the_rewind_mark_keeps_a_quiet_master_from_yielding_to_the_replica_being_rewound(cluster, monkeypatch):
    """The rewind runbook's race: server2, a replica with an errant write, is rewound by orch
    demote --rewind; its replication is stopped while the master takes no writes. Without the
    mark the master's stale-writer rule takes server2's errant write for newer history; while
    the run holds the mark (and server2's binlog is unchanged) it does not; the mark ends with
    the rewind, and a changed binlog voids it."""
    from orchestrator import flavors
    from orchestrator.config import load
    from orchestrator.db import open_servers
    from orchestrator.execute import Executor
    from orchestrator.invariants import stale_writer
    from orchestrator.model import ClusterView
    from orchestrator.observe import read_node

    s1, s2, cfg_path, _ = cluster
    s1.sql("INSERT INTO test.t VALUES (1, 'one')")
    lab.wait_gtid_equal(s1, s2)
    s2.sql("SET GLOBAL read_only = 0")
    s2.sql("INSERT INTO test.t VALUES (-1, 'errant on the replica')")
    s2.sql("SET GLOBAL read_only = 1")
    errant = t.gtid(s2, "gtid_binlog_pos").split(",")[-1]
    assert errant.startswith("0-2-"), errant
    cfg = load(cfg_path, "server1")  # the master's side
    watch = open_servers(cfg)  # what the master's maintainer reads

    def master_sees() -> Tuple[bool, str]:
        me, peer = read_node(watch["server1"]), read_node(watch["server2"])
        return peer.rewinding, stale_writer(ClusterView(me, peer, holds_vip=True), cfg)

    s2.sql("STOP SLAVE")
    assert master_sees() == (False, errant)  # the race: a stopped replica with an errant write looks newer
    s2.sql("START SLAVE")
    lab.wait_replica_running(s2)

    seen: List[Tuple[bool, str]] = []
    real = rw.perform

    def perform(*args: Any) -> str:
        seen.append(master_sees())  # replication stopped, the tail not yet rolled back
        return real(*args)

    monkeypatch.setattr(rw, "perform", perform)
    cfg2 = load(cfg_path, "server2")
    servers = open_servers(cfg2)
    execute = servers["server2"].execute

    def execute_and_look(sql: str, *args: Any, **kwargs: Any) -> None:
        execute(sql, *args, **kwargs)
        if sql == "RESET MASTER":  # the binlog state changed under the mark: the reset's lock holds
            seen.append(master_sees())

    monkeypatch.setattr(servers["server2"], "execute", execute_and_look)
    try:
        view = ClusterView(read_node(servers["server2"]), read_node(servers["server1"]))
        plan = decide(view, BACKUP, cfg2, operator=True, rewind=True)
        assert [type(s).__name__ for s in plan.steps][:3] == ["MarkRewind", "StopReplica", "Rewind"], plan.render()
        result = Executor(cfg2, servers, view).run(plan)
        assert result.error is None, result
        assert seen == [(True, ""), (True, "")]
        # the rewind ended: the mark is gone (the run's connection is still open)
        assert s2.query_value("SELECT IS_USED_LOCK(CONCAT('orch_rewind:', SHA1(@@global.gtid_binlog_state)))") is None
        assert s2.query_value("SELECT IS_USED_LOCK('orch_rewind:reset')") is None
        assert master_sees() == (False, "")
        assert (-1, "errant on the replica") not in rows(s2)

        # a mark whose binlog state changed since it was taken says nothing
        s2.sql("STOP SLAVE")
        s2.sql("SET GLOBAL read_only = 0")
        s2.sql("INSERT INTO test.t VALUES (-2, 'errant again')")
        s2.sql("SET GLOBAL read_only = 1")
        holder = servers["server2"]
        name = holder.value(flavors.get("mariadb", "10.11").rewind_mark_query or "")
        assert holder.value("SELECT GET_LOCK(%s, 0)", (name,)) == 1
        assert master_sees() == (True, "")
        s2.sql("SET GLOBAL read_only = 0")
        s2.sql("INSERT INTO test.t VALUES (-3, 'one more')")
        s2.sql("SET GLOBAL read_only = 1")
        rewinding, lacking = master_sees()
        assert not rewinding and lacking == t.gtid(s2, "gtid_binlog_pos").split(",")[-1], (rewinding, lacking)
    finally:
        for server in list(servers.values()) + list(watch.values()):
            server.close()
