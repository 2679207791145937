"""The Atlas admin stand-in checked against /work/shared/atlas-admin.md.

Only what the real Atlas was measured to do: each documented reply and error text, the
grammar, the numbering rules, the health checker and the config file. The other tests
trust the stand-in because of these; its own helpers are not tested here.

Plain clients only: a raw-socket MySQL client written here (so greeting bytes and the
odd commands can be checked), PyMySQL, mysql-connector-python and the mariadb CLI.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import pymysql
import pytest

from orchestrator.lab.atlas_standin.standin import AtlasStandin, decrypt_password, encrypt_password

REPO = Path(__file__).resolve().parent.parent
USER = "admin"
PASSWORD = "s3cret"
HELP_MSG = "use 'SELECT * FROM help' to see the supported commands"
NOT_QUERY_MSG = "[admin] we only handle text-based queries (COM_QUERY)"
CLOSE_MSG = "need a resultset + proxy.PROXY_SEND_RESULT ... got something else"
LONG, STRING = 0x03, 0xFE
EOF_AUTOCOMMIT = b"\xfe\x00\x00\x02\x00"  # no warnings, status autocommit
STATUS_COLUMNS = [("status", STRING)]
BACKEND_COLUMNS = [("backend_ndx", LONG), ("address", STRING), ("state", STRING), ("type", STRING)]

BASE_CONFIG = f"""\
[mysql-proxy]
admin-address = 127.0.0.1:4041
admin-username = {USER}
admin-password = {PASSWORD}
proxy-backend-addresses = 10.0.0.1:3306
proxy-read-only-backend-addresses = 10.0.0.2:3306@2, 10.0.0.3:3306
"""

# --------------------------------------------------------------------------------------
# A raw MySQL client, independent of the stand-in's own wire module
# --------------------------------------------------------------------------------------


@dataclass
class Err:
    code: int
    sqlstate: str
    message: str


@dataclass
class Ok:
    payload: bytes


@dataclass
class Rows:
    columns: List[Tuple[str, int]]
    rows: List[Tuple[Optional[str], ...]]


def _lenenc(buf: bytes, pos: int) -> Tuple[int, int]:
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(buf[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def _lenenc_str(buf: bytes, pos: int) -> Tuple[bytes, int]:
    length, pos = _lenenc(buf, pos)
    return buf[pos : pos + length], pos + length


def _scramble(password: str, salt: bytes) -> bytes:
    if not password:
        return b""
    one = hashlib.sha1(password.encode()).digest()
    two = hashlib.sha1(one).digest()
    three = hashlib.sha1(salt + two).digest()
    return bytes(a ^ b for a, b in zip(one, three))


class RawClient:
    """Speaks just enough of the client protocol to poke at the admin port."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.greeting_seq, self.greeting = self.read_packet()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv(self, size: int) -> bytes:
        buf = b""
        while len(buf) < size:
            chunk = self.sock.recv(size - len(buf))
            if not chunk:
                raise EOFError("server closed the connection")
            buf += chunk
        return buf

    def read_packet(self) -> Tuple[int, bytes]:
        header = self._recv(4)
        length = int.from_bytes(header[:3], "little")
        return header[3], self._recv(length)

    def send(self, payload: bytes, seq: int) -> None:
        self.sock.sendall(len(payload).to_bytes(3, "little") + bytes([seq]) + payload)

    def salt(self) -> bytes:
        g = self.greeting
        pos = g.index(b"\x00", 1) + 1 + 4
        return g[pos : pos + 8] + g[pos + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10 : -1]

    def login(
        self, user: str = USER, password: str = PASSWORD, database: Optional[str] = None
    ) -> Tuple[int, object]:
        caps = 0x0001 | 0x0200 | 0x8000 | 0x0004 | 0x2000  # + LONG_FLAG, TRANSACTIONS
        tail = b""
        if database is not None:
            caps |= 0x0008
            tail = database.encode() + b"\x00"
        auth = _scramble(password, self.salt())
        payload = (
            struct.pack("<IIB", caps, 1 << 24, 33)
            + b"\x00" * 23
            + user.encode()
            + b"\x00"
            + bytes([len(auth)])
            + auth
            + tail
        )
        self.send(payload, 1)
        seq, reply = self.read_packet()
        return seq, self._decode_first(reply)

    def command(self, command: int, data: bytes = b"") -> object:
        self.send(bytes([command]) + data, 0)
        return self.read_reply()

    def query(self, text: str) -> object:
        return self.command(0x03, text.encode())

    def read_reply(self) -> object:
        seq, first = self.read_packet()
        assert seq == 1, "a reply to a command starts at sequence id 1"
        decoded = self._decode_first(first)
        if not isinstance(decoded, int):
            return decoded
        columns = []
        for _ in range(decoded):
            _, coldef = self.read_packet()
            pos = 0
            fields = []
            for _ in range(6):
                value, pos = _lenenc_str(coldef, pos)
                fields.append(value)
            assert coldef[pos] == 0x0C
            charset, _length, ctype = struct.unpack_from("<HIB", coldef, pos + 1)
            assert charset == 8 and fields[0] == b"def"
            columns.append((fields[4].decode(), ctype))
        _, eof = self.read_packet()
        assert eof == EOF_AUTOCOMMIT
        rows = []
        while True:
            _, packet = self.read_packet()
            if packet[0] == 0xFE and len(packet) == 5:
                assert packet == EOF_AUTOCOMMIT
                return Rows(columns, rows)
            pos, row = 0, []
            for _ in columns:
                if packet[pos] == 0xFB:
                    row.append(None)
                    pos += 1
                else:
                    value, pos = _lenenc_str(packet, pos)
                    row.append(value.decode())
            rows.append(tuple(row))

    @staticmethod
    def _decode_first(packet: bytes) -> object:
        if packet[0] == 0xFF:
            code = struct.unpack_from("<H", packet, 1)[0]
            assert packet[3:4] == b"#", packet
            return Err(code, packet[4:9].decode(), packet[9:].decode())
        if packet[0] == 0x00:
            return Ok(packet)
        return _lenenc(packet, 0)[0]

    def is_closed(self, timeout: float = 3.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------


@pytest.fixture
def make_standin(tmp_path: Path) -> Callable[..., AtlasStandin]:
    started: List[AtlasStandin] = []

    def make(
        config: str = BASE_CONFIG, check_interval: Optional[float] = None, start: bool = True
    ) -> AtlasStandin:
        path = tmp_path / "atlas.cnf"
        path.write_text(config)
        standin = AtlasStandin(str(path), host="127.0.0.1", port=0, check_interval=check_interval)
        started.append(standin)
        return standin.start() if start else standin

    yield make
    for standin in started:
        standin.stop()


@pytest.fixture
def standin(make_standin: Callable[..., AtlasStandin]) -> AtlasStandin:
    return make_standin()


@pytest.fixture
def client(standin: AtlasStandin) -> RawClient:
    with RawClient(standin.address[1]) as raw:
        seq, reply = raw.login()
        assert isinstance(reply, Ok)
        yield raw


def rows_of(reply: object) -> List[tuple]:
    assert isinstance(reply, Rows), reply
    return reply.rows


def assert_status(reply: object) -> None:
    assert isinstance(reply, Rows), reply
    assert reply.columns == STATUS_COLUMNS and reply.rows == []


def assert_error(reply: object, message: str) -> None:
    assert reply == Err(1105, "07000", message)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


class FakeMySQL:
    """A listener that greets like a MySQL server (or sends ``banner``) and hangs up."""

    def __init__(self, banner: Optional[bytes] = None) -> None:
        greeting = b"\x0a5.5.5-10.11.0-MariaDB\x00" + b"\x00" * 40
        self.banner = banner or len(greeting).to_bytes(3, "little") + b"\x00" + greeting
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.sendall(self.banner)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed
        self.sock.close()
        self._thread.join(timeout=2)


def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"127.0.0.1:{port}"


# --------------------------------------------------------------------------------------
# Connection: greeting, auth, non-query commands
# --------------------------------------------------------------------------------------


def test_greeting_fields(standin: AtlasStandin) -> None:
    with RawClient(standin.address[1]) as one, RawClient(standin.address[1]) as two:
        g = one.greeting
        assert one.greeting_seq == 0
        assert g[0] == 10
        end = g.index(b"\x00", 1)
        assert g[1:end] == b"5.0.99-agent-admin"
        pos = end + 1
        assert struct.unpack_from("<I", g, pos)[0] == 1
        assert struct.unpack_from("<I", two.greeting, pos)[0] == 1  # always 1
        pos += 4 + 8
        assert g[pos] == 0
        caps_low, charset, status, caps_high = struct.unpack_from("<HBHH", g, pos + 1)
        assert caps_low == 0x0001 | 0x0200 | 0x8000 and caps_high == 0
        assert charset == 8 and status == 0x0002
        assert g[pos + 8 : pos + 19] == b"\x00" * 11  # auth-data length 0 + 10 reserved
        assert len(g) == pos + 19 + 13 and g[-1] == 0
        salt = one.salt()
        assert len(salt) == 20 and all(33 <= b <= 126 for b in salt)
        assert salt != two.salt()


def test_login_ok_and_database_name_ignored(standin: AtlasStandin) -> None:
    with RawClient(standin.address[1]) as raw:
        seq, reply = raw.login(database="no_such_database")
        assert seq == 2
        assert reply == Ok(b"\x00\x00\x00\x02\x00\x00\x00")
        assert rows_of(raw.query("SELECT VERSION")) == [("2.2.1",)]


@pytest.mark.parametrize(
    "user, password, message",
    [
        ("nobody", PASSWORD, "unknown user"),
        ("Admin", PASSWORD, "unknown user"),  # user names are case-sensitive
        (USER, "wrong", "password doesn't match"),
    ],
)
def test_auth_failures_close(
    standin: AtlasStandin, user: str, password: str, message: str
) -> None:
    with RawClient(standin.address[1]) as raw:
        seq, reply = raw.login(user, password)
        assert seq == 2
        assert reply == Err(1045, "28000", message)
        assert raw.is_closed()


@pytest.mark.parametrize(
    "command, data",
    [(0x0E, b""), (0x02, b"somedb"), (0x01, b"")],
    ids=["COM_PING", "COM_INIT_DB", "COM_QUIT"],
)
def test_only_com_query_is_handled(client: RawClient, command: int, data: bytes) -> None:
    assert_error(client.command(command, data), NOT_QUERY_MSG)
    assert_error(client.command(command, data), NOT_QUERY_MSG)
    assert rows_of(client.query("SELECT VERSION")) == [("2.2.1",)]


def test_empty_query_errors_then_closes(client: RawClient) -> None:
    assert_error(client.query(""), CLOSE_MSG)
    assert client.is_closed()


# --------------------------------------------------------------------------------------
# Grammar
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        # anchored: no trailing ";", no leading or trailing whitespace, one statement
        "SELECT * FROM backends;",
        "SELECT * FROM backends ",
        " SELECT * FROM backends",
        "SELECT * FROM backends; SELECT VERSION",
        # whitespace between tokens is required
        "SELECT *FROM backends",
        # no column lists, WHERE, LIMIT or backticks
        "SELECT backend_ndx FROM backends",
        "SELECT * FROM backends WHERE backend_ndx = 1",
        "SELECT * FROM backends LIMIT 1",
        "SELECT * FROM `backends`",
        # what drivers send after login
        "SET NAMES utf8mb4",
        "SET AUTOCOMMIT = 0",
        "SET @@session.autocommit = 1",
        "SET sql_mode = ''",
        "SELECT @@version_comment LIMIT 1",
        "COMMIT",
        "SHOW WARNINGS",
        # ADD: an unquoted dotted IPv4 address and a 1-5 digit port only
        "ADD SLAVE '10.0.0.4:3306'",
        "ADD SLAVE db4:3306",
        "ADD SLAVE 10.0.0.4:3306@2",
        "ADD SLAVE 10.0.0.4:3306,10.0.0.5:3306",
        "ADD SLAVE 10.0.0.4",
        "ADD SLAVE 10.0.0.4:123456",
        # REMOVE BACKEND: -1, words or a missing n
        "REMOVE BACKEND -1",
        "REMOVE BACKEND one",
        "REMOVE BACKEND",
    ],
)
def test_unknown_commands(standin: AtlasStandin, client: RawClient, query: str) -> None:
    before = standin.backends()
    assert_error(client.query(query), HELP_MSG)
    assert rows_of(client.query("SELECT VERSION")) == [("2.2.1",)]
    assert standin.backends() == before


@pytest.mark.parametrize(
    "query",
    [
        "SeLeCt * FrOm BaCkEnDs",
        "SELECT\n*\r\nFROM \t backends",
    ],
)
def test_case_and_whitespace_runs_accepted(client: RawClient, query: str) -> None:
    reply = client.query(query)
    assert isinstance(reply, Rows) and reply.columns == BACKEND_COLUMNS
    assert len(reply.rows) == 3


# --------------------------------------------------------------------------------------
# Commands and replies
# --------------------------------------------------------------------------------------


def test_help(client: RawClient) -> None:
    reply = client.query("SELECT * FROM help")
    assert isinstance(reply, Rows)
    assert reply.columns == [("command", STRING), ("description", STRING)]
    assert [row[0] for row in reply.rows] == [
        "SELECT * FROM help",
        "SELECT * FROM backends",
        "SET OFFLINE $backend_id",
        "SET ONLINE $backend_id",
        "ADD MASTER $backend",
        "ADD SLAVE $backend",
        "REMOVE BACKEND $backend_id",
        "SELECT * FROM clients",
        "ADD CLIENT $client",
        "REMOVE CLIENT $client",
        "SELECT * FROM pwds",
        "ADD PWD $pwd",
        "ADD ENPWD $pwd",
        "REMOVE PWD $pwd",
        "SAVE CONFIG",
        "SELECT VERSION",
    ]
    assert all(row[1] for row in reply.rows)


def test_version(client: RawClient) -> None:
    reply = client.query("SELECT VERSION")
    assert isinstance(reply, Rows)
    assert reply.columns == [("version", STRING)] and reply.rows == [("2.2.1",)]


def test_backends_from_config(client: RawClient) -> None:
    reply = client.query("SELECT * FROM backends")
    assert isinstance(reply, Rows)
    assert reply.columns == BACKEND_COLUMNS
    # Weights never show; everything starts unknown until the health check runs.
    assert reply.rows == [
        ("1", "10.0.0.1:3306", "unknown", "rw"),
        ("2", "10.0.0.2:3306", "unknown", "ro"),
        ("3", "10.0.0.3:3306", "unknown", "ro"),
    ]


def test_add_slave_appends_and_add_master_swaps_with_first_slave(
    standin: AtlasStandin, client: RawClient
) -> None:
    assert_status(client.query("ADD MASTER 10.0.0.4:3306"))
    assert rows_of(client.query("SELECT * FROM backends")) == [
        ("1", "10.0.0.1:3306", "unknown", "rw"),
        ("2", "10.0.0.4:3306", "unknown", "rw"),
        ("3", "10.0.0.3:3306", "unknown", "ro"),
        ("4", "10.0.0.2:3306", "unknown", "ro"),
    ]
    assert_status(client.query("ADD SLAVE 10.0.0.5:3306"))
    assert standin.backends()[-1] == (5, "10.0.0.5:3306", "unknown", "ro")


def test_add_master_without_slaves_appends(make_standin: Callable[..., AtlasStandin]) -> None:
    standin = make_standin(BASE_CONFIG.replace("10.0.0.2:3306@2, 10.0.0.3:3306", ""))
    with RawClient(standin.address[1]) as raw:
        raw.login()
        assert_status(raw.query("ADD MASTER 10.0.0.4:3306"))
    assert standin.backends() == [
        (1, "10.0.0.1:3306", "unknown", "rw"),
        (2, "10.0.0.4:3306", "unknown", "rw"),
    ]


def test_duplicates_ignored_other_type_added(
    standin: AtlasStandin, client: RawClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.lab.atlas_standin.standin")
    before = standin.backends()
    assert_status(client.query("ADD SLAVE 10.0.0.2:3306"))
    assert_status(client.query("ADD MASTER 10.0.0.1:3306"))
    assert standin.backends() == before
    assert "backend 10.0.0.2:3306 is already known!" in caplog.text
    assert "backend 10.0.0.1:3306 is already known!" in caplog.text
    assert_status(client.query("ADD MASTER 10.0.0.2:3306"))
    assert standin.backends() == [
        (1, "10.0.0.1:3306", "unknown", "rw"),
        (2, "10.0.0.2:3306", "unknown", "rw"),
        (3, "10.0.0.3:3306", "unknown", "ro"),
        (4, "10.0.0.2:3306", "unknown", "ro"),
    ]


def test_remove_backend_shifts_and_checks_range(
    standin: AtlasStandin, client: RawClient
) -> None:
    assert_error(client.query("REMOVE BACKEND 0"), "invalid backend_id")
    assert_error(client.query("REMOVE BACKEND 4"), "invalid backend_id")
    assert_status(client.query("REMOVE BACKEND 2"))
    assert standin.backends() == [
        (1, "10.0.0.1:3306", "unknown", "rw"),
        (2, "10.0.0.3:3306", "unknown", "ro"),
    ]
    # Nothing prevents removing the last master.
    assert_status(client.query("REMOVE BACKEND 1"))
    assert_status(client.query("REMOVE BACKEND 1"))
    assert rows_of(client.query("SELECT * FROM backends")) == []
    assert_error(client.query("REMOVE BACKEND 1"), "invalid backend_id")


def test_set_offline_and_online(standin: AtlasStandin, client: RawClient) -> None:
    reply = client.query("SET OFFLINE 2")
    assert isinstance(reply, Rows) and reply.columns == BACKEND_COLUMNS
    assert reply.rows == [("2", "10.0.0.2:3306", "offline", "ro")]
    assert standin.backends()[1][2] == "offline"
    assert rows_of(client.query("SET OFFLINE 2")) == [("2", "10.0.0.2:3306", "offline", "ro")]
    assert rows_of(client.query("set online 2")) == [("2", "10.0.0.2:3306", "unknown", "ro")]
    standin.set_state("10.0.0.1:3306", "up")
    assert rows_of(client.query("SET ONLINE 1")) == [("1", "10.0.0.1:3306", "unknown", "rw")]


@pytest.mark.parametrize(
    "query, message",
    [
        ("SET OFFLINE 4", "backend id is not exsit"),
        ("SET ONLINE 99", "backend id is not exsit"),
        ("SET DOWN 1", "invalid operation"),
        ("SET DOWN 9", "backend id is not exsit"),  # the number is checked first
    ],
)
def test_set_errors(standin: AtlasStandin, client: RawClient, query: str, message: str) -> None:
    before = standin.backends()
    assert_error(client.query(query), message)
    assert standin.backends() == before


def test_clients(make_standin: Callable[..., AtlasStandin]) -> None:
    standin = make_standin(BASE_CONFIG + "client-ips = 127.0.0.1, 10.0.0.0\n")
    with RawClient(standin.address[1]) as raw:
        raw.login()
        reply = raw.query("SELECT * FROM clients")
        assert isinstance(reply, Rows) and reply.columns == [("client", STRING)]
        assert reply.rows == [("127.0.0.1",), ("10.0.0.0",)]
        assert_status(raw.query("ADD CLIENT 192.168.1.7"))
        assert_error(raw.query("ADD CLIENT 192.168.1.7"), "this client is exist")
        assert_error(raw.query("REMOVE CLIENT 192.168.1.8"), "this client is NOT exist")
        assert_status(raw.query("REMOVE CLIENT 127.0.0.1"))
        assert rows_of(raw.query("SELECT * FROM clients")) == [("10.0.0.0",), ("192.168.1.7",)]


def test_clients_empty_without_client_ips(client: RawClient) -> None:
    assert rows_of(client.query("SELECT * FROM clients")) == []


def test_pwds(make_standin: Callable[..., AtlasStandin]) -> None:
    app_enc = encrypt_password("app-pass")
    standin = make_standin(BASE_CONFIG + f"pwds = app:{app_enc}\n")
    with RawClient(standin.address[1]) as raw:
        raw.login()
        reply = raw.query("SELECT * FROM pwds")
        assert isinstance(reply, Rows)
        assert reply.columns == [("username", STRING), ("password", STRING)]
        assert reply.rows == [("app", app_enc)]
        assert_status(raw.query("ADD PWD Bob:Secret word"))
        assert_error(raw.query("ADD PWD Bob:other"), "this user is exist")
        assert_error(raw.query("ADD ENPWD app:" + app_enc), "this user is exist")
        # The user is checked before the password is decrypted.
        assert_error(raw.query("ADD ENPWD app:not-base64!"), "this user is exist")
        assert_error(raw.query("ADD ENPWD carol:not-base64!"), "failed to decrypt")
        assert_error(raw.query("ADD ENPWD carol:QUJD"), "failed to decrypt")
        carol_enc = encrypt_password("carol-pass")
        assert_status(raw.query(f"ADD ENPWD carol:{carol_enc}"))
        assert_error(raw.query("REMOVE PWD nobody"), "this user is NOT exist")
        assert_error(raw.query("REMOVE PWD bob"), "this user is NOT exist")  # case kept
        rows = rows_of(raw.query("SELECT * FROM pwds"))
        assert [r[0] for r in rows] == ["app", "Bob", "carol"]
        assert decrypt_password(rows[1][1]) == "Secret word"
        assert rows[2][1] == carol_enc
        assert_status(raw.query("REMOVE PWD app"))
        assert [r[0] for r in rows_of(raw.query("SELECT * FROM pwds"))] == ["Bob", "carol"]


# --------------------------------------------------------------------------------------
# Health checker
# --------------------------------------------------------------------------------------


def test_health_checker(make_standin: Callable[..., AtlasStandin]) -> None:
    alive = FakeMySQL()
    not_mysql = FakeMySQL(banner=b"HTTP/1.0 400 Bad Request\r\n\r\n")
    kept_offline = FakeMySQL()
    dead = closed_port()
    try:
        config = BASE_CONFIG.replace("10.0.0.1:3306", alive.address).replace(
            "10.0.0.2:3306@2, 10.0.0.3:3306",
            f"{dead}, {not_mysql.address}, {kept_offline.address}",
        )
        standin = make_standin(config, check_interval=0.05, start=False)
        standin.set_state(kept_offline.address, "offline")
        standin.start()
        wait_for(lambda: [b[2] for b in standin.backends()] == ["up", "down", "down", "offline"])
        # up is never re-checked, even once the server is gone; down keeps being probed.
        probes = alive.connections
        alive.close()
        time.sleep(0.4)
        assert standin.backends()[0][2] == "up" and alive.connections == probes
        assert kept_offline.connections == 0 and standin.backends()[3][2] == "offline"
        with RawClient(standin.address[1]) as raw:
            raw.login()
            assert rows_of(raw.query("SET ONLINE 4"))[0][2] == "unknown"
        wait_for(lambda: standin.backends()[3][2] == "up")
        assert kept_offline.connections >= 1
        standin.set_state(kept_offline.address, "down")
        wait_for(lambda: standin.backends()[3][2] == "up")
        assert kept_offline.connections >= 2
    finally:
        for fake in (alive, not_mysql, kept_offline):
            fake.close()


# --------------------------------------------------------------------------------------
# Connections: wait-timeout, concurrency, stop, logs
# --------------------------------------------------------------------------------------


def test_wait_timeout_closes_idle_connections(make_standin: Callable[..., AtlasStandin]) -> None:
    standin = make_standin(BASE_CONFIG + "wait-timeout = 1\n")
    with RawClient(standin.address[1]) as raw:
        raw.login()
        time.sleep(0.6)
        assert rows_of(raw.query("SELECT VERSION")) == [("2.2.1",)]
        time.sleep(0.6)  # 1.2 s since login, 0.6 s idle: still open
        assert rows_of(raw.query("SELECT VERSION")) == [("2.2.1",)]
        started = time.monotonic()
        assert raw.is_closed(timeout=3.0)
        assert 0.7 < time.monotonic() - started < 2.5


def test_concurrent_connections(standin: AtlasStandin) -> None:
    clients = [RawClient(standin.address[1]) for _ in range(8)]
    errors: List[BaseException] = []

    def work(index: int, raw: RawClient) -> None:
        try:
            for step in range(5):
                assert_status(raw.query(f"ADD SLAVE 10.1.{index}.{step}:3306"))
                assert len(rows_of(raw.query("SELECT * FROM backends"))) >= 3
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        for raw in clients:
            assert isinstance(raw.login()[1], Ok)
        threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert not errors
        backends = standin.backends()
        assert len(backends) == 3 + 8 * 5
        assert [b[0] for b in backends] == list(range(1, 44))
        assert len({b[1] for b in backends}) == 43
    finally:
        for raw in clients:
            raw.close()


# --------------------------------------------------------------------------------------
# Config file: reading, SAVE CONFIG, never re-read
# --------------------------------------------------------------------------------------


SAVE_INPUT = f"""\
[mysql-proxy]
# admin interface
admin-username = {USER}
admin-password={PASSWORD}
admin-address   =   127.0.0.1:4041

# backends; the weight goes away
proxy-backend-addresses = 10.0.0.1:3306
proxy-read-only-backend-addresses = 10.0.0.2:3306@2, 10.0.0.3:3306@1
  log-level = message
daemon = true
# end
"""


def test_save_config_rewrites_file(make_standin: Callable[..., AtlasStandin]) -> None:
    standin = make_standin(SAVE_INPUT)
    path = Path(standin.config_path)
    inode = path.stat().st_ino
    with RawClient(standin.address[1]) as raw:
        raw.login()
        assert_status(raw.query("ADD SLAVE 10.0.0.4:3306"))
        assert_status(raw.query("ADD CLIENT 192.168.1.7"))
        assert_status(raw.query("ADD PWD app:app-pass"))
        assert_status(raw.query("SAVE CONFIG"))
    assert path.read_text() == f"""\
[mysql-proxy]
# admin interface
admin-username={USER}
admin-password={PASSWORD}
admin-address=127.0.0.1:4041

# backends; the weight goes away
proxy-backend-addresses=10.0.0.1:3306
proxy-read-only-backend-addresses=10.0.0.2:3306,10.0.0.3:3306,10.0.0.4:3306
log-level=message
daemon=true
# end
client-ips=192.168.1.7
pwds=app:{encrypt_password("app-pass")}
"""
    assert path.stat().st_ino != inode  # temp file + rename
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_save_config_appends_empty_keys_and_keeps_other_groups(
    make_standin: Callable[..., AtlasStandin],
) -> None:
    config = "# top comment\n" + BASE_CONFIG + "\n[other]\nsome key = some value\n"
    standin = make_standin(config)
    with RawClient(standin.address[1]) as raw:
        raw.login()
        assert_status(raw.query("REMOVE BACKEND 3"))
        assert_status(raw.query("REMOVE BACKEND 2"))
        assert_status(raw.query("REMOVE BACKEND 1"))
        assert_status(raw.query("save config"))
    text = Path(standin.config_path).read_text()
    lines = text.splitlines()
    assert lines[0] == "# top comment"
    proxy = lines[lines.index("[mysql-proxy]") : lines.index("[other]")]
    for key in ("proxy-backend-addresses", "proxy-read-only-backend-addresses",
                "client-ips", "pwds"):
        assert f"{key}=" in proxy
    assert "some key=some value" in lines[lines.index("[other]"):]
    assert "admin-username=admin" in proxy and "@" not in text and " = " not in text


def test_config_is_never_reread(standin: AtlasStandin) -> None:
    path = Path(standin.config_path)
    path.write_text(
        BASE_CONFIG.replace(PASSWORD, "changed")
        .replace("10.0.0.1:3306", "10.0.0.9:3306")
        + "log-level = debug\n"
    )
    with RawClient(standin.address[1]) as raw:
        assert raw.login(USER, "changed")[1] == Err(1045, "28000", "password doesn't match")
    with RawClient(standin.address[1]) as raw:
        assert isinstance(raw.login()[1], Ok)
        assert rows_of(raw.query("SELECT * FROM backends"))[0][1] == "10.0.0.1:3306"
        assert_status(raw.query("SAVE CONFIG"))
    text = path.read_text()
    # Hand edits to the four saved keys are overwritten; other hand edits survive.
    assert "proxy-backend-addresses=10.0.0.1:3306\n" in text
    assert "admin-password=changed\n" in text and "log-level=debug\n" in text


def test_defaults_come_from_admin_address(tmp_path: Path) -> None:
    path = tmp_path / "atlas.cnf"
    path.write_text(BASE_CONFIG.replace("127.0.0.1:4041", "127.0.0.1:0"))
    with AtlasStandin(str(path), check_interval=None) as standin:
        assert standin.address[0] == "127.0.0.1" and standin.address[1] > 0
        with RawClient(standin.address[1]) as raw:
            assert isinstance(raw.login()[1], Ok)


# --------------------------------------------------------------------------------------
# Real clients
# --------------------------------------------------------------------------------------


class AdminConnection(pymysql.connections.Connection):
    """PyMySQL minus the post-login SET NAMES, which the admin port rejects."""

    def set_character_set(self, charset: str, collation: Optional[str] = None) -> None:
        self.charset = charset


def test_stock_pymysql_connect_fails(standin: AtlasStandin) -> None:
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        pymysql.connect(host="127.0.0.1", port=standin.address[1], user=USER, password=PASSWORD)
    assert excinfo.value.args == (1105, HELP_MSG)
    assert standin.commands[-1].startswith("SET NAMES")


def test_pymysql_without_post_login_statements(standin: AtlasStandin) -> None:
    conn = AdminConnection(
        host="127.0.0.1", port=standin.address[1], user=USER, password=PASSWORD,
        autocommit=None, database="ignored",
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT * FROM backends")
            assert cursor.fetchall() == (
                (1, "10.0.0.1:3306", "unknown", "rw"),
                (2, "10.0.0.2:3306", "unknown", "ro"),
                (3, "10.0.0.3:3306", "unknown", "ro"),
            )
            names = [d[0] for d in cursor.description]
            assert names == ["backend_ndx", "address", "state", "type"]
            assert cursor.execute("ADD SLAVE 10.0.0.4:3306") == 0
            assert cursor.fetchall() == ()
            with pytest.raises(pymysql.err.OperationalError) as excinfo:
                cursor.execute("REMOVE BACKEND 9")
            assert excinfo.value.args == (1105, "invalid backend_id")
            with pytest.raises(pymysql.err.OperationalError):
                conn.ping(reconnect=False)
    finally:
        conn.close()
    assert standin.commands == ["SELECT * FROM backends", "ADD SLAVE 10.0.0.4:3306",
                                "REMOVE BACKEND 9"]


def test_stock_mysql_connector_fails(standin: AtlasStandin) -> None:
    connector = pytest.importorskip("mysql.connector")
    with pytest.raises(connector.Error) as excinfo:
        connector.connect(
            host="127.0.0.1", port=standin.address[1], user=USER, password=PASSWORD,
            use_pure=True, connection_timeout=5,
        )
    assert excinfo.value.errno == 1105


def _mariadb(port: int, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mariadb", "--no-defaults", "-h127.0.0.1", "-P", str(port), f"-u{USER}", *args],
        env=dict(os.environ, MYSQL_PWD=password),
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.skipif(shutil.which("mariadb") is None, reason="mariadb CLI not installed")
def test_mariadb_cli(standin: AtlasStandin) -> None:
    port = standin.address[1]
    result = _mariadb(port, "-e", "SELECT * FROM backends")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "backend_ndx\taddress\tstate\ttype",
        "1\t10.0.0.1:3306\tunknown\trw",
        "2\t10.0.0.2:3306\tunknown\tro",
        "3\t10.0.0.3:3306\tunknown\tro",
    ]
    result = _mariadb(port, "-e", "ADD SLAVE 10.0.0.4:3306")
    assert result.returncode == 0 and standin.backends()[-1][1] == "10.0.0.4:3306"
    result = _mariadb(port, "-e", "SELECT 1")
    assert result.returncode == 1 and "ERROR 1105 (07000)" in result.stderr
    assert HELP_MSG in result.stderr
    result = _mariadb(port, "-e", "SELECT VERSION", password="wrong")
    assert result.returncode == 1 and "ERROR 1045 (28000)" in result.stderr
    assert "password doesn't match" in result.stderr
    result = _mariadb(port, "-Dsomedb", "-e", "SELECT VERSION")  # -D does not work
    assert result.returncode == 1


# --------------------------------------------------------------------------------------
# Foreground entry point
# --------------------------------------------------------------------------------------


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "atlas.cnf"
    config.write_text(BASE_CONFIG)
    pid_file = tmp_path / "atlas.pid"
    port = int(closed_port().rsplit(":", 1)[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.lab.atlas_standin.standin", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port), "--pid-file", str(pid_file)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", timeout=10)
        assert int(pid_file.read_text()) == proc.pid
        with RawClient(port) as raw:
            assert isinstance(raw.login()[1], Ok)
            assert len(rows_of(raw.query("SELECT * FROM backends"))) == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not pid_file.exists()
        assert "listening on 127.0.0.1:%d" % port in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


