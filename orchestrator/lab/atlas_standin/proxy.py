"""The stand-in's proxy port: client connections routed to backends the way Atlas 2.2 routes.

As ``/work/shared/atlas-admin.md`` describes Atlas's routing, and no further:

- only backends in state ``up`` get traffic: writes and everything in a transaction (or
  with autocommit off) go to the read/write backend; an autocommit ``SELECT`` goes to an
  ``up`` read-only backend (weighted round robin), or to the read/write backend when no
  read-only backend is ``up``;
- a failed connection to a backend marks it ``down`` at once (only the checker brings it
  back); ``offline`` and ``unknown`` backends get nothing;
- with no backend to send a statement to, the client connection is closed at once (the
  client sees error 2013); a connection arriving while no backend at all is ``up`` is
  closed before the greeting.

Clients log in with a user of ``pwds`` (the stand-in's reversible cipher, see
``standin.encrypt_password``); the proxy logs in to backends with that user and password.
Session state (autocommit, ``SET NAMES``, the default database) is kept per client and
replayed on each backend connection before a statement, like Atlas's connection pool.

Not known from the reference, so chosen here (and not to be relied on by tests): the
greeting's server version, the error text of a failed client login, whether Atlas tries
another backend after a failed connection (here: the client connection is closed), and
connection pooling across clients (here: each client has its own backend connections).
"""

from __future__ import annotations

import hmac
import logging
import re
import socket
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from orchestrator.lab.atlas_standin import mysqlwire as wire

# The stand-in's AdminState and Backend (standin.py, which imports this module): the proxy
# only reads the backends' states and reports a failed connection, so it names no type of its.
AdminState = Any
Backend = Any

logger = logging.getLogger(__name__)

PROXY_VERSION = "5.0.81-log"  # not in the reference: an assumption
CONNECT_TIMEOUT = 1.0  # seconds to reach a backend (the checker uses the same)
QUERY_TIMEOUT = 60.0  # a backend that says nothing for this long is given up

CLIENT_LONG_FLAG = 0x0000_0004
CLIENT_TRANSACTIONS = 0x0000_2000
SERVER_STATUS_IN_TRANS = 0x0001
SERVER_MORE_RESULTS_EXISTS = 0x0008
COM_QUIT, COM_INIT_DB, COM_QUERY, COM_PING = 0x01, 0x02, 0x03, 0x0E
PROXY_CAPABILITIES = (
    wire.CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | wire.CLIENT_CONNECT_WITH_DB | wire.CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS | wire.CLIENT_SECURE_CONNECTION
)
NATIVE = b"mysql_native_password"


class BackendError(Exception):
    """A backend could not be reached or logged in to, or the connection broke."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


def parse_err(payload: bytes) -> Tuple[int, str, str]:
    """(code, sqlstate, message) of an ERR packet."""
    code = struct.unpack_from("<H", payload, 1)[0]
    if payload[3:4] == b"#":
        return code, payload[4:9].decode("ascii", "replace"), payload[9:].decode("utf-8", "replace")
    return code, "HY000", payload[3:].decode("utf-8", "replace")


class BackendConnection:
    """A minimal MySQL client: native-password login, commands, raw response packets."""

    def __init__(self, address: str, user: bytes, password: bytes, database: Optional[bytes] = None,
                 timeout: float = CONNECT_TIMEOUT) -> None:
        host, _, port = address.rpartition(":")
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        except (OSError, ValueError) as exc:
            raise BackendError(f"{address}: {exc}") from None
        self.address = address
        self.stream = wire.PacketStream(self.sock)
        self.database = database
        self.autocommit: Optional[bool] = None
        self.names: Optional[bytes] = None
        try:
            self.sock.settimeout(timeout)
            self._login(user, password, database)
            self.sock.settimeout(QUERY_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def _login(self, user: bytes, password: bytes, database: Optional[bytes]) -> None:
        try:
            greeting = self.stream.read_packet()
            if greeting[:1] == b"\xff":
                raise BackendError(f"{self.address}: {parse_err(greeting)[2]}", parse_err(greeting)[0])
            if greeting[:1] != b"\x0a":
                raise BackendError(f"{self.address}: not a MySQL greeting")
            pos = greeting.index(b"\x00", 1) + 1 + 4
            scramble = greeting[pos:pos + 8]
            pos += 8 + 1 + 2 + 1 + 2 + 2
            auth_length = greeting[pos]
            pos += 1 + 10
            scramble += greeting[pos:pos + max(13, auth_length - 8)].rstrip(b"\x00")[:12]
            caps = (wire.CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | wire.CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS
                    | wire.CLIENT_SECURE_CONNECTION | wire.CLIENT_PLUGIN_AUTH
                    | (wire.CLIENT_CONNECT_WITH_DB if database else 0))
            auth = wire.native_password_scramble(password, scramble) if password else b""
            response = (struct.pack("<IIB", caps, 1 << 24, 33) + b"\x00" * 23 + user + b"\x00"
                        + bytes([len(auth)]) + auth + ((database + b"\x00") if database else b"") + NATIVE + b"\x00")
            self.stream.write_packet(response)
            reply = self.stream.read_packet()
            if reply[:1] == b"\xfe":  # auth switch request
                end = reply.index(b"\x00", 1)
                if reply[1:end] != NATIVE:
                    raise BackendError(f"{self.address}: unsupported auth plugin {reply[1:end]!r}")
                self.stream.write_packet(wire.native_password_scramble(password, reply[end + 1:end + 21]) if password else b"")
                reply = self.stream.read_packet()
            if reply[:1] == b"\xff":
                code, _, message = parse_err(reply)
                raise BackendError(f"{self.address}: {message}", code)
            if reply[:1] != b"\x00":
                raise BackendError(f"{self.address}: unexpected login reply")
        except (OSError, wire.ConnectionClosed, IndexError, struct.error) as exc:
            raise BackendError(f"{self.address}: {exc or type(exc).__name__}") from None

    def command(self, command: int, argument: bytes) -> List[bytes]:
        """Send one command; the payloads of its whole response (every result set)."""
        try:
            self.stream._next_seq = 0
            self.stream.write_packet(bytes([command]) + argument)
            packets: List[bytes] = []
            status: Optional[int]
            while True:
                first = self.stream.read_packet()
                packets.append(first)
                if first[:1] == b"\xff":
                    return packets
                if first[:1] == b"\x00":
                    status = _ok_status(first)
                elif first[:1] == b"\xfb":
                    raise BackendError(f"{self.address}: LOAD DATA LOCAL is not supported by the stand-in")
                else:
                    status = self._read_result_set(packets)
                    if status is None:
                        return packets  # ended by an ERR packet
                if not status & SERVER_MORE_RESULTS_EXISTS:
                    return packets
        except (OSError, wire.ConnectionClosed, IndexError, struct.error) as exc:
            raise BackendError(f"{self.address}: {exc or type(exc).__name__}") from None

    def _read_result_set(self, packets: List[bytes]) -> Optional[int]:
        """Column definitions, EOF, rows, EOF: the final status (None after an ERR)."""
        eofs = 0
        while True:
            packet = self.stream.read_packet()
            packets.append(packet)
            if packet[:1] == b"\xff":
                return None
            if packet[:1] == b"\xfe" and len(packet) < 9:
                eofs += 1
                if eofs == 2:
                    return struct.unpack_from("<H", packet, 3)[0]

    def simple(self, command: int, argument: bytes) -> Optional[bytes]:
        """A command answered with OK: None, or the ERR packet."""
        packets = self.command(command, argument)
        return packets[0] if packets[0][:1] == b"\xff" else None

    def close(self) -> None:
        try:
            self.stream._next_seq = 0
            self.stream.write_packet(bytes([COM_QUIT]))
        except OSError:
            pass
        self.sock.close()


def _ok_status(packet: bytes) -> int:
    pos = 1
    for _ in range(2):  # affected rows, last insert id: length-encoded integers
        first = packet[pos]
        pos += {0xFC: 3, 0xFD: 4, 0xFE: 9}.get(first, 1)
    return struct.unpack_from("<H", packet, pos)[0]


def probe_login(address: str, user: bytes, password: bytes, timeout: float = CONNECT_TIMEOUT) -> bool:
    """The checker's probe: a login and SELECT 1 within ``timeout`` per step."""
    try:
        conn = BackendConnection(address, user, password, timeout=timeout)
    except BackendError:
        return False
    try:
        conn.sock.settimeout(timeout)
        return conn.command(COM_QUERY, b"SELECT 1")[0][:1] != b"\xff"
    except BackendError:
        return False
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# Statement classes (Atlas splits on the first keyword; /*master*/ forces the writer)
# --------------------------------------------------------------------------------------

_LEAD = rb"^(?:\s|/\*.*?\*/)*"
_AUTOCOMMIT = re.compile(_LEAD + rb"set\s+(?:@@(?:session\.)?|session\s+)?autocommit\s*=\s*(0|1|on|off|true|false)\s*;?\s*$",
                         re.I | re.S)
_NAMES = re.compile(_LEAD + rb"set\s+names\s+.+$", re.I | re.S)
_USE = re.compile(_LEAD + rb"use\s+`?([A-Za-z0-9_$]+)`?\s*;?\s*$", re.I | re.S)
_BEGIN = re.compile(_LEAD + rb"(begin|start\s+transaction)\b", re.I | re.S)
_END = re.compile(_LEAD + rb"(commit|rollback)\b", re.I | re.S)
_SELECT = re.compile(_LEAD + rb"select\b", re.I | re.S)
_MASTER_HINT = re.compile(rb"/\*\s*master\s*\*/", re.I)


@dataclass
class Session:
    user: bytes
    password: bytes
    database: Optional[bytes] = None
    autocommit: bool = True
    names: Optional[bytes] = None
    in_transaction: bool = False

    @property
    def status(self) -> int:
        return (wire.SERVER_STATUS_AUTOCOMMIT if self.autocommit else 0) | (SERVER_STATUS_IN_TRANS if self.in_transaction else 0)


class ProxyConnection:
    """One client of the proxy port, served in its own thread until it leaves or is closed."""

    def __init__(self, state: "AdminState", sock: socket.socket, peer: Tuple[str, int], routed: Dict[str, int]) -> None:
        self.state = state
        self.sock = sock
        self.peer = peer
        self.stream = wire.PacketStream(sock)
        self.backends: Dict[int, Tuple["Backend", BackendConnection]] = {}
        self.routed = routed

    def serve(self) -> None:
        try:
            if not self.state.any_up():
                logger.info("proxy: no backend is up: closing the connection from %s:%d", *self.peer)
                return
            session = self._login()
            if session is None:
                return
            while True:
                payload = self.stream.read_packet()
                if not self._command(session, payload):
                    return
        except (wire.ConnectionClosed, OSError):
            pass
        finally:
            for _, conn in self.backends.values():
                conn.close()
            self.sock.close()

    def _login(self) -> Optional[Session]:
        import os

        scramble = bytes(33 + b % 94 for b in os.urandom(20))
        self.stream.write_packet(wire.greeting_packet(PROXY_VERSION, thread_id=1, scramble=scramble,
                                                      capabilities=PROXY_CAPABILITIES, charset=8,
                                                      status=wire.SERVER_STATUS_AUTOCOMMIT))
        try:
            response = wire.parse_handshake_response(self.stream.read_packet())
        except wire.ProtocolError:
            return None
        password = self.state.password_of(response.username.decode("utf-8", "replace"))
        expected = wire.native_password_scramble(password.encode("utf-8"), scramble) if password is not None else b""
        if password is None or not hmac.compare_digest(expected, response.auth_response):
            user = response.username.decode("utf-8", "replace")
            self.stream.write_packet(wire.err_packet(1045, "28000", f"Access denied for user '{user}'@'{self.peer[0]}' (using password: YES)"))
            return None
        self.stream.write_packet(wire.ok_packet())
        return Session(response.username, password.encode("utf-8"), response.database or None)

    def _ok(self, session: Session) -> bool:
        self.stream.write_packet(wire.ok_packet(session.status))
        return True

    def _command(self, session: Session, payload: bytes) -> bool:
        command, argument = payload[:1], payload[1:]
        if command == bytes([COM_QUIT]):
            return False
        if command == bytes([COM_PING]):
            return self._ok(session)
        if command == bytes([COM_INIT_DB]):
            session.database = argument
            return self._ok(session)
        if command != bytes([COM_QUERY]):
            self.stream.write_packet(wire.err_packet(1047, "08S01", "Unknown command"))
            return True
        match = _AUTOCOMMIT.match(argument)
        if match:
            session.autocommit = match.group(1).lower() in (b"1", b"on", b"true")
            if session.autocommit:
                session.in_transaction = False
            return self._ok(session)
        if _NAMES.match(argument):
            session.names = argument
            return self._ok(session)
        match = _USE.match(argument)
        if match:
            session.database = match.group(1)
            return self._ok(session)
        reading = (_SELECT.match(argument) is not None and session.autocommit and not session.in_transaction
                   and not _MASTER_HINT.search(argument))
        backend = self.state.route("ro" if reading else "rw")
        if backend is None:
            logger.info("proxy: no %s backend is up: closing the connection from %s:%d",
                        "read" if reading else "read/write", *self.peer)
            return False
        conn = self._connection(session, backend)
        if conn is None:
            return False
        try:
            packets = conn.command(COM_QUERY, argument)
        except BackendError as exc:
            logger.info("proxy: %s lost: %s: closing the connection from %s:%d", backend.address, exc, *self.peer)
            self._drop(backend)
            return False
        key = f"{backend.type} {backend.address}"
        self.routed[key] = self.routed.get(key, 0) + 1
        if _BEGIN.match(argument):
            session.in_transaction = True
        elif _END.match(argument):
            session.in_transaction = False
        self.stream.write_packets(packets)
        return True

    def _drop(self, backend: "Backend") -> None:
        held = self.backends.pop(id(backend), None)
        if held is not None:
            held[1].close()

    def _connection(self, session: Session, backend: "Backend") -> Optional[BackendConnection]:
        held = self.backends.get(id(backend))
        conn = held[1] if held is not None and held[0] is backend else None
        if conn is None:
            try:
                conn = BackendConnection(backend.address, session.user, session.password, session.database)
            except BackendError as exc:
                # A failed connection from proxy traffic marks the backend down at once.
                self.state.mark_down(backend, str(exc))
                return None
            self.backends[id(backend)] = (backend, conn)
        try:
            if session.database and conn.database != session.database:
                error = conn.simple(COM_INIT_DB, session.database)
                if error is None:
                    conn.database = session.database
            if conn.autocommit != session.autocommit:
                conn.simple(COM_QUERY, b"SET AUTOCOMMIT=" + (b"1" if session.autocommit else b"0"))
                conn.autocommit = session.autocommit
            if session.names is not None and conn.names != session.names:
                conn.simple(COM_QUERY, session.names)
                conn.names = session.names
        except BackendError as exc:
            logger.info("proxy: %s lost: %s", backend.address, exc)
            self._drop(backend)
            return None
        return conn
