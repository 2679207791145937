"""The one door to MySQL/MariaDB servers: every statement goes through :class:`Server`.

Statements always use bound parameters; driver errors become DatabaseError with the
server's name. Parameter values are never logged (one of them may be a password).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from .config import Account, Node
from .errors import ALIVE, DOWN, LOST, DatabaseError

log = logging.getLogger(__name__)

TOO_MANY_RETRY = 0.05  # seconds between connects refused with 1040 (within connect_timeout)


class Server:
    """A connection to one node, opened lazily, with the orch account.

    Every deadline has its purpose: the handshake gets ``connect_timeout`` (a hung server
    accepts TCP and then says nothing), statements get ``read_timeout`` (observation) unless
    a call names its own (the fence, the catch-up wait).
    """

    def __init__(self, node: Node, account: Account, read_timeout: Optional[float] = None) -> None:
        self.node = node
        self.account = account
        self.read_timeout = read_timeout if read_timeout is not None else getattr(account, "read_timeout", 2.0)
        self._conn: Any = None
        # Tables a statement found missing on this server, for a reader that asks whether one
        # exists before reading it again (a failed statement closes the connection).
        self.missing_tables: Set[str] = set()
        # Tables a reader found present (one that asks first, rather than lose the connection).
        self.present_tables: Set[str] = set()

    @property
    def label(self) -> str:
        return f"{self.node.name} ({self.node.host}:{self.node.port})"

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self) -> None:
        if self._conn is not None:
            return
        handshake = self.account.connect_timeout
        deadline = time.monotonic() + handshake
        while True:
            try:
                self._connect_once(handshake)
                return
            except DatabaseError as exc:
                # One connection beyond max_connections is reserved for CONNECTION ADMIN,
                # shared by every such account: a health check holding it for a moment
                # must not make a live master look unfenceable.
                if exc.code != 1040 or time.monotonic() + TOO_MANY_RETRY > deadline:
                    raise
                time.sleep(TOO_MANY_RETRY)

    def _connect_once(self, handshake: float) -> None:
        pymysql = driver()
        try:
            conn = _connection_class()(
                **_tls_options(self.account),
                host=self.node.host,
                port=self.node.port,
                # bytes: PyMySQL would encode a str password as latin-1, and a UTF-8
                # password (what the mysql client sends) would never authenticate.
                user=self.account.user.encode("utf-8"),
                password=self.account.password.encode("utf-8"),
                connect_timeout=handshake,
                read_timeout=handshake,  # PyMySQL reads the handshake with the read timeout
                write_timeout=handshake,
                autocommit=True,
                charset="utf8mb4",
                cursorclass=pymysql.cursors.DictCursor,
                defer_connect=True,
            )
            conn.connect(tcp_connect(self.node.host, self.node.port, handshake))
            self._conn = conn
        except pymysql.err.MySQLError as exc:
            code = _code(exc)
            if code is not None and code < 2000:  # the server answered: alive
                raise DatabaseError(f"{self.label}: alive but unusable: {_describe(exc)}", ALIVE, code) from None
            if code == 2013:
                raise DatabaseError(f"{self.label}: no handshake within {handshake:g}s (hung or overloaded)", DOWN, code) from None
            raise DatabaseError(f"{self.label}: cannot connect: {_describe(exc)}", DOWN, code or 0) from None
        except (OSError, ValueError) as exc:
            raise DatabaseError(f"{self.label}: cannot connect: {exc}", DOWN) from None
        self._set_timeout(self.read_timeout)

    def _set_timeout(self, seconds: float) -> None:
        # PyMySQL applies _read_timeout/_write_timeout to the socket before each read/write.
        self._conn._read_timeout = seconds
        self._conn._write_timeout = seconds

    def query(self, sql: str, args: Sequence[Any] = (), timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """Run one statement; return its rows as dicts keyed by column name."""
        pymysql = driver()
        self.connect()
        if timeout is not None:
            self._set_timeout(timeout)
        try:
            with self._conn.cursor() as cur:
                cur.execute(sql, tuple(args) if args else None)
                rows = list(cur.fetchall() or [])
            if timeout is not None:
                self._set_timeout(self.read_timeout)
            return rows
        except pymysql.err.MySQLError as exc:
            self.close()
            code = _code(exc)
            what = f"{self.label}: {sql.split(' = %s')[0][:80]}"
            if code in (2006, 2013, 2014, 2055):
                if "timed out" in str(exc):
                    spent = timeout if timeout is not None else self.read_timeout
                    raise DatabaseError(f"{what}: no answer within {spent:g}s", ALIVE, code) from None
                raise DatabaseError(f"{what}: {_describe(exc)}", LOST, code) from None
            # A server error may quote a value it was given (error 1470 quotes a too long
            # MASTER_PASSWORD): with parameters bound, quoted text is never repeated.
            raise DatabaseError(f"{what}: {_describe(exc, quoted_values=bool(args))}", ALIVE, code or 0) from None
        except OSError as exc:
            self.close()
            raise DatabaseError(f"{self.label}: {sql[:80]}: {exc}", LOST) from None

    def value(self, sql: str, args: Sequence[Any] = (), timeout: Optional[float] = None) -> Any:
        rows = self.query(sql, args, timeout)
        if not rows:
            return None
        return next(iter(rows[0].values()))

    def execute(self, sql: str, args: Sequence[Any] = (), why: str = "", timeout: Optional[float] = None) -> None:
        """Run a state-changing statement and log it (statement text only, never values)."""
        log.info("%s: %s%s", self.node.name, sql, f"  -- {why}" if why else "")
        self.query(sql, args, timeout)

    def take_lock(self, name: str, why: str) -> bool:
        """Take the named lock ``name`` on this connection without waiting (GET_LOCK): False
        when another session holds it. It lasts until ``release_lock`` or this connection's end
        (a lost connection releases it); other sessions see it with IS_USED_LOCK."""
        taken = str(self.value("SELECT GET_LOCK(%s, 0)", (name,))) == "1"
        log.info("%s: lock %s %s  -- %s", self.node.name, name, "taken" if taken else "held by another session", why)
        return taken

    def release_lock(self, name: str) -> None:
        """Release a lock ``take_lock`` took; a lost connection has released it already."""
        try:
            self.value("SELECT RELEASE_LOCK(%s)", (name,))
        except DatabaseError as exc:
            log.info("%s: lock %s not released (%s): the connection's end released it", self.node.name, name, exc)
            return
        log.info("%s: lock %s released", self.node.name, name)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a dead socket is not worth an error
                pass


def tcp_connect(host: str, port: int, timeout: float) -> Any:
    """The TCP connection PyMySQL then logs in on (to a server, or to Atlas's admin port),
    made here: a refused or unroutable server (the dead peer of every failover) raises
    PyMySQL's own error 2003 with its own words, without the traceback PyMySQL formats for
    it (~3 ms of the run: ast and linecache)."""
    import socket

    try:
        # An ASCII name or address goes to getaddrinfo() as bytes: a str is first encoded
        # with the IDNA codec, whose import (stringprep, unicodedata) costs ~1.5 ms.
        address: Any = (host.encode("ascii") if host.isascii() else host, port)  # bytes: getaddrinfo takes them too
        sock = socket.create_connection(address, timeout)
    except OSError as exc:
        raise driver().err.OperationalError(2003, f"Can't connect to MySQL server on {host!r} ({exc})") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as PyMySQL sets its own
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def _tls_options(account: Account) -> Dict[str, Any]:
    if account.tls == "disabled":
        return {"ssl_disabled": True}
    if account.tls == "required":
        import ssl

        if account.tls_ca:
            ctx = ssl.create_default_context(cafile=account.tls_ca)
        else:
            ctx = _unverified_context()
        return {"ssl": ctx}
    return {}  # preferred: PyMySQL >= 1.2 tries TLS when the server offers it


def _unverified_context() -> Any:
    """Encryption without verification, as the mysql client's PREFERRED mode does.

    Built directly, once per process: ssl.create_default_context(), which PyMySQL's own
    preferred mode calls for every connection, loads the system CA store (~30 ms) that
    nothing then uses.
    """
    global _UNVERIFIED
    if _UNVERIFIED is None:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _UNVERIFIED = ctx
    return _UNVERIFIED


_UNVERIFIED: Any = None


def driver() -> Any:
    """The pymysql package. Imported here, in the main thread, before any observer thread."""
    global _PYMYSQL
    if _PYMYSQL is None:
        with _DRIVER_LOCK:
            if _PYMYSQL is None:
                import pymysql
                import pymysql.cursors

                _PYMYSQL = pymysql
    return _PYMYSQL


_PYMYSQL: Any = None
_DRIVER_LOCK = threading.Lock()


_CONNECTION_CLASS: Any = None


def _connection_class() -> Any:
    global _CONNECTION_CLASS
    if _CONNECTION_CLASS is None:
        pymysql = driver()

        class Connection(pymysql.connections.Connection):  # type: ignore[name-defined]
            def _create_ssl_ctx(self, sslp: Any) -> Any:
                # PyMySQL's preferred mode (no ssl options) asks for {}: no CA, no checks.
                if sslp == {}:
                    return _unverified_context()
                return super()._create_ssl_ctx(sslp)

        _CONNECTION_CLASS = Connection
    return _CONNECTION_CLASS


def _code(exc: Exception) -> Optional[int]:
    args: Tuple[Any, ...] = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _describe(exc: Exception, quoted_values: bool = False) -> str:
    args: Tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        message = str(args[1])
        if quoted_values:
            import re

            message = re.sub(r"'.*'", "'***'", message, flags=re.S)
        return f"({args[0]}) {message}"
    return str(exc) or exc.__class__.__name__


def open_servers(cfg: Any, read_timeout: Optional[float] = None) -> Dict[str, Server]:
    """One lazily connected Server per node; statements default to the short observation timeout."""
    driver()  # now, before observe's threads connect in parallel
    return {n.name: Server(n, cfg.mysql, read_timeout) for n in cfg.nodes}
