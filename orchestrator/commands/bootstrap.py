"""orch bootstrap: a server with data and an empty server -> the pair of the reference design.

Observe both, decide (pure: which server is the source, what is missing, or why not),
print the plan, then act: the replication account on both (the config's password, as a
bound parameter), distinct auto_increment settings, the empty server fenced, seeded
from a consistent dump of the source's user schemas, made a GTID replica of the source,
caught up, and checked with orch doctor's checks. A second run finds the pair made and
changes nothing.

MariaDB: mariadb-dump --single-transaction --gtid, loaded with the binary log off so that
it adds no GTIDs of its own; then RESET MASTER, gtid_binlog_state and gtid_slave_pos set
to the dump's position, CHANGE MASTER ... MASTER_USE_GTID = slave_pos.

MySQL (8.0.23 and later, 8.4), decided as a careful DBA would do it by hand:

- Both servers MySQL 8.0.23 or later (CHANGE REPLICATION SOURCE TO), with gtid_mode=ON and
  enforce_gtid_consistency=ON (doctor's binary log checks); refused otherwise.
- The empty server: every GTID it has must be the source's too (GTID_SUBTRACT(empty,
  source) is empty), else refused: they are its own transactions, and a seed would bury
  them. It must hold no user data: no table or view, stored routine or event outside the
  system schemas (the dump's DROP ... IF EXISTS would replace same-named objects); an
  empty schema is allowed (the dump creates schemas IF NOT EXISTS). Nor may it replicate
  from a third server. Refused otherwise, whatever its GTIDs.
- Only then, and only when its gtid_executed is not empty, its GTID history is reset
  (RESET MASTER; from 8.2, and on 8.4, RESET BINARY LOGS AND GTIDS): the dump's
  SET @@GLOBAL.GTID_PURGED needs an empty gtid_executed, and what is forgotten is history
  the source has and the dump brings back. Its GTIDs are read again right before: any
  that appeared since the check stop the run, nothing reset.
- The seed: mysqldump --single-transaction --set-gtid-purged=ON --source-data=2
  --triggers --routines --events --hex-blob --databases <user schemas> (--source-data
  takes the short global read lock that makes the GTID set match the snapshot on every
  8.0 mysqldump, with FLUSH LOCAL TABLES, which adds no GTID), loaded with the mysql
  client with sql_log_bin=0 (the dump turns it off too). Its gtid_executed must then be
  exactly the dump's GTID set, or replication is not started. With no user schema on the
  source, gtid_purged is set to the source's gtid_executed instead. Accounts and the rest
  of the mysql schema are not copied (accounts are per server here), yet their GTIDs are
  in the set (mysqldump's "partial dump" warning): create application accounts on both.
- super_read_only stops even an administrator: it is off while a server takes
  bootstrap's own writes (CREATE USER, the reset, the load; read_only stays on), back on
  after when it was on, and switched on on the replica at the end.
- CHANGE REPLICATION SOURCE TO ... SOURCE_AUTO_POSITION = 1 (the password a bound
  parameter), START REPLICA, WAIT_FOR_EXECUTED_GTID_SET up to the source's gtid_executed.
- Credentials reach mysqldump and mysql only in a 0600 option file (--defaults-file),
  TLS spelled as MySQL 8 clients want it (ssl-mode). Binaries: ORCH_MYSQL_DUMP
  (mysqldump 8.0.26 or later, for --source-data) and ORCH_MYSQL_CLIENT.
- Tested at the statement level only (tests/test_bootstrap_mysql.py: a recording stand-in
  for the server and stand-in clients): no MySQL server runs in CI.

Refused, with nothing changed: a server unreachable, the two of different flavors, the
"empty" server holding user data or GTIDs the source lacks or replicating from a third
server, both servers holding data without replicating, a server setting replication
cannot work without (doctor's binary log checks).

It needs an account with more than orch's everyday grants (CREATE USER, the dump's
SELECT/SHOW VIEW/TRIGGER/EVENT/LOCK TABLES/RELOAD, on MySQL REPLICATION CLIENT too,
loading the data, the GTID reset): run
it once with an administrator in ``mysql:`` (a copy of orch.yaml), then go back to the
orch account.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

from ..clientfile import OptionFile, client_options, option_value, run_client
from ..config import Account, Config
from ..db import Server
from ..errors import EXIT_FAILED, EXIT_OK, CommandError, OrchError, Refused
from ..flavors import Flavor
from ..flavors.common import version_tuple
from ..model import NodeState
from .doctor import release_series_mismatch

log = logging.getLogger("orchestrator.bootstrap")

SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
DUMP = os.environ.get("ORCH_MARIADB_DUMP", "mariadb-dump")
CLIENT = os.environ.get("ORCH_MARIADB_CLIENT", "mariadb")
MYSQL_DUMP = os.environ.get("ORCH_MYSQL_DUMP", "mysqldump")
MYSQL_CLIENT = os.environ.get("ORCH_MYSQL_CLIENT", "mysql")
DUMP_TIMEOUT = 3600.0  # seconds: a logical dump is for small data sets (docs/cli.md: mariabackup for large ones)
SEED_GTID = re.compile(r"^-- SET GLOBAL gtid_slave_pos='([0-9,\-]*)';$", re.M)
# mysqldump 8.0 adds to gtid_purged ('+'); older ones set it. A set of several UUIDs spans lines.
MYSQL_SEED_GTID = re.compile(r"SET @@GLOBAL\.GTID_PURGED=(?:/\*!80000 '\+'\*/ ?)?'([^']*)';")
RUNNING_POLL = 0.1  # seconds between looks at a started replica's threads
MYSQL_SEED_GTID_MAX = 1 << 20  # characters: a statement longer than this is not a GTID set


# --- facts and the pure decision -------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One server as bootstrap sees it."""

    name: str
    host: str
    port: int
    tables: int  # tables and views outside the system schemas
    schemas: Tuple[str, ...]  # schemas outside the system schemas
    binlog_pos: str  # MariaDB gtid_binlog_pos, MySQL gtid_executed
    writable: bool
    repl_account: bool  # the replication account exists for the peer's address
    increment: int
    offset: int
    routines: int = 0  # stored routines and events outside the system schemas
    super_read_only: Optional[bool] = None  # None: the flavor has no such switch (read_only alone fences)
    version: str = ""
    flavor: str = "mariadb"
    replica_source: str = ""  # host:port it is configured to replicate from ("" none)

    @property
    def holds_data(self) -> bool:
        return bool(self.tables or self.routines)


@dataclass(frozen=True)
class Step:
    action: str  # account | auto_increment | fence | seed | replicate | super_read_only
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
    warnings: Tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        return "refused" if self.refused else ("act" if self.steps else "noop")

    def as_dict(self) -> Dict[str, Any]:
        """The plan as ``--dry-run --format json`` prints it, with every plan's keys (docs/cli.md);
        a step's type is its action (account -> Account, auto_increment -> AutoIncrement...)."""
        return {"reason": self.reason, "outcome": self.outcome, "exit_code": EXIT_FAILED if self.refused else EXIT_OK,
                "warnings": list(self.warnings),
                "steps": [{"step": s.action.title().replace("_", ""), "description": s.describe()} for s in self.steps]}

    def render(self) -> str:
        lines = [("refused: " if self.refused else "plan: ") + self.reason]
        lines += [f"  {i}. {s.describe()}" for i, s in enumerate(self.steps, 1)]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def unsupported(me: NodeState, peer: NodeState) -> str:
    """Why bootstrap cannot make a pair of these two servers ("" when it can)."""
    if me.flavor != peer.flavor:
        return f"{me.name} runs {me.flavor} {me.version} and {peer.name} {peer.flavor} {peer.version}: a pair is of one flavor"
    seeding = SEEDINGS[me.flavor]
    for n in (me, peer):
        if version_tuple(n.version) < seeding.minimum:
            wanted = ".".join(str(p) for p in seeding.minimum)
            return f"{n.name} runs {seeding.label} {n.version}: bootstrap needs {wanted} or later ({seeding.why_minimum})"
    return ""


def _lifted(side: Side) -> str:
    return " (super_read_only off meanwhile, read_only stays on)" if side.super_read_only else ""


def decide_bootstrap(a: Side, b: Side, replicating: Optional[str], errant: Mapping[str, str], repl_user: str,
                     repl_host: Mapping[str, str]) -> BootstrapPlan:
    """What turns a and b into a source and its read-only GTID replica.

    ``replicating``: the name of the server already replicating from the other, if one is.
    ``errant``: per server, the GTIDs it has that the other lacks. ``repl_host``: per
    server, the host part of the replication account to create there (the peer's address).
    User data is a table, view, stored routine or event outside the system schemas.
    """
    pair = {a.name: a, b.name: b}
    if replicating is not None:
        target = pair[replicating]
        source = b if target is a else a
    elif a.holds_data and b.holds_data:
        return BootstrapPlan(f"both {a.name} and {b.name} hold tables, views, routines or events and neither replicates "
                             "from the other: bootstrap seeds only an empty server", refused=True)
    elif a.holds_data or b.holds_data:
        source = a if a.holds_data else b
        target = b if source is a else a
    else:
        # No user data anywhere: the server with a binary log history (or the writable one) leads.
        source = a if (a.binlog_pos and not b.binlog_pos) or (a.writable and not b.writable) else (b if b.binlog_pos or b.writable else a)
        target = b if source is a else a
    seeded = replicating is not None
    if not seeded and errant.get(target.name):
        return BootstrapPlan(f"{target.name} has transactions {source.name} lacks ({errant[target.name]}): "
                             "it is not empty; bootstrap never overwrites it (if they are only its own set-up, such as "
                             "accounts, clear its GTID history there by hand and run bootstrap again)",
                             source.name, target.name, refused=True)
    if not seeded and target.replica_source:
        return BootstrapPlan(f"{target.name} replicates from {target.replica_source}, not from {source.name}: "
                             "it is not an empty server; bootstrap never re-points it", source.name, target.name, refused=True)
    steps: List[Step] = []
    for side in (source, target):
        if not side.repl_account:
            steps.append(Step("account", side.name, f"create the replication account {repl_user}@{repl_host[side.name]} "
                                                    "with REPLICATION SLAVE (replication.password; not binlogged)" + _lifted(side)))
    if not (source.increment >= 2 and target.increment >= 2 and source.offset != target.offset):
        steps.append(Step("auto_increment", source.name, "SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 1"))
        steps.append(Step("auto_increment", target.name, "SET GLOBAL auto_increment_increment = 2, auto_increment_offset = 2"))
    if not seeded:
        if target.writable:
            steps.append(Step("fence", target.name, "set read_only on (it becomes the replica)"))
        steps.append(Step("seed", target.name, SEEDINGS[target.flavor].describe(source, target) + _lifted(target)))
        steps.append(Step("replicate", target.name, f"replicate from {source.name} with GTID auto-positioning and wait until caught up"))
    if target.super_read_only is False:
        steps.append(Step("super_read_only", target.name, "set super_read_only on: not even an administrator writes on the replica"))
    if not seeded:
        reason = f"{source.name} has the data; {target.name} is empty: seed it and make it {source.name}'s replica"
    elif steps:
        reason = f"{target.name} already replicates from {source.name}: completing the accounts and settings"
    else:
        reason = f"{target.name} already replicates from {source.name}: nothing to do"
    warnings: Tuple[str, ...] = ()
    series = release_series_mismatch(source, target)
    if series:
        # Not refused: seeding a replica of the newer series is a rolling upgrade's first step.
        warnings = (f"{series}: fine as a step of an upgrade; until both run one series, a failover may leave "
                    "the old master unable to replicate from the new one",)
    return BootstrapPlan(reason, source.name, target.name, tuple(steps), warnings=warnings)


def _before_first_master(check: Any, source: str) -> Any:
    """Bootstrap runs before keepalived (docs/install.md), so no server is writable yet: not a failure here."""
    from . import doctor as d

    if check.name == "roles" and check.status == d.FAIL and check.detail.startswith("no server is writable"):
        return d.Check(check.name, d.WARN, f"no server is writable yet: keepalived's first MASTER event (or orch promote) "
                                           f"opens {source}", check.fix)
    return check


def describe_mariadb_seed(source: Side, target: Side) -> str:
    what = ", ".join(source.schemas) or "no user schemas"
    return (f"load a consistent dump of {source.name} ({what}) with the binary log off; "
            f"reset its binary log to start at the dump's GTID position")


def describe_mysql_seed(source: Side, target: Side) -> str:
    from .. import flavors

    parts = []
    if target.binlog_pos:
        reset = flavors.get("mysql", target.version).reset_binary_logs
        parts.append(f"{reset}: forget its GTIDs ({target.binlog_pos}), all of them {source.name}'s too, with no user data here")
    if source.schemas:
        parts.append(f"load mysqldump --single-transaction --set-gtid-purged=ON of {source.name} ({', '.join(source.schemas)}) "
                     "with the binary log off: its gtid_executed becomes the dump's")
    else:
        parts.append(f"no user schema to copy: set its gtid_purged to {source.name}'s gtid_executed")
    return "; ".join(parts)


def dump_gtid_set(lines: Iterable[str]) -> str:
    """The GTID set of a mysqldump's one SET @@GLOBAL.GTID_PURGED statement, normalized.

    CommandError when there is none (the dump was taken without --set-gtid-purged=ON) or
    more than one."""
    from ..gtid import GtidError, GtidSet

    found: List[str] = []
    statement = ""
    for line in lines:
        if statement or line.startswith("SET @@GLOBAL.GTID_PURGED="):
            statement += line
            if len(statement) > MYSQL_SEED_GTID_MAX:
                raise CommandError(f"{MYSQL_DUMP}: the dump's GTID_PURGED statement does not end")
            if statement.rstrip().endswith("';"):
                m = MYSQL_SEED_GTID.fullmatch(statement.strip())
                if not m:
                    raise CommandError(f"{MYSQL_DUMP}: unreadable GTID_PURGED statement in the dump")
                found.append(m.group(1))
                statement = ""
    if len(found) != 1:
        raise CommandError(f"{MYSQL_DUMP}: {len(found)} GTID_PURGED statements in the dump, not one (taken without --set-gtid-purged=ON?)")
    try:
        return str(GtidSet.parse(found[0]))
    except GtidError as exc:
        raise CommandError(f"{MYSQL_DUMP}: the dump's GTID set: {exc}") from None


def mysql_client_options(account: Account, host: str, port: int) -> str:
    """The [client] group for mysqldump and mysql: the account and address, then TLS as MySQL 8
    clients spell it (ssl-mode; they no longer know --ssl, --skip-ssl or --ssl-verify-server-cert)."""
    text = client_options(account.user, account.password, "preferred", "", host, port)
    if account.tls == "required":
        lines = [f"ssl-ca={option_value(account.tls_ca)}", "ssl-mode=VERIFY_IDENTITY"] if account.tls_ca else ["ssl-mode=REQUIRED"]
    elif account.tls == "disabled":
        lines = ["ssl-mode=DISABLED"]
    else:
        lines = []  # PREFERRED, the clients' default
    return text + "".join(f"{line}\n" for line in lines)


# --- gathering ---------------------------------------------------------------------------------


def read_side(server: Server, node: NodeState, repl_user: str, repl_host: str) -> Side:
    from .. import flavors

    placeholders = ", ".join(["%s"] * len(SYSTEM_SCHEMAS))
    schemas = tuple(sorted(str(r["name"]) for r in server.query(
        f"SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({placeholders})", SYSTEM_SCHEMAS)))
    tables = int(server.value(
        f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN ({placeholders})", SYSTEM_SCHEMAS) or 0)
    routines = int(server.value(
        f"SELECT (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA NOT IN ({placeholders})) + "
        f"(SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA NOT IN ({placeholders})) AS n",
        SYSTEM_SCHEMAS + SYSTEM_SCHEMAS) or 0)
    account = int(server.value("SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = %s", (repl_user, repl_host)) or 0)
    inc = server.query("SELECT @@global.auto_increment_increment AS step, @@global.auto_increment_offset AS start")[0]
    flavor = flavors.get(node.flavor, node.version)
    # A flavor read_only alone fences has no super_read_only to speak of.
    sro = None if flavor.is_fenced(replace(node, read_only=True, super_read_only=False)) else node.super_read_only
    r = node.replica
    source = f"{r.source_host}:{r.source_port}" if r is not None and r.configured else ""
    return Side(node.name, node.host, node.port, tables, schemas, node.binlog_pos, node.writable, account > 0,
                int(inc["step"]), int(inc["start"]), routines, sro, node.version, flavor.name, source)


# --- acting ------------------------------------------------------------------------------------


def _run(argv: Sequence[str], stdin: object = None, stdout: object = None) -> str:
    """A client subprocess (argv list, no shell, no secrets in argv); CommandError on failure."""
    started = time.monotonic()
    run_client(argv, argv[0], DUMP_TIMEOUT, stdin=stdin, stdout=stdout)
    return f"{time.monotonic() - started:.1f}s"


def dump_and_load(source: Side, target: Side, work_dir: str, options: Callable[[Side], str], dump: Sequence[str],
                  load: Sequence[str], position_of: Callable[[str], str]) -> str:
    """Dump the source's user schemas into a 0600 file, read the dump's GTID position, load
    it into the target; return the position. ``dump``/``load``: binary, then options (the
    option file with the credentials goes first, as the clients require)."""
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    dump_path = os.path.join(work_dir, f"seed-{time.strftime('%Y%m%dT%H%M%S')}.sql")
    try:
        with OptionFile(options(source), "orch-bootstrap-") as src:
            argv = [dump[0], f"--defaults-file={src.path}", *dump[1:], "--databases", *source.schemas]
            fd = os.open(dump_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                took = _run(argv, stdout=out)
        position = position_of(dump_path)
        log.info("bootstrap: dumped %s from %s at GTID %s in %s", ", ".join(source.schemas), source.name, position or "(empty)", took)
        with OptionFile(options(target), "orch-bootstrap-") as dst, open(dump_path, "rb") as fh:
            took = _run([load[0], f"--defaults-file={dst.path}", *load[1:]], stdin=fh)
        log.info("bootstrap: loaded the dump into %s in %s", target.name, took)
        return position
    finally:
        try:
            os.unlink(dump_path)
        except OSError:
            pass


def _mariadb_position(path: str) -> str:
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024).decode("utf-8", "replace")
    found = SEED_GTID.findall(head)
    if not found:
        raise CommandError(f"{DUMP}: no GTID position in the dump (is the binary log on?)")
    return found[-1]


def _mysql_position(path: str) -> str:
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        return dump_gtid_set(fh)


def seed_mariadb(cfg: Config, source: Side, target: Side, source_server: Server, server: Server, flavor: Flavor) -> None:
    """mariadb-dump of the source's user schemas, loaded with the binary log off; the target's
    binary log then starts at the dump's GTID position."""
    if source.schemas:
        position = dump_and_load(
            source, target, os.path.join(cfg.state_dir, "bootstrap"),
            lambda side: client_options(cfg.mysql.user, cfg.mysql.password, cfg.mysql.tls, cfg.mysql.tls_ca, side.host, side.port),
            [DUMP, "--single-transaction", "--gtid", "--master-data=2", "--routines", "--events", "--triggers", "--hex-blob"],
            # The binary log off: the loaded rows are the source's transactions, not new ones of the target.
            [CLIENT, "--binary-mode", "--init-command=SET SESSION sql_log_bin = 0"],
            _mariadb_position)
    else:
        position = str(source_server.value("SELECT @@global.gtid_binlog_pos") or "")
    # The target's binary log must know the seeded history too: as a master after a
    # failover it serves the old master from there, and orch's errant-GTID check
    # compares against it. Its own binary log held nothing the source lacks (checked).
    server.execute(flavor.reset_binary_logs, why="the empty server's binary log starts at the seed")
    server.execute("SET GLOBAL gtid_binlog_state = %s", (position,), why="the seeded history")
    server.execute("SET GLOBAL gtid_slave_pos = %s", (position,), why="where the dump was taken")
    # The load added nothing to the target's binary log: its position is the dump's.
    current = str(server.value("SELECT @@global.gtid_current_pos") or "")
    if current != position:
        raise OrchError(f"{target.name}: gtid_current_pos is {current!r} after the load, not the dump's {position!r}: "
                        "replication not started")


def seed_mysql(cfg: Config, source: Side, target: Side, source_server: Server, server: Server, flavor: Flavor) -> None:
    """The target's GTID history reset (when it has one), then mysqldump of the source's user
    schemas loaded with the binary log off: its gtid_executed becomes the dump's GTID set."""
    from ..gtid import GtidSet

    if target.binlog_pos:
        # All of it is the source's too (the errant check) and the server holds no user data
        # (the decision): the dump's SET @@GLOBAL.GTID_PURGED needs an empty gtid_executed.
        # Irreversible: only on the GTIDs that were checked (a write since would show there).
        now = str(server.value("SELECT @@global.gtid_executed") or "")
        if GtidSet.parse(now) != GtidSet.parse(target.binlog_pos):
            raise OrchError(f"{target.name}: its GTIDs changed since they were checked ({target.binlog_pos!r}, now "
                            f"{now.replace(chr(10), '')!r}): nothing reset, replication not started")
        server.execute(flavor.reset_binary_logs, why="the empty server's GTID history, all of it the source's too, "
                                                      "makes way for the seed's")
    if source.schemas:
        position = dump_and_load(
            source, target, os.path.join(cfg.state_dir, "bootstrap"),
            lambda side: mysql_client_options(cfg.mysql, side.host, side.port),
            # --source-data=2: a short global read lock makes the GTID set that of the snapshot
            # on every 8.0 mysqldump (FLUSH LOCAL TABLES: no GTID of its own); the
            # replication coordinates it writes stay a comment.
            [MYSQL_DUMP, "--single-transaction", "--set-gtid-purged=ON", "--source-data=2", "--triggers", "--routines",
             "--events", "--hex-blob"],
            # The dump turns the binary log off itself; this holds for a dump that does not.
            [MYSQL_CLIENT, "--binary-mode", "--init-command=SET SESSION sql_log_bin = 0"],
            _mysql_position)
    else:
        position = str(GtidSet.parse(str(source_server.value("SELECT @@global.gtid_executed") or "")))
        if position:
            server.execute("SET GLOBAL gtid_purged = %s", (position,), why="the source's history: no user schema to copy")
    current = str(server.value("SELECT @@global.gtid_executed") or "")
    if GtidSet.parse(current) != GtidSet.parse(position):
        raise OrchError(f"{target.name}: gtid_executed is {current!r} after the seed, not the dump's {position!r}: "
                        "replication not started")


@dataclass(frozen=True)
class Seeding:
    """How bootstrap seeds one flavor's empty server (chosen by the flavor's name: data, not ifs)."""

    label: str
    minimum: Tuple[int, ...]  # server version
    why_minimum: str
    describe: Callable[[Side, Side], str]  # the plan's seed step, pure
    seed: Callable[[Config, Side, Side, Any, Any, Any], None]  # the effects


SEEDINGS = {
    "mariadb": Seeding("MariaDB", (), "", describe_mariadb_seed, seed_mariadb),
    "mysql": Seeding("MySQL", (8, 0, 23), "CHANGE REPLICATION SOURCE TO", describe_mysql_seed, seed_mysql),
}


def wait_running(server: Server, flavor_name: str, name: str, timeout: float) -> None:
    """Until both replication threads run. A replica seeded at the source's position passes
    the GTID wait at once, before its IO thread has even connected."""
    from ..model import ThreadState
    from ..observe import read_node

    deadline = time.monotonic() + timeout
    while True:
        r = read_node(server, flavor_name).replica
        if r is not None and r.running:
            return
        if r is not None and r.sql is ThreadState.STOPPED and r.last_sql_error:
            raise OrchError(f"{name}: the replication SQL thread stopped: {r.last_sql_error}")
        if time.monotonic() >= deadline:
            seen = "not configured" if r is None else (f"IO thread {r.io.value}, SQL thread {r.sql.value}: "
                                                      f"{r.last_io_error or r.last_sql_error or 'no error reported'}")
            raise OrchError(f"{name}: replication not running after {timeout:g}s ({seen}); see orch status")
        time.sleep(RUNNING_POLL)


@contextmanager
def admin_writes(server: Server, side: Side) -> Iterator[None]:
    """super_read_only off around bootstrap's own writes (it refuses even an administrator's),
    and back on after; read_only stays on throughout."""
    if not side.super_read_only:
        yield
        return
    server.execute("SET GLOBAL super_read_only = 0", why="it refuses even an administrator's writes; read_only stays on")
    try:
        yield
    except BaseException:
        try:
            server.execute("SET GLOBAL super_read_only = 1", why="as it was")
        except OrchError as exc:
            log.error("bootstrap: %s: super_read_only could not be switched back on: %s", side.name, exc)
        raise
    server.execute("SET GLOBAL super_read_only = 1", why="as it was")


def execute(cfg: Config, plan: BootstrapPlan, servers: Mapping[str, Server], sides: Mapping[str, Side],
            repl_host: Mapping[str, str], out: TextIO) -> None:
    from .. import flavors

    source, target = sides[plan.source], sides[plan.target]
    for i, step in enumerate(plan.steps, 1):
        server, side = servers[step.node], sides[step.node]
        flavor = flavors.get(cfg.flavor, side.version)
        started = time.monotonic()
        if step.action == "account":
            with admin_writes(server, side):
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
            with admin_writes(server, side):
                SEEDINGS[side.flavor].seed(cfg, source, target, servers[source.name], server, flavor)
        elif step.action == "replicate":
            server.execute(flavor.stop_replica)
            for sql, args in flavor.change_source(source.host, source.port, cfg.replication.user, cfg.replication.password):
                server.execute(sql, args)
            server.execute(flavor.start_replica)
            timeout = max(cfg.failover.catchup_timeout, 60.0)
            wait_running(server, cfg.flavor, target.name, timeout)
            wanted = str(servers[source.name].query(flavor.gtid_query)[0].get("binlog_pos") or "").replace("\n", "")
            if wanted:
                sql, args = flavor.wait_statement(wanted, timeout)
                if int(server.value(sql, args, timeout=timeout + 5) or 0) != 0:
                    raise OrchError(f"{target.name} did not catch up with {source.name} within {timeout:g}s; see orch status")
        elif step.action == "super_read_only":
            server.execute("SET GLOBAL super_read_only = 1", why="the replica: not even an administrator writes there")
        else:
            raise AssertionError(f"unknown bootstrap step {step.action!r}")
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
    from .common import confirmed, ensure_state_dir, journal_append, json_needs_dry_run, load_config, new_run, show_plan

    json_needs_dry_run(args, "bootstrap")
    cfg = load_config(args)
    servers = open_servers(cfg, read_timeout=10.0)
    try:
        view = observe(cfg, servers, pause=False)  # a seed needs no maintenance record
        for n in (view.me, view.peer):
            if not n.reachable:
                raise Refused(f"orch bootstrap: {n.name} is not reachable ({n.error}): nothing changed")
        why = unsupported(view.me, view.peer)
        if why:
            raise Refused(f"orch bootstrap: {why}: nothing changed")
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
        for warning in plan.warnings:
            log.warning("bootstrap: %s", warning)
        if plan.refused:
            log.error("bootstrap refused: %s", plan.reason)
        if getattr(args, "dry_run", False):
            show_plan(out, plan, args, "bootstrap", cfg.self_name)  # text, or --format json
            return EXIT_FAILED if plan.refused else EXIT_OK
        out.write(plan.render() + "\n")
        if plan.refused:
            return EXIT_FAILED
        if plan.steps and not confirmed(out, stdin, args.yes):
            return EXIT_FAILED
        if plan.steps:
            ensure_state_dir(cfg)
            run_id = new_run(cfg)
            journal = Journal(cfg.state_dir)
            base = {"id": run_id, "node": cfg.self_name, "event": "BOOTSTRAP"}
            journal_append(journal, {**base, "phase": "begin", "reason": plan.reason, "outcome": "act",
                                     "warnings": list(plan.warnings), "plan": [s.describe() for s in plan.steps]})
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
        view = observe(cfg, servers, pause=False)  # a seed needs no maintenance record
        facts = {n.name: d.gather_server(servers[n.name], n, cfg) for n in (view.me, view.peer)}
        checks = [_before_first_master(c, plan.source) for c in d.run_checks(cfg, view, facts, None)]
        checks = [d.Check(c.name, c.status, logs.redact(c.detail, cfg.secrets), logs.redact(c.fix, cfg.secrets)) for c in checks]
        out.write(d.render_table(checks, cfg) + "\n")
        return d.exit_code(checks)
    finally:
        for s in servers.values():
            s.close()
