"""orch bootstrap: a server with data and an empty server -> the pair of the reference design.

Observe both, decide (pure: which server is the source, what is missing, or why not),
print the plan, then act: the replication account on both (the config's password, as a
bound parameter), distinct auto_increment settings, the empty server fenced, seeded
from a consistent dump of the source (mariadb-dump --single-transaction --gtid, loaded
with the binary log off so that it adds no GTIDs of its own), made a GTID replica of
the source, caught up, and checked with orch doctor's checks.

Refused, with nothing changed: a server unreachable, the "empty" server holding tables
or GTIDs the source lacks, both servers holding data without replicating, a server
setting replication cannot work without (doctor's binary log checks), MySQL (not
implemented: it needs mysqldump --set-gtid-purged). A second run finds the pair made and
changes nothing.

It needs an account with more than orch's everyday grants (CREATE USER, the dump's
SELECT/SHOW VIEW/TRIGGER/EVENT/LOCK TABLES/RELOAD, loading the data): run it once with
an administrator in ``mysql:`` (a copy of orch.yaml), then go back to the orch account.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Mapping, Optional, Sequence, TextIO, Tuple

from ..clientfile import OptionFile
from ..config import Config
from ..errors import CommandError, OrchError, Refused

if TYPE_CHECKING:
    from ..db import Server
    from ..model import NodeState

log = logging.getLogger("orchestrator.bootstrap")

SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
DUMP = os.environ.get("ORCH_MARIADB_DUMP", "mariadb-dump")
CLIENT = os.environ.get("ORCH_MARIADB_CLIENT", "mariadb")
DUMP_TIMEOUT = 3600.0  # seconds: a logical dump is for small data sets (README: mariabackup for large ones)
SEED_GTID = re.compile(r"^-- SET GLOBAL gtid_slave_pos='([0-9,\-]*)';$", re.M)


# --- facts and the pure decision -------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One server as bootstrap sees it."""

    name: str
    host: str
    port: int
    tables: int  # tables outside the system schemas
    schemas: Tuple[str, ...]  # schemas outside the system schemas
    binlog_pos: str
    writable: bool
    repl_account: bool  # the replication account exists for the peer's address
    increment: int
    offset: int


@dataclass(frozen=True)
class Step:
    action: str  # account | auto_increment | fence | seed | replicate
    node: str
    detail: str

    def describe(self) -> str:
        return f"{self.node}: {self.detail}"


@dataclass(frozen=True)
class BootstrapPlan:
    reason: str
    source: str = ""
    target: str = ""
    steps: Tuple[Step, ...] = ()
    refused: bool = False

    def render(self) -> str:
        lines = [("refused: " if self.refused else "plan: ") + self.reason]
        lines += [f"  {i}. {s.describe()}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines)


def decide_bootstrap(a: Side, b: Side, replicating: Optional[str], errant: Mapping[str, str], repl_user: str,
                     repl_host: Mapping[str, str]) -> BootstrapPlan:
    """What turns a and b into a source and its read-only GTID replica.

    ``replicating``: the name of the server already replicating from the other, if one is.
    ``errant``: per server, the GTIDs it has that the other lacks. ``repl_host``: per
    server, the host part of the replication account to create there (the peer's address).
    """
    pair = {a.name: a, b.name: b}
    if replicating is not None:
        target = pair[replicating]
        source = b if target is a else a
    elif a.tables and b.tables:
        return BootstrapPlan(f"both {a.name} and {b.name} hold tables and neither replicates from the other: "
                             "bootstrap seeds only an empty server", refused=True)
    elif a.tables or b.tables:
        source = a if a.tables else b
        target = b if source is a else a
    else:
        # No tables anywhere: the server with a binary log history (or the writable one) leads.
        source = a if (a.binlog_pos and not b.binlog_pos) or (a.writable and not b.writable) else (b if b.binlog_pos or b.writable else a)
        target = b if source is a else a
    seeded = replicating is not None
    if not seeded and errant.get(target.name):
        return BootstrapPlan(f"{target.name} has transactions {source.name} lacks ({errant[target.name]}): "
                             "it is not empty; bootstrap never overwrites it", source.name, target.name, refused=True)
    steps: List[Step] = []
    for side in (source, target):
        if not side.repl_account:
            steps.append(Step("account", side.name, f"create the replication account {repl_user}@{repl_host[side.name]} "
                                                    "with REPLICATION SLAVE (replication.password; not binlogged)"))
    if not (source.increment >= 2 and target.increment >= 2 and source.offset != target.offset):
        steps.append(Step("auto_increment", source.name, "SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 1"))
        steps.append(Step("auto_increment", target.name, "SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 2"))
    if not seeded:
        if target.writable:
            steps.append(Step("fence", target.name, "set read_only on (it becomes the replica)"))
        what = ", ".join(source.schemas) or "no user schemas"
        steps.append(Step("seed", target.name, f"load a consistent dump of {source.name} ({what}) with the binary log off; "
                                               f"reset its binary log to start at the dump's GTID position"))
        steps.append(Step("replicate", target.name, f"replicate from {source.name} with GTID auto-positioning and wait until caught up"))
        reason = f"{source.name} has the data; {target.name} is empty: seed it and make it {source.name}'s replica"
    else:
        reason = f"{target.name} already replicates from {source.name}"
        reason += ": completing the accounts and auto_increment settings" if steps else ": nothing to do"
    return BootstrapPlan(reason, source.name, target.name, tuple(steps))


# --- gathering ---------------------------------------------------------------------------------


def read_side(server: Server, node: NodeState, repl_user: str, repl_host: str) -> Side:
    placeholders = ", ".join(["%s"] * len(SYSTEM_SCHEMAS))
    schemas = tuple(sorted(str(r["name"]) for r in server.query(
        f"SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({placeholders})", SYSTEM_SCHEMAS)))
    tables = int(server.value(
        f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN ({placeholders})", SYSTEM_SCHEMAS) or 0)
    account = int(server.value("SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = %s", (repl_user, repl_host)) or 0)
    inc = server.query("SELECT @@global.auto_increment_increment AS step, @@global.auto_increment_offset AS start")[0]
    return Side(node.name, node.host, node.port, tables, schemas, node.binlog_pos, node.writable, account > 0,
                int(inc["step"]), int(inc["start"]))


# --- acting ------------------------------------------------------------------------------------


def seed(cfg: Config, source: Side, target: Side, source_server: Server, work_dir: str) -> str:
    """Dump the source's user schemas consistently and load them into the target with the binary
    log off; return the dump's GTID position (the source's position when it has no user schema)."""
    if not source.schemas:
        return str(source_server.value("SELECT @@global.gtid_binlog_pos") or "")
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    dump_path = os.path.join(work_dir, f"seed-{time.strftime('%Y%m%dT%H%M%S')}.sql")
    try:
        with OptionFile.for_account(cfg.mysql, "orch-bootstrap-", source.host, source.port) as src:
            argv = [DUMP, f"--defaults-extra-file={src.path}", "--single-transaction", "--gtid", "--master-data=2",
                    "--routines", "--events", "--triggers", "--hex-blob", "--databases", *source.schemas]
            fd = os.open(dump_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                took = _run(argv, stdout=out)
        with open(dump_path, "rb") as fh:
            head = fh.read(64 * 1024).decode("utf-8", "replace")
        found = SEED_GTID.findall(head)
        if not found:
            raise CommandError(f"{DUMP}: no GTID position in the dump (is the binary log on?)")
        position = found[-1]
        log.info("bootstrap: dumped %s from %s at GTID %s in %s", ", ".join(source.schemas), source.name, position or "(empty)", took)
        with OptionFile.for_account(cfg.mysql, "orch-bootstrap-", target.host, target.port) as dst, open(dump_path, "rb") as dump:
            # The binary log off: the loaded rows are the source's transactions, not new ones of the target.
            argv = [CLIENT, f"--defaults-extra-file={dst.path}", "--binary-mode", "--init-command=SET SESSION sql_log_bin = 0"]
            took = _run(argv, stdin=dump)
        log.info("bootstrap: loaded the dump into %s in %s", target.name, took)
        return position
    finally:
        try:
            os.unlink(dump_path)
        except OSError:
            pass


def _run(argv: Sequence[str], stdin: object = None, stdout: object = None) -> str:
    """A client subprocess (argv list, no shell, no secrets in argv); CommandError on failure."""
    import subprocess

    started = time.monotonic()
    try:
        proc = subprocess.run(list(argv), stdin=stdin if stdin is not None else subprocess.DEVNULL,
                              stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=DUMP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise CommandError(f"{argv[0]}: timed out after {DUMP_TIMEOUT:g}s") from None
    except OSError as exc:
        raise CommandError(f"{argv[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        err = " | ".join(line.strip() for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip())[-300:]
        raise CommandError(f"{argv[0]}: exit code {proc.returncode}: {err}")
    return f"{time.monotonic() - started:.1f}s"


def execute(cfg: Config, plan: BootstrapPlan, servers: Mapping[str, Server], sides: Mapping[str, Side],
            repl_host: Mapping[str, str], out: TextIO) -> None:
    from .. import flavors

    source, target = sides[plan.source], sides[plan.target]
    for i, step in enumerate(plan.steps, 1):
        server = servers[step.node]
        started = time.monotonic()
        if step.action == "account":
            server.execute("SET SESSION sql_log_bin = 0", why="accounts are local to each server")
            server.execute("CREATE USER %s@%s IDENTIFIED BY %s", (cfg.replication.user, repl_host[step.node], cfg.replication.password))
            server.execute("GRANT REPLICATION SLAVE ON *.* TO %s@%s", (cfg.replication.user, repl_host[step.node]))
            server.execute("SET SESSION sql_log_bin = 1")
        elif step.action == "auto_increment":
            offset = 1 if step.node == source.name else 2
            server.execute("SET GLOBAL auto_increment_increment = 2, auto_increment_offset = %s", (offset,),
                           why="keys never collide; put the same in my.cnf")
        elif step.action == "fence":
            server.execute("SET GLOBAL read_only = 1", why="the replica")
        elif step.action == "seed":
            position = seed(cfg, source, target, servers[source.name], os.path.join(cfg.state_dir, "bootstrap"))
            # The target's binary log must know the seeded history too: as a master after a
            # failover it serves the old master from there, and orch's errant-GTID check
            # compares against it. Its own binary log held nothing the source lacks (checked).
            server.execute("RESET MASTER", why="the empty server's binary log starts at the seed")
            server.execute("SET GLOBAL gtid_binlog_state = %s", (position,), why="the seeded history")
            server.execute("SET GLOBAL gtid_slave_pos = %s", (position,), why="where the dump was taken")
            # The load added nothing to the target's binary log: its position is the dump's.
            current = str(server.value("SELECT @@global.gtid_current_pos") or "")
            if current != position:
                raise OrchError(f"{target.name}: gtid_current_pos is {current!r} after the load, not the dump's {position!r}: "
                                "replication not started")
        elif step.action == "replicate":
            version = str(server.value("SELECT VERSION()"))
            flavor = flavors.get(cfg.flavor, version)
            server.execute(flavor.stop_replica)
            for sql, args in flavor.change_source(source.host, source.port, cfg.replication.user, cfg.replication.password):
                server.execute(sql, args)
            server.execute(flavor.start_replica)
            wanted = str(servers[source.name].value("SELECT @@global.gtid_binlog_pos") or "")
            timeout = max(cfg.failover.catchup_timeout, 60.0)
            if wanted:
                sql, args = flavor.wait_statement(wanted, timeout)
                if int(server.value(sql, args, timeout=timeout + 5) or 0) != 0:
                    raise OrchError(f"{target.name} did not catch up with {source.name} within {timeout:g}s; see orch status")
        out.write(f"  [ok] {i}. {step.describe()} ({int((time.monotonic() - started) * 1000)} ms)\n")


# --- the command -------------------------------------------------------------------------------


def bootstrap(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from .. import logs
    from ..db import open_servers
    from ..flavors import get as flavor_get
    from ..observe import observe
    from . import doctor as d
    from ..journal import Journal
    from ..lock import RunLock
    from .common import confirmed, ensure_state_dir, journal_append, load_config, new_run

    cfg = load_config(args)
    servers = open_servers(cfg, read_timeout=10.0)
    try:
        view = observe(cfg, servers)
        for n in (view.me, view.peer):
            if not n.reachable:
                raise Refused(f"orch bootstrap: {n.name} is not reachable ({n.error}): nothing changed")
            if n.flavor != "mariadb":
                raise Refused(f"orch bootstrap: {n.name} runs MySQL; bootstrap is implemented for MariaDB only "
                              "(seed with mysqldump --single-transaction --set-gtid-purged=ON, see README): nothing changed")
        facts = {n.name: d.gather_server(servers[n.name], n, cfg) for n in (view.me, view.peer)}
        blocking = [c for f in facts.values() if f.reachable for c in d.check_binlog(f)
                    if c.status == d.FAIL and not c.name.endswith("binlog_row_image")]
        if blocking:
            raise Refused("orch bootstrap: " + "; ".join(f"{c.name}: {c.detail}" for c in blocking) + ": nothing changed")
        repl_host = {view.me.name: getattr(args, "repl_host", None) or view.peer.host,
                     view.peer.name: getattr(args, "repl_host", None) or view.me.host}
        sides = {n.name: read_side(servers[n.name], n, cfg.replication.user, repl_host[n.name]) for n in (view.me, view.peer)}
        replicating = next((n.name for n, other in ((view.me, view.peer), (view.peer, view.me))
                            if n.replicates_from(other.host, other.port)), None)
        flavor = flavor_get(view.me.flavor, view.me.version)
        errant = {view.me.name: flavor.errant(view.me, view.peer), view.peer.name: flavor.errant(view.peer, view.me)}
        plan = decide_bootstrap(sides[view.me.name], sides[view.peer.name], replicating, errant, cfg.replication.user, repl_host)
        out.write(plan.render() + "\n")
        if plan.refused:
            log.error("bootstrap refused: %s", plan.reason)
            return 1
        if getattr(args, "dry_run", False):
            out.write("dry run: nothing changed\n")
            return 0
        if plan.steps and not confirmed(out, stdin, args.yes):
            return 1
        if plan.steps:
            ensure_state_dir(cfg)
            run_id = new_run(cfg)
            journal = Journal(cfg.state_dir)
            base = {"id": run_id, "node": cfg.self_name, "event": "BOOTSTRAP"}
            journal_append(journal, {**base, "phase": "begin", "reason": plan.reason, "outcome": "act",
                                     "plan": [s.describe() for s in plan.steps]})
            started = time.monotonic()
            error = ""
            try:
                # No other orch run on this host meanwhile (a maintainer must not "rejoin" the
                # fenced, not yet seeded server).
                with RunLock(cfg.state_dir, cfg.failover.lock_timeout):
                    execute(cfg, plan, servers, sides, repl_host, out)
            except OrchError as exc:
                error = str(exc)
                raise OrchError(f"orch bootstrap stopped: {exc}") from None
            finally:
                journal_append(journal, {**base, "phase": "end", "result": "failed" if error else "act", "exit": 1 if error else 0,
                                         "ms": int((time.monotonic() - started) * 1000), "error": error})
            if any(s.action == "auto_increment" for s in plan.steps):
                out.write("note: put auto_increment_increment=2 and each server's auto_increment_offset in its my.cnf\n")
        # Verify: orch doctor's checks on what is there now.
        for s in servers.values():
            s.close()
        view = observe(cfg, servers)
        facts = {n.name: d.gather_server(servers[n.name], n, cfg) for n in (view.me, view.peer)}
        checks = d.run_checks(cfg, view, facts, None)
        checks = [d.Check(c.name, c.status, logs.redact(c.detail, cfg.secrets), logs.redact(c.fix, cfg.secrets)) for c in checks]
        out.write(d.render_table(checks, cfg) + "\n")
        return d.exit_code(checks)
    finally:
        for s in servers.values():
            s.close()
