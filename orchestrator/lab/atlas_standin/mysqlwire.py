"""Server side of the MySQL client/server protocol, as much as Atlas's admin port uses.

Only what a mysql-proxy style admin server needs: packet framing, the protocol-10
greeting, parsing the client's handshake response, mysql_native_password scrambles,
and OK / ERR / EOF / text result set packets. Stdlib only; used by the Atlas stand-in.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

# Capability flags (only the ones we read or send).
CLIENT_LONG_PASSWORD = 0x0000_0001
CLIENT_CONNECT_WITH_DB = 0x0000_0008
CLIENT_PROTOCOL_41 = 0x0000_0200
CLIENT_SECURE_CONNECTION = 0x0000_8000
CLIENT_PLUGIN_AUTH = 0x0008_0000

SERVER_STATUS_AUTOCOMMIT = 0x0002

# Commands.
COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_PING = 0x0E

# Column types.
MYSQL_TYPE_LONG = 0x03
MYSQL_TYPE_STRING = 0xFE

PRI_KEY_FLAG = 0x0002

MAX_PAYLOAD = 0xFF_FFFF

Column = Tuple[str, int]
"""A result set column: (name, MYSQL_TYPE_*)."""


class ConnectionClosed(Exception):
    """The peer closed the connection (EOF while reading a packet)."""


class ProtocolError(Exception):
    """A packet could not be decoded."""


class PacketStream:
    """Reads and writes MySQL packets on a blocking socket, keeping sequence ids.

    A reply continues the sequence of the packet it answers, so the stream remembers
    the id that comes after the last packet read and numbers written packets from it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._next_seq = 0

    def read_packet(self) -> bytes:
        """Read one logical packet (joining 16 MiB continuations) and return its payload."""
        payload = b""
        while True:
            header = self._recv_exact(4)
            length = header[0] | header[1] << 8 | header[2] << 16
            self._next_seq = (header[3] + 1) & 0xFF
            payload += self._recv_exact(length)
            if length < MAX_PAYLOAD:
                return payload

    def write_packets(self, payloads: Iterable[bytes]) -> None:
        """Frame and send several payloads with one sendall (one reply, one write)."""
        out = bytearray()
        for payload in payloads:
            out += self._frame(payload)
        self._sock.sendall(bytes(out))

    def write_packet(self, payload: bytes) -> None:
        """Frame and send one payload."""
        self.write_packets([payload])

    def _frame(self, payload: bytes) -> bytes:
        out = bytearray()
        # A payload of exactly n * 16 MiB needs a trailing empty packet.
        while True:
            chunk, payload = payload[:MAX_PAYLOAD], payload[MAX_PAYLOAD:]
            out += struct.pack("<I", len(chunk))[:3] + bytes([self._next_seq])
            out += chunk
            self._next_seq = (self._next_seq + 1) & 0xFF
            if len(chunk) < MAX_PAYLOAD:
                return bytes(out)

    def _recv_exact(self, size: int) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            chunk = self._sock.recv(size - len(buf))
            if not chunk:
                raise ConnectionClosed()
            buf += chunk
        return bytes(buf)


def lenenc_int(value: int) -> bytes:
    """Encode a length-encoded integer."""
    if value < 0xFB:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + struct.pack("<H", value)
    if value < 1 << 24:
        return b"\xfd" + struct.pack("<I", value)[:3]
    return b"\xfe" + struct.pack("<Q", value)


def lenenc_str(value: bytes) -> bytes:
    """Encode a length-encoded string."""
    return lenenc_int(len(value)) + value


def greeting_packet(
    server_version: str,
    thread_id: int,
    scramble: bytes,
    capabilities: int,
    charset: int,
    status: int,
) -> bytes:
    """Build a protocol-10 handshake as mysql-proxy 0.8 does (no plugin name)."""
    if len(scramble) != 20:
        raise ValueError("scramble must be 20 bytes")
    return (
        b"\x0a"
        + server_version.encode("ascii")
        + b"\x00"
        + struct.pack("<I", thread_id)
        + scramble[:8]
        + b"\x00"
        + struct.pack("<H", capabilities & 0xFFFF)
        + bytes([charset])
        + struct.pack("<H", status)
        + struct.pack("<H", capabilities >> 16)
        # Auth-data length is only sent with PLUGIN_AUTH; 0 otherwise. Then 10 reserved.
        + b"\x00"
        + b"\x00" * 10
        + scramble[8:]
        + b"\x00"
    )


@dataclass(frozen=True)
class HandshakeResponse:
    """What a client sent in reply to the greeting."""

    capabilities: int
    username: bytes
    auth_response: bytes
    database: Optional[bytes]


def parse_handshake_response(payload: bytes) -> HandshakeResponse:
    """Decode a HandshakeResponse41 or the pre-4.1 HandshakeResponse320."""
    try:
        caps16 = struct.unpack_from("<H", payload, 0)[0]
        if caps16 & CLIENT_PROTOCOL_41:
            caps = struct.unpack_from("<I", payload, 0)[0]
            pos = 4 + 4 + 1 + 23
        else:
            caps = caps16
            pos = 2 + 3
        username, pos = _nul_terminated(payload, pos)
        if caps & CLIENT_PROTOCOL_41 and caps & CLIENT_SECURE_CONNECTION:
            length = payload[pos]
            auth = payload[pos + 1 : pos + 1 + length]
            if len(auth) != length:
                raise ProtocolError("truncated auth response")
            pos += 1 + length
        elif pos < len(payload):
            auth, pos = _nul_terminated(payload, pos, allow_unterminated=True)
        else:
            auth = b""
        database = None
        if caps & CLIENT_CONNECT_WITH_DB and pos < len(payload):
            database, pos = _nul_terminated(payload, pos, allow_unterminated=True)
    except (IndexError, struct.error) as exc:
        raise ProtocolError(f"malformed handshake response: {exc}") from exc
    return HandshakeResponse(caps, username, auth, database)


def _nul_terminated(
    payload: bytes, pos: int, allow_unterminated: bool = False
) -> Tuple[bytes, int]:
    end = payload.find(b"\x00", pos)
    if end < 0:
        if not allow_unterminated:
            raise ProtocolError("missing NUL terminator")
        return payload[pos:], len(payload)
    return payload[pos:end], end + 1


def native_password_scramble(password: bytes, scramble: bytes) -> bytes:
    """The mysql_native_password response a client computes for ``password``.

    SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))). Computed even for an empty
    password, like mysql-proxy: an empty client response then never matches.
    """
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mask = hashlib.sha1(scramble + stage2).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask))


def ok_packet(status: int = SERVER_STATUS_AUTOCOMMIT) -> bytes:
    """An OK packet with no affected rows, no insert id and no warnings."""
    return b"\x00" + lenenc_int(0) + lenenc_int(0) + struct.pack("<HH", status, 0)


def err_packet(code: int, sqlstate: str, message: str) -> bytes:
    """A protocol-41 ERR packet."""
    return (
        b"\xff"
        + struct.pack("<H", code)
        + b"#"
        + sqlstate.encode("ascii")
        + message.encode("utf-8")
    )


def eof_packet(status: int = SERVER_STATUS_AUTOCOMMIT) -> bytes:
    """A protocol-41 EOF packet with no warnings."""
    return b"\xfe" + struct.pack("<HH", 0, status)


def column_definition(name: str, column_type: int) -> bytes:
    """A ColumnDefinition41 as mysql-proxy builds it for Lua result sets.

    mysql-proxy sends charset 8, length 32 and PRI_KEY_FLAG for every such column.
    """
    return (
        lenenc_str(b"def")
        + lenenc_str(b"")
        + lenenc_str(b"")
        + lenenc_str(b"")
        + lenenc_str(name.encode("utf-8"))
        + lenenc_str(b"")
        + b"\x0c"
        + struct.pack("<HIBHB", 8, 32, column_type, PRI_KEY_FLAG, 0)
        + b"\x00\x00"
    )


def text_row(values: Sequence[Optional[str]]) -> bytes:
    """A text-protocol row; None becomes SQL NULL."""
    out = bytearray()
    for value in values:
        out += b"\xfb" if value is None else lenenc_str(value.encode("utf-8"))
    return bytes(out)


def result_set_packets(
    columns: Sequence[Column], rows: Iterable[Sequence[Optional[str]]]
) -> list[bytes]:
    """All packets of a text result set: count, columns, EOF, rows, EOF."""
    packets = [lenenc_int(len(columns))]
    packets += [column_definition(name, ctype) for name, ctype in columns]
    packets.append(eof_packet())
    packets += [text_row(row) for row in rows]
    packets.append(eof_packet())
    return packets
