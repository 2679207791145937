"""A stand-in for the admin port of Qihoo360 Atlas 2.2.1, for tests and the local lab.

It reads an Atlas config file and serves the admin interface as
``/work/shared/atlas-admin.md`` describes it (measured against a real Atlas). Where that
document is silent, the behaviour follows Atlas 2.2's own admin script and C code
(mysql-proxy 0.8 underneath): command patterns, check order of errors, backend
numbering, and the GKeyFile rules SAVE CONFIG writes with. Any difference from the
real thing is a bug in this module.

With ``proxy_port`` it also serves a proxy port (proxy.py beside it) that routes client
connections to the backends as the reference describes Atlas's routing, and marks a
backend ``down`` when proxy traffic fails to connect to it.

Deliberate differences, all documented where they live:
- passwords in ``pwds`` use a reversible stand-in cipher, not Atlas's DES
  (see :func:`encrypt_password`);
- the health checker logs in and runs ``SELECT 1`` with the first ``pwds`` user it can
  decrypt (which account Atlas's checker uses is not in the reference); with none, it
  only reads the MySQL greeting.

Python API: :class:`AtlasStandin`. Foreground use (one process per lab host)::

    python -m orchestrator.lab.atlas_standin.standin --config FILE [--host H] [--port P] [--pid-file F] [--proxy-port P]
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import selectors
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from orchestrator.lab.atlas_standin import mysqlwire as wire
from orchestrator.lab.atlas_standin.atlasconf import (
    GROUP, AtlasConfig, AtlasConfigError, _is_decimal, load_config, normalize_backend_address, read_keyfile,
)

logger = logging.getLogger(__name__)

SERVER_VERSION = "5.0.99-agent-admin"
ATLAS_VERSION = "2.2.1"
DEFAULT_CHECK_INTERVAL = 4.0
PROBE_TIMEOUT = 1.0

BACKEND_STATES = ("unknown", "up", "down", "offline")

# Error texts, byte for byte as Atlas sends them (including its spelling).
MSG_NOT_COM_QUERY = "[admin] we only handle text-based queries (COM_QUERY)"
MSG_GOT_SOMETHING_ELSE = "need a resultset + proxy.PROXY_SEND_RESULT ... got something else"
MSG_UNKNOWN_COMMAND = "use 'SELECT * FROM help' to see the supported commands"
MSG_INVALID_BACKEND_ID = "invalid backend_id"
MSG_BACKEND_NOT_EXIST = "backend id is not exsit"
MSG_INVALID_OPERATION = "invalid operation"
MSG_CLIENT_EXIST = "this client is exist"
MSG_CLIENT_NOT_EXIST = "this client is NOT exist"
MSG_USER_EXIST = "this user is exist"
MSG_USER_NOT_EXIST = "this user is NOT exist"
MSG_DECRYPT_FAILED = "failed to decrypt"

HELP_ROWS: Tuple[Tuple[str, str], ...] = (
    ("SELECT * FROM help", "shows this help"),
    ("SELECT * FROM backends", "lists the backends and their state"),
    ("SET OFFLINE $backend_id", "offline backend server, $backend_id is backend_ndx's id"),
    ("SET ONLINE $backend_id", "online backend server, ..."),
    ("ADD MASTER $backend", 'example: "add master 127.0.0.1:3306", ...'),
    ("ADD SLAVE $backend", 'example: "add slave 127.0.0.1:3306", ...'),
    ("REMOVE BACKEND $backend_id", 'example: "remove backend 1", ...'),
    ("SELECT * FROM clients", "lists the clients"),
    ("ADD CLIENT $client", 'example: "add client 192.168.1.2", ...'),
    ("REMOVE CLIENT $client", 'example: "remove client 192.168.1.2", ...'),
    ("SELECT * FROM pwds", "lists the pwds"),
    ("ADD PWD $pwd", 'example: "add pwd user:raw_password", ...'),
    ("ADD ENPWD $pwd", 'example: "add enpwd user:encrypted_password", ...'),
    ("REMOVE PWD $pwd", 'example: "remove pwd user", ...'),
    ("SAVE CONFIG", "save the backends to config file"),
    ("SELECT VERSION", "display the version of Atlas"),
)


# --------------------------------------------------------------------------------------
# Password "encryption"
# --------------------------------------------------------------------------------------

_CIPHER_SEED = b"aCtZlHaUs"  # Atlas's fixed DES key; here it only seeds a keystream.


def _keystream(length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(_CIPHER_SEED + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def encrypt_password(raw: str) -> str:
    """The stand-in for Atlas's ``encrypt`` tool (DES-ECB + base64 with a fixed key).

    NOT real Atlas output: PKCS#7-padded to 8-byte blocks, XORed with a fixed keystream,
    base64-encoded. It keeps the properties tests rely on (deterministic, reversible,
    same length as the DES form, and decryption can fail on bad base64 or padding).
    Encrypted passwords from a real Atlas install do not decrypt here.
    """
    data = raw.encode("utf-8")
    pad = 8 - len(data) % 8
    data += bytes([pad]) * pad
    cipher = bytes(a ^ b for a, b in zip(data, _keystream(len(data))))
    return base64.b64encode(cipher).decode("ascii")


def decrypt_password(encrypted: str) -> Optional[str]:
    """Reverse :func:`encrypt_password`; None where Atlas would say 'failed to decrypt'."""
    try:
        data = base64.b64decode(encrypted.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    if not data or len(data) % 8:
        return None
    plain = bytes(a ^ b for a, b in zip(data, _keystream(len(data))))
    pad = plain[-1]
    if not 1 <= pad <= 8 or plain[-pad:] != bytes([pad]) * pad:
        return None
    try:
        return plain[:-pad].decode("utf-8")
    except UnicodeDecodeError:
        return None


# --------------------------------------------------------------------------------------
# Admin state and commands
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Backend:
    """One entry of Atlas's backend array; identity matters, not value."""

    address: str
    type: str  # "rw" or "ro"
    state: str = "unknown"
    weight: int = 1


@dataclass(frozen=True)
class ResultSet:
    """A text result set reply."""

    columns: Tuple[wire.Column, ...]
    rows: Tuple[Tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class ErrorReply:
    """An ERR packet reply; ``close`` ends the connection after sending it."""

    message: str
    code: int = 1105
    sqlstate: str = "07000"
    close: bool = False


Reply = Union[ResultSet, ErrorReply]

STATUS = ResultSet(columns=(("status", wire.MYSQL_TYPE_STRING),))
BACKEND_COLUMNS: Tuple[wire.Column, ...] = (
    ("backend_ndx", wire.MYSQL_TYPE_LONG),
    ("address", wire.MYSQL_TYPE_STRING),
    ("state", wire.MYSQL_TYPE_STRING),
    ("type", wire.MYSQL_TYPE_STRING),
)


def _command(pattern: bytes) -> "re.Pattern[bytes]":
    # Atlas matches Lua patterns on the lower-cased query, anchored at both ends;
    # in Lua "." also matches newlines and %s is the C isspace() set, like bytes \s.
    return re.compile(pattern, re.IGNORECASE | re.DOTALL)


_Handler = Callable[["re.Match[bytes]"], "Reply"]
_IPV4_PORT = rb"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}:[0-9]{1,5}"


class AdminState:
    """Backends, client IPs and user passwords, and the admin commands that change them.

    One lock serialises commands, health-check results and test hooks.
    """

    def __init__(self, config: AtlasConfig, config_path: str) -> None:
        self._lock = threading.RLock()
        self._config_path = config_path
        self._backends: List[Backend] = []
        self._clients: List[str] = list(config.client_ips)
        self._pwds: List[str] = list(config.pwds)  # "user:encrypted", as Atlas keeps them
        for address in config.rw_backends:
            self._add_from_config(address, "rw")
        for address in config.ro_backends:
            self._add_from_config(address, "ro")
        for entry in self._pwds:
            if decrypt_password(entry.partition(":")[2]) is None:
                # Tolerated so one config file can serve real Atlas and the stand-in.
                logger.warning("pwds: cannot decrypt the password of %s", entry.partition(":")[0])
        # Same order as Atlas's admin script; the first match wins.
        self._commands: List[Tuple["re.Pattern[bytes]", _Handler, bool]] = [
            (_command(rb"select\s+\*\s+from\s+backends"), self._cmd_backends, False),
            (_command(rb"set\s+([a-z]+)\s+([0-9]+)"), self._cmd_set_state, True),
            (_command(rb"add\s+master\s+(" + _IPV4_PORT + rb")"), self._cmd_add_master, True),
            (_command(rb"add\s+slave\s+(" + _IPV4_PORT + rb")"), self._cmd_add_slave, True),
            (_command(rb"remove\s+backend\s+([0-9]+)"), self._cmd_remove_backend, True),
            (_command(rb"select\s+\*\s+from\s+clients"), self._cmd_clients, False),
            (_command(rb"add\s+client\s+(.+)"), self._cmd_add_client, True),
            (_command(rb"remove\s+client\s+(.+)"), self._cmd_remove_client, True),
            (_command(rb"select\s+\*\s+from\s+pwds"), self._cmd_pwds, False),
            (_command(rb"add\s+pwd\s+(.+):(.+)"), self._cmd_add_pwd, True),
            (_command(rb"add\s+enpwd\s+(.+):(.+)"), self._cmd_add_enpwd, True),
            (_command(rb"remove\s+pwd\s+(.+)"), self._cmd_remove_pwd, True),
            # Atlas's Lua patterns are "config+" and "version+": "CONFIGG" also matches.
            (_command(rb"save\s+config+"), self._cmd_save_config, True),
            (_command(rb"select\s+version+"), self._cmd_version, False),
            (_command(rb"select\s+\*\s+from\s+help"), self._cmd_help, False),
        ]

    # -- queries used by the server, the health checker and tests ---------------------

    def execute(self, query: bytes) -> Tuple[Reply, bool]:
        """Run one COM_QUERY text; returns the reply and whether it was a mutating command."""
        # mysql-proxy hands empty queries and anything starting with "LOAD " back as
        # "send to a backend", which its admin plugin answers with this error and a close.
        if not query or query[:5].lower() == b"load ":
            return ErrorReply(MSG_GOT_SOMETHING_ELSE, close=True), False
        for pattern, handler, mutating in self._commands:
            match = pattern.fullmatch(query)
            if match:
                with self._lock:
                    return handler(match), mutating
        return ErrorReply(MSG_UNKNOWN_COMMAND), False

    def snapshot(self) -> List[Tuple[int, str, str, str]]:
        """(backend_ndx, address, state, type) rows, as SELECT * FROM backends shows them."""
        with self._lock:
            return [(i, b.address, b.state, b.type) for i, b in enumerate(self._backends, 1)]

    def set_state(self, address: str, state: str) -> None:
        """Force the state of every backend with ``address`` (both types)."""
        if state not in BACKEND_STATES:
            raise ValueError(f"state must be one of {BACKEND_STATES}, not {state!r}")
        with self._lock:
            matches = [b for b in self._backends if b.address == address]
            if not matches:
                raise KeyError(address)
            for backend in matches:
                backend.state = state

    # -- the proxy port's view ------------------------------------------------------

    def any_up(self) -> bool:
        with self._lock:
            return any(b.state == "up" for b in self._backends)

    def route(self, kind: str) -> Optional[Backend]:
        """The backend a statement goes to: for "rw" the first `up` read/write backend; for
        "ro" a weighted round robin over `up` read-only backends, else the read/write one."""
        with self._lock:
            if kind == "ro":
                ring = [b for b in self._backends if b.type == "ro" and b.state == "up" for _ in range(max(b.weight, 1))]
                if ring:
                    self._round = getattr(self, "_round", -1) + 1
                    return ring[self._round % len(ring)]
            return next((b for b in self._backends if b.type == "rw" and b.state == "up"), None)

    def mark_down(self, backend: Backend, why: str) -> None:
        """A connection from proxy traffic failed: `down` at once (only the checker brings it back)."""
        with self._lock:
            if any(b is backend for b in self._backends) and backend.state == "up":
                logger.info("backend %s: up -> down (proxy connection failed: %s)", backend.address, why)
                backend.state = "down"

    def password_of(self, user: str) -> Optional[str]:
        """The raw password of a ``pwds`` user (None: not listed, or not decryptable)."""
        with self._lock:
            for entry in self._pwds:
                name, _, encrypted = entry.partition(":")
                if name == user:
                    return decrypt_password(encrypted)
        return None

    def checker_account(self) -> Optional[Tuple[str, str]]:
        """(user, password) the checker logs in with: the first decryptable ``pwds`` entry."""
        with self._lock:
            for entry in self._pwds:
                name, _, encrypted = entry.partition(":")
                raw = decrypt_password(encrypted)
                if raw is not None:
                    return name, raw
        return None

    def backends_to_probe(self) -> List[Backend]:
        """Backends the health checker looks at: only 'unknown' and 'down' ones."""
        with self._lock:
            return [b for b in self._backends if b.state in ("unknown", "down")]

    def record_probe(self, backend: Backend, reachable: bool) -> None:
        """Apply a probe result unless the backend was removed or changed meanwhile."""
        with self._lock:
            if not any(b is backend for b in self._backends):
                return
            if backend.state not in ("unknown", "down"):
                return
            new_state = "up" if reachable else "down"
            if new_state != backend.state:
                logger.info("backend %s: %s -> %s", backend.address, backend.state, new_state)
                backend.state = new_state

    # -- backends ------------------------------------------------------------------

    def _add_from_config(self, address: str, backend_type: str) -> None:
        if self._add_backend(address, backend_type) == "invalid":
            raise AtlasConfigError(f"invalid backend address: {address}")

    def _add_backend(self, address: str, backend_type: str) -> str:
        """Atlas's network_backends_add(): returns 'added', 'duplicate' or 'invalid'."""
        weight = 1
        plain = address
        if "@" in address:
            # Atlas strips "@weight" only for read-only backends; accepting it on both
            # keys keeps configs that carry a weight on the master loadable.
            plain, _, weight_text = address.rpartition("@")
            weight = int(weight_text) if _is_decimal(weight_text) else 0
        name = normalize_backend_address(plain)
        if name is None:
            logger.error("cannot add backend %s: invalid address", plain)
            return "invalid"
        first_slave = None
        for index, existing in enumerate(self._backends):
            if first_slave is None and existing.type == "ro":
                first_slave = index
            if existing.type == backend_type and existing.address == name:
                logger.error("backend %s is already known!", plain)
                return "duplicate"
        self._backends.append(Backend(name, backend_type, weight=weight))
        if backend_type == "rw" and first_slave is not None:
            # Atlas keeps masters in front by swapping the new one with the first slave.
            last = len(self._backends) - 1
            self._backends[first_slave], self._backends[last] = (
                self._backends[last],
                self._backends[first_slave],
            )
        logger.info(
            "added %s backend: %s", "read/write" if backend_type == "rw" else "read-only", plain
        )
        return "added"

    def _cmd_backends(self, match: "re.Match[bytes]") -> Reply:
        rows = tuple((str(i), b.address, b.state, b.type) for i, b in enumerate(self._backends, 1))
        return ResultSet(BACKEND_COLUMNS, rows)

    def _cmd_set_state(self, match: "re.Match[bytes]") -> Reply:
        word = match.group(1).lower()
        ndx_text = match.group(2).decode("ascii")
        ndx = int(ndx_text)
        if not 1 <= ndx <= len(self._backends):
            return ErrorReply(MSG_BACKEND_NOT_EXIST)
        backend = self._backends[ndx - 1]
        if word == b"offline":
            backend.state = "offline"
        elif word == b"online":
            backend.state = "unknown"
        else:
            return ErrorReply(MSG_INVALID_OPERATION)
        logger.info("backend %s set %s", backend.address, backend.state)
        # Atlas echoes the number as typed (its Lua passes the matched string through).
        row = (ndx_text, backend.address, backend.state, backend.type)
        return ResultSet(BACKEND_COLUMNS, (row,))

    def _cmd_add_master(self, match: "re.Match[bytes]") -> Reply:
        self._add_backend(match.group(1).decode("ascii"), "rw")
        return STATUS

    def _cmd_add_slave(self, match: "re.Match[bytes]") -> Reply:
        self._add_backend(match.group(1).decode("ascii"), "ro")
        return STATUS

    def _cmd_remove_backend(self, match: "re.Match[bytes]") -> Reply:
        ndx = int(match.group(1))
        if not 1 <= ndx <= len(self._backends):
            return ErrorReply(MSG_INVALID_BACKEND_ID)
        removed = self._backends.pop(ndx - 1)
        logger.info("removed %s backend %s", removed.type, removed.address)
        return STATUS

    # -- clients -------------------------------------------------------------------

    def _cmd_clients(self, match: "re.Match[bytes]") -> Reply:
        return ResultSet((("client", wire.MYSQL_TYPE_STRING),), tuple((c,) for c in self._clients))

    def _cmd_add_client(self, match: "re.Match[bytes]") -> Reply:
        client = _text(match.group(1).lower())
        if client in self._clients:
            return ErrorReply(MSG_CLIENT_EXIST)
        self._clients.append(client)
        return STATUS

    def _cmd_remove_client(self, match: "re.Match[bytes]") -> Reply:
        client = _text(match.group(1).lower())
        if client not in self._clients:
            return ErrorReply(MSG_CLIENT_NOT_EXIST)
        self._clients.remove(client)
        return STATUS

    # -- pwds ----------------------------------------------------------------------

    def _cmd_pwds(self, match: "re.Match[bytes]") -> Reply:
        rows = tuple(tuple(entry.split(":", 1)) for entry in self._pwds)
        return ResultSet(
            (("username", wire.MYSQL_TYPE_STRING), ("password", wire.MYSQL_TYPE_STRING)), rows
        )

    def _user_exists(self, user: str) -> bool:
        return any(entry.split(":", 1)[0] == user for entry in self._pwds)

    def _cmd_add_pwd(self, match: "re.Match[bytes]") -> Reply:
        user, raw = _text(match.group(1)), _text(match.group(2))
        if self._user_exists(user):
            return ErrorReply(MSG_USER_EXIST)
        self._pwds.append(f"{user}:{encrypt_password(raw)}")
        return STATUS

    def _cmd_add_enpwd(self, match: "re.Match[bytes]") -> Reply:
        user, encrypted = _text(match.group(1)), _text(match.group(2))
        if self._user_exists(user):
            return ErrorReply(MSG_USER_EXIST)
        if decrypt_password(encrypted) is None:
            logger.warning("failed to decrypt %s", encrypted)
            return ErrorReply(MSG_DECRYPT_FAILED)
        self._pwds.append(f"{user}:{encrypted}")
        return STATUS

    def _cmd_remove_pwd(self, match: "re.Match[bytes]") -> Reply:
        user = _text(match.group(1))
        if not self._user_exists(user):
            return ErrorReply(MSG_USER_NOT_EXIST)
        # Atlas removes the first entry of that user only.
        index = next(i for i, e in enumerate(self._pwds) if e.split(":", 1)[0] == user)
        del self._pwds[index]
        return STATUS

    # -- misc ----------------------------------------------------------------------

    def _cmd_version(self, match: "re.Match[bytes]") -> Reply:
        return ResultSet((("version", wire.MYSQL_TYPE_STRING),), ((ATLAS_VERSION,),))

    def _cmd_help(self, match: "re.Match[bytes]") -> Reply:
        columns = (("command", wire.MYSQL_TYPE_STRING), ("description", wire.MYSQL_TYPE_STRING))
        return ResultSet(columns, HELP_ROWS)

    def _cmd_save_config(self, match: "re.Match[bytes]") -> Reply:
        # Atlas answers the same empty set whether or not saving worked; it only logs.
        self._save_config()
        return STATUS

    def _save_config(self) -> None:
        path = self._config_path
        try:
            # Atlas re-loads the file here (so hand edits to other keys survive), but
            # never applies it to its running state.
            keyfile = read_keyfile(path)
        except (OSError, AtlasConfigError) as exc:
            logger.critical("SAVE CONFIG: cannot load %s: %s", path, exc)
            return
        keyfile.set(GROUP, "proxy-backend-addresses",
                    ",".join(b.address for b in self._backends if b.type == "rw"))
        keyfile.set(GROUP, "proxy-read-only-backend-addresses",
                    ",".join(b.address for b in self._backends if b.type == "ro"))
        keyfile.set(GROUP, "client-ips", ",".join(self._clients))
        keyfile.set(GROUP, "pwds", ",".join(self._pwds))
        try:
            _replace_file(path, keyfile.to_text().encode("utf-8", "surrogateescape"))
        except OSError as exc:
            logger.critical("SAVE CONFIG: cannot write %s: %s", path, exc)
            return
        logger.info("saving config file succeed")


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _replace_file(path: str, data: bytes) -> None:
    """Write ``data`` to a temp file next to ``path`` and rename it over ``path``.

    Like g_file_set_contents(): a new inode with mode 0666 & ~umask, not the old mode.
    """
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    for _ in range(100):
        suffix = base64.b32encode(os.urandom(5)).decode("ascii")[:6]
        tmp = os.path.join(directory, f"{base}.{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(f"no free temporary name next to {path}")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------------------
# Health checker probe
# --------------------------------------------------------------------------------------


def probe_backend(address: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True if a MySQL server greets on ``address`` within ``timeout`` per step."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            header = _recv_exact(sock, 4)
            length = header[0] | header[1] << 8 | header[2] << 16
            # A greeting is small; anything else is not a MySQL server.
            if not 0 < length <= 4096:
                return False
            return _recv_exact(sock, length)[:1] == b"\x0a"
    except (OSError, ValueError, wire.ConnectionClosed):
        return False


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise wire.ConnectionClosed()
        buf += chunk
    return buf


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


class AtlasStandin:
    """A running imitation of one Atlas admin port.

    ``host``/``port`` default to ``admin-address`` from the config; port 0 picks a free
    port. ``check_interval`` is the health checker period in seconds (Atlas: 4), None
    disables the checker. Use as a context manager or call start()/stop().
    """

    def __init__(
        self,
        config_path: str,
        host: Optional[str] = None,
        port: Optional[int] = None,
        check_interval: Optional[float] = DEFAULT_CHECK_INTERVAL,
        proxy_port: Optional[int] = None,
    ) -> None:
        self.config_path = config_path
        self._config = load_config(config_path)
        if (host is None or port is None) and self._config.admin_address is None:
            raise AtlasConfigError(
                "Failed to get bind address, please set by --admin-address=<host:port>"
            )
        default_host, default_port = self._config.admin_address or ("", 0)
        self.address: Tuple[str, int] = (
            default_host if host is None else host,
            default_port if port is None else port,
        )
        self._check_interval = check_interval
        self._proxy_port = proxy_port
        self.proxy_address: Optional[Tuple[str, int]] = None
        self._proxy_listener: Optional[socket.socket] = None
        self.routed: Dict[str, int] = {}  # "rw|ro address" -> statements the proxy sent there
        self._state = AdminState(self._config, config_path)
        self.commands: List[str] = []
        self._mutating: List[str] = []
        self._log_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._threads: List[threading.Thread] = []
        self._connections: Dict[socket.socket, threading.Thread] = {}
        self._conn_lock = threading.Lock()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> "AtlasStandin":
        """Bind and serve in daemon threads; returns self."""
        if self._started:
            raise RuntimeError("already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(self.address)
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.address = listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._started = True
        self._spawn(self._accept_loop, "atlas-standin-accept")
        if self._proxy_port is not None:
            proxy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            proxy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            proxy.bind((self.address[0], self._proxy_port))
            proxy.listen(128)
            proxy.setblocking(False)
            self._proxy_listener = proxy
            self.proxy_address = proxy.getsockname()[:2]
            self._spawn(self._proxy_loop, "atlas-standin-proxy")
        if self._check_interval is not None:
            self._spawn(self._check_loop, "atlas-standin-checker")
        logger.info("admin interface listening on %s:%d", *self.address)
        return self

    def stop(self) -> None:
        """Close the listener and every client connection, and join all threads."""
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        assert self._wake_w is not None
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        # The accept thread first, so no connection starts after the snapshot below.
        self._threads[0].join(timeout=5)
        with self._conn_lock:
            connections = dict(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(connections.values()) + self._threads[1:]:
            thread.join(timeout=5)
        for listening in (self._listener, self._wake_r, self._wake_w, self._proxy_listener):
            if listening is not None:
                listening.close()
        logger.info("admin interface on %s:%d stopped", *self.address)

    def __enter__(self) -> "AtlasStandin":
        return self if self._started else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- test-facing API -------------------------------------------------------------

    def backends(self) -> List[Tuple[int, str, str, str]]:
        """Snapshot of (backend_ndx, address, state, type)."""
        return self._state.snapshot()

    def mutating_commands(self) -> List[str]:
        """The received queries that were ADD/REMOVE/SET/SAVE admin commands.

        A query counts when it matched such a command's pattern, whether or not Atlas
        then answered with an error (e.g. 'invalid backend_id'); text that is not an
        admin command at all (``SET NAMES utf8``) does not count.
        """
        with self._log_lock:
            return list(self._mutating)

    def set_state(self, address: str, state: str) -> None:
        """Test hook: force the state of the backend(s) with ``address``."""
        self._state.set_state(address, state)

    # -- threads ---------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        conn, peer = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        logger.error("accept failed: %s", exc)
                        continue
                    self._start_connection(conn, peer)

    def _start_connection(self, conn: socket.socket, peer: Tuple[str, int]) -> None:
        conn.setblocking(True)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(conn, peer),
            name=f"atlas-standin-{peer[0]}:{peer[1]}",
            daemon=True,
        )
        self._track_and_start(conn, thread)

    def _track_and_start(self, conn: socket.socket, thread: threading.Thread) -> bool:
        """Track a connection's thread (stop() closes the connection) and start it; False,
        with the connection closed, once the stand-in is stopping."""
        with self._conn_lock:
            if self._stopping.is_set():
                conn.close()
                return False
            self._connections[conn] = thread
        thread.start()
        return True

    def _check_loop(self) -> None:
        assert self._check_interval is not None
        # The first round comes one interval after start, like Atlas's check thread.
        while not self._stopping.wait(self._check_interval):
            account = self._state.checker_account()
            for backend in self._state.backends_to_probe():
                if self._stopping.is_set():
                    return
                if account is None:
                    reachable = probe_backend(backend.address)
                else:
                    from orchestrator.lab.atlas_standin.proxy import probe_login

                    reachable = probe_login(backend.address, account[0].encode("utf-8"), account[1].encode("utf-8"))
                self._state.record_probe(backend, reachable)

    def _proxy_loop(self) -> None:
        from orchestrator.lab.atlas_standin.proxy import ProxyConnection

        assert self._proxy_listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._proxy_listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for _ in selector.select(timeout=0.2):
                    try:
                        conn, peer = self._proxy_listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        if self._stopping.is_set():
                            return
                        continue
                    conn.setblocking(True)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    client = ProxyConnection(self._state, conn, peer, self.routed)
                    thread = threading.Thread(target=self._serve_proxy, args=(client, conn),
                                              name=f"atlas-standin-proxy-{peer[1]}", daemon=True)
                    if not self._track_and_start(conn, thread):
                        return

    def _serve_proxy(self, client: "object", conn: socket.socket) -> None:
        try:
            client.serve()  # type: ignore[attr-defined]
        finally:
            with self._conn_lock:
                self._connections.pop(conn, None)

    # -- one admin connection ----------------------------------------------------------

    def _serve_connection(self, conn: socket.socket, peer: Tuple[str, int]) -> None:
        stream = wire.PacketStream(conn)
        try:
            # wait-timeout: an idle admin connection is closed after N seconds.
            conn.settimeout(self._config.wait_timeout)
            if self._authenticate(stream):
                while True:
                    if not self._serve_command(stream, stream.read_packet()):
                        break
        except wire.ConnectionClosed:
            pass
        except socket.timeout:
            logger.info("closing admin connection from %s:%d: wait-timeout", *peer)
        except OSError as exc:
            if not self._stopping.is_set():
                logger.debug("admin connection from %s:%d: %s", *peer, exc)
        finally:
            with self._conn_lock:
                self._connections.pop(conn, None)
            conn.close()

    def _authenticate(self, stream: wire.PacketStream) -> bool:
        # mysql-proxy draws the 20 scramble bytes from the printable range 33..126.
        scramble = bytes(33 + b % 94 for b in os.urandom(20))
        stream.write_packet(
            wire.greeting_packet(
                SERVER_VERSION,
                thread_id=1,
                scramble=scramble,
                capabilities=wire.CLIENT_LONG_PASSWORD
                | wire.CLIENT_PROTOCOL_41
                | wire.CLIENT_SECURE_CONNECTION,
                charset=8,
                status=wire.SERVER_STATUS_AUTOCOMMIT,
            )
        )
        try:
            response = wire.parse_handshake_response(stream.read_packet())
        except wire.ProtocolError as exc:
            logger.info("closing admin connection: %s", exc)
            return False
        if not response.capabilities & wire.CLIENT_PROTOCOL_41:
            # mysql-proxy sends this raw (no SQL state) and closes.
            stream.write_packet(b"\xff\xd7\x07" + b"4.0 protocol is not supported")
            return False
        # Atlas compares and hashes the bytes of the config values (after GKeyFile
        # unescaping and g_strchomp): UTF-8, whatever the client's charset. No
        # normalisation and no case folding; the handshake's charset byte is ignored.
        if response.username != self._config.admin_username.encode("utf-8"):
            stream.write_packet(wire.err_packet(1045, "28000", "unknown user"))
            return False
        expected = wire.native_password_scramble(
            self._config.admin_password.encode("utf-8"), scramble
        )
        if not hmac.compare_digest(expected, response.auth_response):
            stream.write_packet(wire.err_packet(1045, "28000", "password doesn't match"))
            return False
        stream.write_packet(wire.ok_packet())
        return True

    def _serve_command(self, stream: wire.PacketStream, payload: bytes) -> bool:
        """Answer one command packet; False when the connection must be closed."""
        if not payload or payload[0] != wire.COM_QUERY:
            reply: Reply = ErrorReply(MSG_NOT_COM_QUERY)
        else:
            query = payload[1:]
            text = _text(query)
            reply, mutating = self._state.execute(query)
            with self._log_lock:
                self.commands.append(text)
                if mutating:
                    self._mutating.append(text)
        if isinstance(reply, ErrorReply):
            stream.write_packet(wire.err_packet(reply.code, reply.sqlstate, reply.message))
            return not reply.close
        stream.write_packets(wire.result_set_packets(reply.columns, reply.rows))
        return True


# --------------------------------------------------------------------------------------
# Foreground entry point
# --------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve one admin port in the foreground until SIGTERM or SIGINT."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.lab.atlas_standin.standin",
        description="Stand-in for the Atlas 2.2.1 admin port.",
    )
    parser.add_argument("--config", required=True, help="Atlas config file")
    parser.add_argument("--host", help="bind address (default: admin-address)")
    parser.add_argument("--port", type=int, help="port (default: admin-address; 0: any)")
    parser.add_argument("--pid-file", help="write the process id here while running")
    parser.add_argument("--proxy-port", type=int, help="also serve the proxy port here (0: any; default: none)")
    parser.add_argument(
        "--check-interval",
        type=float,
        default=DEFAULT_CHECK_INTERVAL,
        help="health check period in seconds, 0 disables (default: 4)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Atlas only reopens its log on SIGHUP; it never re-reads the config.
    signal.signal(signal.SIGHUP, lambda *_: logger.info("SIGHUP: config is not re-read"))
    try:
        standin = AtlasStandin(
            args.config,
            host=args.host,
            port=args.port,
            check_interval=args.check_interval if args.check_interval > 0 else None,
            proxy_port=args.proxy_port,
        ).start()
    except (AtlasConfigError, OSError) as exc:
        logger.error("cannot start: %s", exc)
        return 1
    try:
        if args.pid_file:
            with open(args.pid_file, "w", encoding="ascii") as handle:
                handle.write(f"{os.getpid()}\n")
        while not stop.wait(0.5):
            pass
    finally:
        standin.stop()
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
