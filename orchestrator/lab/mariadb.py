"""Throwaway `mariadbd` instances for tests, benchmarks and the local sandbox.

Each instance lives in its own directory (``basedir``): ``my.cnf``, the unix socket,
the PID file, the error log and ``data/``.  The server is started with
``--defaults-file`` pointing at that ``my.cnf`` only, detached in its own session, and
every signal we send goes to the PID we started, never to a process found by name.

``make_pair`` builds the topology the orchestrator manages: ``server1`` writable
master and ``server2`` read-only GTID replica, both with the ``orch`` and ``repl``
accounts and a ``test`` database.  Creating a datadir with ``mariadb-install-db``
takes most of a second, so callers that need many instances make one template with
``create_template`` and let ``initialize(template=...)`` copy it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pymysql.converters
import pymysql.cursors

from orchestrator.errors import CommandError, DatabaseError
from orchestrator.lab.proc import background, run

log = logging.getLogger(__name__)

MARIADBD = os.environ.get("ORCH_LAB_MARIADBD", "/usr/sbin/mariadbd")
INSTALL_DB = os.environ.get("ORCH_LAB_INSTALL_DB", "/usr/bin/mariadb-install-db")


@dataclass(frozen=True)
class Credentials:
    """A MariaDB account name and password."""

    user: str
    password: str


# Fixed dummy credentials of the lab servers; never use them outside tests.
ROOT_USER = "root"
ROOT_PASSWORD = ""  # root@localhost has no password and is reachable only over the socket
ROOT_CREDENTIALS = Credentials(ROOT_USER, ROOT_PASSWORD)
ORCH_CREDENTIALS = Credentials("orch", "orch-secret-pw")
REPL_CREDENTIALS = Credentials("repl", "repl-secret-pw")

# Shared by mariadb-install-db and my.cnf so a copied template never needs resizing.
INNODB_SIZES = {"innodb_buffer_pool_size": "32M", "innodb_log_file_size": "8M"}

# Trade durability against OS crashes for speed; a killed process (SIGKILL) still
# loses nothing because the log and binlog are written to the OS at every commit.
FAST_OPTIONS = {
    "innodb_flush_log_at_trx_commit": "2",
    "sync_binlog": "0",
    "innodb_doublewrite": "OFF",
}

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; leave headroom
_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 15


def _literal(value: str) -> str:
    """A quoted SQL string literal (the bootstrap file cannot take parameters)."""
    return "'" + pymysql.converters.escape_string(value) + "'"


def _template_sql() -> str:
    """SQL run at the end of the bootstrap, so every copy of a template has the accounts.

    root stays only as root@localhost (socket), so every TCP login in a test goes
    through an account the test means to use.  With skip_name_resolve, '%' covers
    every TCP client and 'localhost' is the unix socket.
    """
    orch, repl = ORCH_CREDENTIALS, REPL_CREDENTIALS
    statements = [
        "DELETE FROM mysql.global_priv WHERE user = 'root' AND host <> 'localhost'",
        "DELETE FROM mysql.proxies_priv WHERE host <> 'localhost'",
        "DELETE FROM mysql.global_priv WHERE user = ''",
        "FLUSH PRIVILEGES",  # enables account statements inside the bootstrap
    ]
    for host in ("%", "localhost"):
        account = f"{_literal(orch.user)}@{_literal(host)}"
        statements += [
            f"CREATE USER {account} IDENTIFIED BY {_literal(orch.password)}",
            f"GRANT ALL ON *.* TO {account} WITH GRANT OPTION",
        ]
    account = f"{_literal(repl.user)}@{_literal('%')}"
    statements += [
        f"CREATE USER {account} IDENTIFIED BY {_literal(repl.password)}",
        f"GRANT REPLICATION SLAVE ON *.* TO {account}",
        "CREATE DATABASE test",
    ]
    return "".join(f"{statement};\n" for statement in statements)


def create_template(datadir: str, timeout: float = 120) -> str:
    """Create a fresh datadir at ``datadir`` with mariadb-install-db and return its path.

    The result can be passed as ``template`` to ``MariaDBInstance.initialize`` or
    ``make_pair``; copying it is much faster than running the installer again.
    """
    target = Path(datadir).absolute()
    if (target / "mysql").is_dir():
        log.debug("datadir %s already initialized", target)
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A starting mariadbd deletes every #sql* file in its tmpdir: never share /tmp with
    # servers started by others (their temporary tables vanish).
    tmpdir = target.parent / f"{target.name}-tmp"
    tmpdir.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="lab-template-") as sql:
        sql.write(_template_sql())
        sql.flush()
        argv = [
            INSTALL_DB,
            "--no-defaults",
            f"--datadir={target}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            f"--extra-file={sql.name}",
            f"--tmpdir={tmpdir}",
            *(f"--{name}={value}" for name, value in INNODB_SIZES.items()),
        ]
        if os.geteuid() == 0:
            argv.append("--user=root")
        started = time.monotonic()
        run(argv, timeout=timeout)
    log.info("created MariaDB datadir %s in %.2fs", target, time.monotonic() - started)
    return str(target)


class MariaDBInstance:
    """One throwaway mariadbd: its files under ``basedir`` and the process we started."""

    def __init__(
        self,
        name: str,
        basedir: str,
        port: int,
        server_id: int,
        host: str = "127.0.0.1",
        netns: str | None = None,
        extra_options: Mapping[str, str | None] | None = None,
        durable: bool = False,
    ) -> None:
        """Describe an instance; nothing is created until ``initialize``/``start``.

        ``extra_options`` override the generated my.cnf options; a value of None
        removes an option.  ``durable=True`` keeps the server's default flushing
        (for benchmarks) instead of ``FAST_OPTIONS``.
        """
        self.name = name
        self.basedir = str(Path(basedir).absolute())
        self.host = host
        self.port = port
        self.server_id = server_id
        self.netns = netns
        self.extra_options = dict(extra_options or {})
        self.durable = durable
        base = Path(self.basedir)
        self.datadir = str(base / "data")
        self.socket = str(base / "mariadbd.sock")
        self.pid_file = str(base / "mariadbd.pid")
        self.log_file = str(base / "error.log")
        self.tmpdir = str(base / "tmp")
        self.config_file = str(base / "my.cnf")
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._launched_at = 0.0
        if len(self.socket) >= _MAX_SOCKET_PATH:
            raise ValueError(
                f"{name}: socket path {self.socket!r} is {len(self.socket)} characters; "
                f"use a basedir shorter than {_MAX_SOCKET_PATH - len('/mariadbd.sock')}"
            )

    def __repr__(self) -> str:
        return (
            f"MariaDBInstance({self.name!r}, {self.host}:{self.port}, "
            f"server_id={self.server_id}, pid={self.pid})"
        )

    # -- files ---------------------------------------------------------------

    def is_initialized(self) -> bool:
        """True when the datadir holds system tables."""
        return (Path(self.datadir) / "mysql").is_dir()

    def initialize(self, template: str | None = None) -> None:
        """Create the datadir once: copy ``template`` if given, else run the installer."""
        if self.is_initialized():
            log.debug("%s: datadir %s already initialized", self.name, self.datadir)
            return
        Path(self.basedir).mkdir(parents=True, exist_ok=True)
        Path(self.tmpdir).mkdir(exist_ok=True)
        if template is None:
            create_template(self.datadir)
        else:
            shutil.copytree(template, self.datadir, symlinks=True)
            log.debug("%s: copied template %s", self.name, template)

    def options(self) -> dict[str, str]:
        """The [mariadbd] options written to my.cnf, after ``extra_options``."""
        options = {
            "datadir": self.datadir,
            "socket": self.socket,
            "pid_file": self.pid_file,
            "log_error": self.log_file,
            "tmpdir": self.tmpdir,  # its own: a starting mariadbd deletes every #sql* file in it
            "bind_address": self.host,
            "port": str(self.port),
            "server_id": str(self.server_id),
            "report_host": self.host,
            "report_port": str(self.port),
            "log_bin": f"{self.name}-bin",  # relative names land in the datadir
            "relay_log": f"{self.name}-relay-bin",
            "log_slave_updates": "ON",
            "binlog_format": "ROW",
            "gtid_strict_mode": "ON",
            "gtid_domain_id": "0",
            "skip_name_resolve": "ON",
            "performance_schema": "OFF",
            "innodb_buffer_pool_load_at_startup": "OFF",
            "innodb_buffer_pool_dump_at_shutdown": "OFF",
            "innodb_temp_data_file_path": "ibtmp1:1M:autoextend",
            **INNODB_SIZES,
        }
        if os.geteuid() == 0:
            options["user"] = "root"  # mariadbd refuses to run as root without it
        if not self.durable:
            options.update(FAST_OPTIONS)
        for key, value in self.extra_options.items():
            if value is None:
                options.pop(key, None)
            else:
                options[key] = value
        return options

    def write_config(self) -> None:
        """Write ``my.cnf``; also usable by ``mariadb --defaults-file=<it>``."""
        lines = [f"# {self.name}: rewritten by orchestrator.lab.mariadb on every start"]
        lines.append("[mariadbd]")
        lines += [f"{key}={value}" for key, value in self.options().items()]
        lines += ["", "[client]", f"socket={self.socket}", f"user={ROOT_USER}", ""]
        Path(self.config_file).write_text("\n".join(lines))

    def mariadbd_argv(self) -> list[str]:
        """The command that starts this server, prefixed for its network namespace."""
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, MARIADBD, f"--defaults-file={self.config_file}"]

    def discard(self) -> None:
        """Kill the server if running and delete the datadir; keep my.cnf and the error log."""
        self.kill()
        shutil.rmtree(self.datadir, ignore_errors=True)

    # -- process -------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Start mariadbd detached and wait until it accepts connections on its socket."""
        self.launch()
        self.wait_until_ready(timeout)

    def launch(self) -> None:
        """Start mariadbd detached in its own session without waiting for it."""
        if self.is_running():
            raise CommandError(f"{self.name}: already running as pid {self.pid}")
        if not self.is_initialized():
            raise CommandError(f"{self.name}: datadir {self.datadir} is not initialized")
        Path(self.tmpdir).mkdir(parents=True, exist_ok=True)
        self.write_config()
        self._log_offset = _file_size(self.log_file)
        self._launched_at = time.monotonic()
        self._proc = background(self.mariadbd_argv(), Path(self.basedir) / "mariadbd.out")
        self.pid = self._proc.pid

    def wait_until_ready(self, timeout: float = 30) -> None:
        """Wait until a launched server accepts connections; kill it if it never does."""
        try:
            self._poll_ready(timeout)
        except BaseException:
            self.kill()
            raise
        self._adopt_pid_file()
        log.info(
            "%s: mariadbd pid %d ready on %s:%d in %.2fs",
            self.name, self.pid, self.host, self.port, time.monotonic() - self._launched_at,
        )

    def stop(self, timeout: float = 30) -> None:
        """Shut down cleanly with SIGTERM to our PID and wait for it to exit."""
        if not self.is_running():
            self.pid = None
            return
        assert self.pid is not None
        if self._send(signal.SIGTERM):
            self._send(signal.SIGCONT)  # a paused server must wake up to see SIGTERM
        if not self._wait_exit(timeout):
            raise CommandError(
                f"{self.name}: pid {self.pid} still running {timeout}s after SIGTERM"
            )
        log.info("%s: stopped", self.name)
        self.pid = None

    def kill(self) -> None:
        """SIGKILL our PID and wait until it is gone (a crash, as far as the data knows)."""
        if not self.is_running():
            self.pid = None
            return
        assert self.pid is not None
        self._send(signal.SIGKILL)
        if not self._wait_exit(10):
            raise CommandError(f"{self.name}: pid {self.pid} survived SIGKILL")
        log.info("%s: killed pid %d", self.name, self.pid)
        self.pid = None

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its sockets but answers nothing. Returns once the
        process is stopped (a signal lands when it is next scheduled: on a busy machine it
        could otherwise answer one more query), or after 5 s."""
        self._signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while self.pid is not None and _process_state(self.pid) not in ("T", "Z", None) and time.monotonic() < deadline:
            time.sleep(0.005)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        self._signal(signal.SIGCONT)

    def is_running(self) -> bool:
        """True while our process exists (paused counts as running)."""
        if self.pid is None:
            return False
        if self._proc is not None and self._proc.pid == self.pid:
            return self._proc.poll() is None
        return _pid_alive(self.pid)

    def _signal(self, signum: signal.Signals) -> None:
        if not self.is_running():
            raise CommandError(f"{self.name}: not running, cannot send {signum.name}")
        if not self._send(signum):
            raise CommandError(f"{self.name}: pid {self.pid} vanished before {signum.name}")
        log.info("%s: sent %s to pid %s", self.name, signum.name, self.pid)

    def _send(self, signum: signal.Signals) -> bool:
        """Signal our PID; False if it is already gone."""
        assert self.pid is not None
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def _poll_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                code = self._proc.returncode if self._proc is not None else None
                raise CommandError(
                    f"{self.name}: mariadbd exited during start (exit code {code}): "
                    f"{self._log_tail()}"
                )
            if os.path.exists(self.socket):
                try:
                    self.connect(connect_timeout=1, read_timeout=2).close()
                    return
                except pymysql.err.MySQLError:
                    pass
            if time.monotonic() > deadline:
                raise CommandError(
                    f"{self.name}: mariadbd not accepting connections after {timeout}s: "
                    f"{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _adopt_pid_file(self) -> None:
        # `ip netns exec` execs in place, so the PIDs should agree; if a wrapper ever
        # forks, signal the server it started rather than the wrapper.
        try:
            recorded = int(Path(self.pid_file).read_text().strip())
        except (OSError, ValueError):
            return
        if recorded != self.pid:
            log.warning("%s: pid file says %d, we started %s", self.name, recorded, self.pid)
            self.pid = recorded

    def _wait_exit(self, timeout: float) -> bool:
        assert self.pid is not None
        proc = self._proc
        if proc is not None and proc.pid == self.pid:
            try:
                proc.wait(timeout)  # also reaps it, so no zombie is left behind
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while _pid_alive(self.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_INTERVAL)
        if proc is not None:
            proc.wait(5)  # reap the wrapper we started
        return True

    def _log_tail(self) -> str:
        """What the error log gained since the last launch."""
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return f"no error log at {self.log_file}"
        return _tail(text.splitlines()) or f"nothing new in {self.log_file}"

    # -- SQL -------------------------------------------------------------------

    def connect(self, **kw: Any) -> pymysql.connections.Connection:
        """Connect as root over the unix socket with autocommit; ``kw`` overrides.

        Pass ``unix_socket=None`` with ``host``/``port``/``user``/``password`` for TCP,
        or use ``tcp_connect``.  Driver errors are pymysql's own, so tests can check
        error codes.
        """
        params: dict[str, Any] = {
            "unix_socket": self.socket,
            "user": ROOT_USER,
            "password": ROOT_PASSWORD,
            "autocommit": True,
            "connect_timeout": 5,
            "charset": "utf8mb4",
        }
        params.update(kw)
        return pymysql.connect(**params)

    def tcp_connect(
        self, credentials: Credentials = ORCH_CREDENTIALS, **kw: Any
    ) -> pymysql.connections.Connection:
        """Connect over TCP to ``host:port`` with ``credentials`` (the orch account by default)."""
        params: dict[str, Any] = {
            "unix_socket": None,
            "host": self.host,
            "port": self.port,
            # bytes: PyMySQL encodes a str password as latin-1; the server hashed UTF-8.
            "user": credentials.user.encode("utf-8"),
            "password": credentials.password.encode("utf-8"),
        }
        params.update(kw)
        return self.connect(**params)

    def create_account(
        self, credentials: Credentials, privileges: str = "", host: str = "%"
    ) -> None:
        """CREATE USER on this server only (not binlogged), with ``GRANT privileges ON *.*``.

        ``privileges`` is a list of privilege names as in a GRANT statement (docs/install.md's
        line, say); empty grants nothing beyond USAGE. The password may be any text: it
        reaches the server as UTF-8, as the mariadb client sends it.
        """
        if privileges and not re.fullmatch(r"[A-Z][A-Z_ ]*(, *[A-Z][A-Z_ ]*)*", privileges):
            raise ValueError(f"not a list of privilege names: {privileges!r}")
        with closing(self.connect()) as conn, conn.cursor() as cursor:
            cursor.execute("SET sql_log_bin = 0")  # accounts are local to each server
            cursor.execute(
                "CREATE USER %s@%s IDENTIFIED BY %s", (credentials.user, host, credentials.password)
            )
            if privileges:
                cursor.execute(f"GRANT {privileges} ON *.* TO %s@%s", (credentials.user, host))

    def client_defaults(self, credentials: Credentials = ORCH_CREDENTIALS, connect_timeout: int = 1) -> str:
        """A ``[client]`` option file for ``mariadb --defaults-file`` over TCP (hooks/check-mysql)."""
        return (
            "[client]\n"
            f"host={self.host}\n"
            f"port={self.port}\n"
            f"user={option_value(credentials.user)}\n"
            f"password={option_value(credentials.password)}\n"
            f"connect_timeout={int(connect_timeout)}\n"
        )

    def sql(self, statement: str, args: Any = None) -> list[dict[str, Any]]:
        """Run one statement as root on a fresh connection and return its rows as dicts."""
        with closing(self.connect(cursorclass=pymysql.cursors.DictCursor)) as conn:
            with conn.cursor() as cursor:
                cursor.execute(statement, args)
                return list(cursor.fetchall())

    def query_value(self, statement: str, args: Any = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = self.sql(statement, args)
        if not rows:
            return None
        return next(iter(rows[0].values()))


def option_value(value: str) -> str:
    """``value`` quoted for a MariaDB/MySQL option file (my.cnf, a --defaults-file).

    Unquoted, the client drops leading and trailing blanks, where "blank" is a latin1
    space (so a UTF-8 password ending in "à", bytes C3 A0, loses its last byte), cuts
    at a "#" and reads backslash escapes. Inside double quotes only the escapes apply.
    """
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"')
        .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def start_replication(
    replica: MariaDBInstance,
    source: MariaDBInstance,
    credentials: Credentials = REPL_CREDENTIALS,
    timeout: float = 10,
) -> None:
    """Point ``replica`` at ``source`` (MASTER_USE_GTID=slave_pos); wait until it replicates."""
    replica.sql("STOP SLAVE")
    replica.sql(
        "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s, "
        "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
        (source.host, source.port, credentials.user, credentials.password),
    )
    replica.sql("START SLAVE")
    wait_replica_running(replica, timeout)


def wait_replica_running(replica: MariaDBInstance, timeout: float = 10) -> None:
    """Wait until both replication threads of ``replica`` run; fail fast on an SQL error."""
    deadline = time.monotonic() + timeout
    while True:
        rows = replica.sql("SHOW SLAVE STATUS")
        status = rows[0] if rows else {}
        if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes":
            return
        if status.get("Last_SQL_Errno"):
            raise DatabaseError(
                f"{replica.name}: replication SQL error: {status.get('Last_SQL_Error')}"
            )
        if time.monotonic() > deadline:
            raise DatabaseError(
                f"{replica.name}: replication not running after {timeout}s "
                f"(io={status.get('Slave_IO_Running')}, sql={status.get('Slave_SQL_Running')}, "
                f"last io error: {status.get('Last_IO_Error')!r})"
            )
        time.sleep(_POLL_INTERVAL)


def wait_gtid_equal(a: MariaDBInstance, b: MariaDBInstance, timeout: float = 10) -> None:
    """Wait until both servers report the same @@gtid_current_pos."""
    deadline = time.monotonic() + timeout
    while True:
        pos_a = a.query_value("SELECT @@GLOBAL.gtid_current_pos")
        pos_b = b.query_value("SELECT @@GLOBAL.gtid_current_pos")
        if pos_a == pos_b:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"gtid_current_pos still differs after {timeout}s: "
                f"{a.name}={pos_a!r} {b.name}={pos_b!r}"
            )
        time.sleep(_POLL_INTERVAL)


def free_port() -> int:
    """A TCP port free on 127.0.0.1, chosen below the kernel's ephemeral range.

    Outgoing connections (a replica's IO thread, the tests' clients) take ephemeral
    ports, so a port from that range may be taken again before mariadbd binds it.
    """
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise CommandError("no free TCP port found in 20000-32000 on 127.0.0.1")


def start_together(servers: Iterable[MariaDBInstance], template: str | None = None) -> None:
    """Initialize (from ``template``) and boot every server at once, then wait for each.

    ``start()`` would wait for each in turn; booting together halves a pair's start.
    """
    servers = list(servers)
    for server in servers:
        server.initialize(template)
        server.launch()
    for server in servers:
        server.wait_until_ready()


def make_pair(
    basedir: str, base_port: int | None = None, template: str | None = None
) -> tuple[MariaDBInstance, MariaDBInstance]:
    """Start ``server1`` (writable master) and ``server2`` (its read-only GTID replica).

    Ports are ``base_port`` and ``base_port + 1``, or two free ports.  On return both
    run, have the orch/repl accounts and a ``test`` database, and server2 has caught
    up.  server2 has read_only in its my.cnf, so it stays read-only across restarts.
    """
    if base_port is None:
        port1 = free_port()
        port2 = free_port()
        while port2 == port1:
            port2 = free_port()
    else:
        port1, port2 = base_port, base_port + 1
    base = Path(basedir)
    server1 = MariaDBInstance("server1", str(base / "server1"), port1, 1)
    server2 = MariaDBInstance(
        "server2", str(base / "server2"), port2, 2, extra_options={"read_only": "ON"}
    )
    started = time.monotonic()
    try:
        start_together((server1, server2), template)
        start_replication(server2, server1)
        wait_gtid_equal(server1, server2)
    except BaseException:
        for server in (server1, server2):
            server.kill()
        raise
    log.info("MariaDB pair ready under %s in %.2fs", base, time.monotonic() - started)
    return server1, server2


@contextmanager
def running_pair(
    basedir: str, template: str | None = None
) -> Iterator[tuple[MariaDBInstance, MariaDBInstance]]:
    """``make_pair`` for a ``with`` block; on exit, kill both and delete their datadirs."""
    server1, server2 = make_pair(basedir, template=template)
    try:
        yield server1, server2
    finally:
        for server in (server1, server2):
            server.discard()


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _tail(lines: list[str]) -> str:
    return " | ".join(line.strip() for line in lines[-_LOG_TAIL_LINES:] if line.strip())


def _process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (R, S, T, Z...), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]
