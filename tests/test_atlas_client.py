"""AtlasAdmin against the Atlas stand-in (orchestrator.lab.atlas_standin), which behaves
like the measured admin port of Atlas 2.2.1 (/work/shared/atlas-admin.md)."""

import re
import socket
import time

import pymysql
import pytest

from orchestrator.atlas import client
from orchestrator.atlas.client import AtlasAdmin, Backend, parse_address
from orchestrator.atlas.configfile import read_ro_backends
from orchestrator.lab.atlas_standin.standin import AtlasStandin
from orchestrator.errors import AtlasError

USER = "admin"
PASSWORD = "s3cret-Adm1n-pw"
MASTER = "10.0.0.1:3306"
R2, R3, R4, R5 = "10.0.0.2:3306", "10.0.0.3:3306", "10.0.0.4:3306", "10.0.0.5:3306"
NEW = "10.0.0.9:3306"


def write_config(tmp_path, rw=(MASTER,), ro=(R2, R3), extra=""):
    path = tmp_path / "atlas.cnf"
    path.write_text(
        "[mysql-proxy]\n"
        "# test config\n"
        f"admin-username = {USER}\n"
        f"admin-password = {PASSWORD}\n"
        f"proxy-backend-addresses = {','.join(rw)}\n"
        f"proxy-read-only-backend-addresses = {','.join(ro)}\n"
        "pwds = app:c2VjcmV0\n"
        + extra
    )
    return str(path)


def start_standin(config):
    return AtlasStandin(config, host="127.0.0.1", port=0, check_interval=None).start()


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path, ro=(R2, R3, R4))


@pytest.fixture
def atlas(config):
    standin = start_standin(config)
    yield standin
    standin.stop()


@pytest.fixture
def admin(atlas):
    admin = AtlasAdmin(*atlas.address, USER, PASSWORD, timeout=2.0, name="test")
    yield admin
    admin.close()


def listed(atlas):
    """(address, type) in ndx order, checking the numbering is 1..n."""
    rows = atlas.backends()
    assert [ndx for ndx, *_ in rows] == list(range(1, len(rows) + 1))
    return [(address, type_) for _, address, _, type_ in rows]


def unused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- connecting ---------------------------------------------------------------------


def test_stock_pymysql_fails_where_atlas_admin_works(atlas, admin):
    # A stock connect sends SET NAMES (PyMySQL >= 1.1) or an autocommit statement (1.0)
    # after login, which the admin port rejects: this is why the client exists.
    host, port = atlas.address
    with pytest.raises(pymysql.MySQLError, match="SELECT \\* FROM help"):
        pymysql.connect(host=host, port=port, user=USER, password=PASSWORD)
    assert atlas.commands  # the stock client did send something besides admin commands
    atlas.commands.clear()

    assert [b.address for b in admin.backends()] == [MASTER, R2, R3, R4]
    admin.close()
    assert atlas.commands == ["SELECT * FROM backends"]


def test_context_manager_connects_and_closes_without_sending_anything(atlas):
    with AtlasAdmin(*atlas.address, USER, PASSWORD, name="test") as admin:
        assert admin._conn is not None
    assert admin._conn is None
    assert atlas.commands == []


def test_only_com_query_packets_are_written_and_close_sends_no_quit(atlas, monkeypatch):
    written = []
    real_write = client._AdminConnection._write_bytes

    def recording_write(self, data):
        written.append(bytes(data))
        real_write(self, data)

    monkeypatch.setattr(client._AdminConnection, "_write_bytes", recording_write)
    admin = AtlasAdmin(*atlas.address, USER, PASSWORD)
    admin.backends()
    admin.backends()
    before_close = len(written)
    admin.close()
    assert len(written) == before_close
    # A command packet starts a sequence (id 0); its first payload byte is the command.
    commands = [packet[4] for packet in written if packet[3] == 0]
    assert commands == [pymysql.constants.COMMAND.COM_QUERY] * 2


def test_wrong_password_is_an_atlas_error_without_the_password(atlas):
    wrong = "Wr0ng-Pa55word"
    admin = AtlasAdmin(*atlas.address, USER, wrong, name="a1")
    with pytest.raises(AtlasError) as caught:
        admin.connect()
    message = str(caught.value)
    assert message.startswith(f"atlas a1 at {atlas.address[0]}:{atlas.address[1]}: ")
    assert "authentication failed" in message and "password doesn't match" in message
    assert wrong not in message and PASSWORD not in message
    assert wrong not in repr(admin)


def test_wrong_user_is_an_atlas_error(atlas):
    with pytest.raises(AtlasError, match="authentication failed for admin user 'root'.*unknown user"):
        AtlasAdmin(*atlas.address, "root", PASSWORD).backends()


def test_password_is_not_logged(atlas, caplog):
    caplog.set_level("DEBUG")
    with AtlasAdmin(*atlas.address, USER, PASSWORD) as admin:
        admin.add_slave(NEW)
        admin.backends()
    with pytest.raises(AtlasError):
        AtlasAdmin(*atlas.address, USER, PASSWORD + "x").connect()
    assert caplog.records
    assert PASSWORD not in caplog.text


def test_atlas_down_fails_fast():
    admin = AtlasAdmin("127.0.0.1", unused_port(), USER, PASSWORD, timeout=2.0, name="gone")
    started = time.monotonic()
    with pytest.raises(AtlasError, match=r"^atlas gone at 127\.0\.0\.1:\d+: unreachable: .*refused"):
        admin.backends()
    assert time.monotonic() - started < 1.0


def test_a_restarting_atlas_is_tried_again_a_bounded_number_of_times(config):
    """The hook's Atlas steps: refused at first, Atlas back right after that attempt, connected
    by the next one; an Atlas that stays down costs the attempts' waits, then an AtlasError."""
    from orchestrator.atlas import apply

    port = unused_port()
    admin = AtlasAdmin("127.0.0.1", port, USER, PASSWORD, timeout=2.0, name="restarting")
    attempts, started = [], []
    connect = admin.connect

    def connect_then_atlas_comes_back():
        attempts.append(time.monotonic())
        try:
            connect()
        finally:
            if not started:
                started.append(AtlasStandin(config, host="127.0.0.1", port=port, check_interval=None).start())

    admin.connect = connect_then_atlas_comes_back
    try:
        apply._connect(admin)
        assert len(attempts) == 2 and attempts[1] - attempts[0] >= apply.CONNECT_WAIT, attempts
        assert admin.backends()
    finally:
        admin.close()
        for standin in started:
            standin.stop()
    gone = AtlasAdmin("127.0.0.1", unused_port(), USER, PASSWORD, timeout=2.0, name="gone")
    began = time.monotonic()
    with pytest.raises(AtlasError, match="unreachable"):
        apply._connect(gone)
    assert (apply.CONNECT_ATTEMPTS - 1) * apply.CONNECT_WAIT <= time.monotonic() - began < 2.0
    with pytest.raises(AtlasError, match="unreachable"):
        apply._connect(gone, 1)


def test_silent_atlas_times_out():
    # Accepts TCP but never sends a greeting (hung process): bounded by the timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        admin = AtlasAdmin(*listener.getsockname(), USER, PASSWORD, timeout=0.3, name="hung")
        started = time.monotonic()
        with pytest.raises(AtlasError, match="^atlas hung at .*: unreachable: "):
            admin.connect()
        assert time.monotonic() - started < 2.0


def test_stand_in_stopped_mid_session_is_unreachable(config):
    atlas = start_standin(config)
    admin = AtlasAdmin(*atlas.address, USER, PASSWORD, timeout=1.0, name="t")
    admin.backends()
    atlas.stop()
    with pytest.raises(AtlasError, match="^atlas t at .*: unreachable: "):
        admin.backends()


def test_idle_connection_closed_by_wait_timeout_is_reopened_for_reads(tmp_path):
    atlas = start_standin(write_config(tmp_path, extra="wait-timeout = 1\n"))
    try:
        with AtlasAdmin(*atlas.address, USER, PASSWORD) as admin:
            admin.backends()
            time.sleep(1.3)  # Atlas closes the idle admin connection
            assert [b.address for b in admin.backends()] == [MASTER, R2, R3]
    finally:
        atlas.stop()


def test_nothing_but_admin_commands_is_ever_sent(atlas, admin):
    admin.backends()
    conn = admin._conn
    attempts = [
        lambda: conn.ping(reconnect=False),  # what a pool or a careless caller would do
        lambda: conn.select_db("test"),
        lambda: conn.query("SET NAMES utf8mb4"),
        lambda: conn.query("SELECT * FROM backends;"),
        lambda: conn.query(""),
        conn.commit,
    ]
    for attempt in attempts:
        with pytest.raises(client._NotAnAdminCommand):
            attempt()
    assert atlas.commands == ["SELECT * FROM backends"]
    assert admin.backends()  # the connection is still fine


# --- reading ------------------------------------------------------------------------


def test_backends_are_read_by_column_name(atlas, admin):
    assert admin.backends() == (
        Backend(1, MASTER, "unknown", "rw"),
        Backend(2, R2, "unknown", "ro"),
        Backend(3, R3, "unknown", "ro"),
        Backend(4, R4, "unknown", "ro"),
    )
    atlas.set_state(R3, "up")
    assert admin.backends()[2] == Backend(3, R3, "up", "ro")


# --- add_slave ----------------------------------------------------------------------


def test_add_slave_appends_and_is_idempotent(atlas, admin):
    assert admin.add_slave(NEW) is True
    assert listed(atlas)[-1] == (NEW, "ro")
    assert admin.add_slave(NEW) is False
    assert admin.add_slave(" 10.0.0.9:03306") is False  # same address, other spelling
    assert atlas.mutating_commands() == [f"ADD SLAVE {NEW}"]
    assert listed(atlas).count((NEW, "ro")) == 1


def test_add_slave_of_the_master_address_adds_an_ro_entry(atlas, admin):
    admin.add_slave(MASTER)
    assert listed(atlas) == [(MASTER, "rw"), (R2, "ro"), (R3, "ro"), (R4, "ro"), (MASTER, "ro")]


def test_add_slave_not_listed_afterwards_is_an_atlas_error(atlas, admin, monkeypatch):
    real = AtlasAdmin.backends
    calls = []

    def backends_hiding_new(self):
        calls.append(1)
        return tuple(b for b in real(self) if b.address != NEW)

    monkeypatch.setattr(AtlasAdmin, "backends", backends_hiding_new)
    with pytest.raises(AtlasError, match=f"after ADD SLAVE {NEW} {NEW} is not listed as ro"):
        admin.add_slave(NEW)
    assert len(calls) == 2


# --- remove_backend -----------------------------------------------------------------


def test_remove_backend_follows_renumbering(atlas, admin):
    # 1 MASTER rw, 2 R2, 3 R3, 4 R4: remove from the middle, then the end, then the front.
    assert admin.remove_backend(R3) is True
    assert listed(atlas) == [(MASTER, "rw"), (R2, "ro"), (R4, "ro")]
    assert admin.remove_backend(R4) is True  # was 4, now 3
    assert admin.remove_backend(R2) is True
    assert listed(atlas) == [(MASTER, "rw")]
    assert atlas.mutating_commands() == ["REMOVE BACKEND 3", "REMOVE BACKEND 3", "REMOVE BACKEND 2"]


def test_remove_backend_after_add_master_swap(atlas, admin, monkeypatch):
    # ADD MASTER appends and swaps the new master with the first slave, which moves to
    # the end. The client has no ADD MASTER; send it through the internals for the setup.
    permissive = re.compile(r"ADD MASTER [0-9.:]+|SELECT \* FROM backends|REMOVE BACKEND [0-9]+")
    monkeypatch.setattr(client, "_ADMIN_COMMAND", permissive)
    admin._execute(f"ADD MASTER {R5}")
    assert listed(atlas) == [(MASTER, "rw"), (R5, "rw"), (R3, "ro"), (R4, "ro"), (R2, "ro")]
    assert admin.remove_backend(R2) is True  # first slave before, now ndx 5
    assert admin.remove_backend(R5) is False  # it is rw: never removed as ro
    assert listed(atlas) == [(MASTER, "rw"), (R5, "rw"), (R3, "ro"), (R4, "ro")]
    assert admin.remove_backend(MASTER, type="rw") is True
    assert listed(atlas) == [(R5, "rw"), (R3, "ro"), (R4, "ro")]
    assert atlas.mutating_commands() == [f"ADD MASTER {R5}", "REMOVE BACKEND 5", "REMOVE BACKEND 1"]


def test_remove_backend_picks_the_type_asked_for(atlas, admin):
    admin.add_slave(MASTER)  # MASTER is now listed as rw (1) and ro (5)
    assert admin.remove_backend(MASTER) is True
    assert listed(atlas) == [(MASTER, "rw"), (R2, "ro"), (R3, "ro"), (R4, "ro")]
    assert admin.remove_backend(MASTER) is False
    assert listed(atlas)[0] == (MASTER, "rw")


def test_remove_absent_backend_sends_nothing(atlas, admin):
    assert admin.remove_backend(NEW) is False
    assert admin.remove_backend(MASTER) is False  # rw, and type defaults to ro
    assert atlas.mutating_commands() == []
    assert listed(atlas)[0] == (MASTER, "rw")


def test_remove_backend_with_bad_type_is_a_value_error(atlas, admin):
    with pytest.raises(ValueError, match="invalid backend type"):
        admin.remove_backend(R2, type="RO")
    assert atlas.commands == []


def concurrently_before_next_command(monkeypatch, action):
    """Run `action` (another admin's change) right after our next backends() lookup."""
    real = AtlasAdmin.backends
    done = []

    def backends_then_interfere(self):
        result = real(self)
        if not done:
            done.append(1)
            action()
        return result

    monkeypatch.setattr(AtlasAdmin, "backends", backends_then_interfere)


def test_stale_number_rejected_by_atlas_is_looked_up_again(atlas, admin, monkeypatch):
    other = AtlasAdmin(*atlas.address, USER, PASSWORD)
    concurrently_before_next_command(monkeypatch, lambda: other.remove_backend(R2))
    # R4 was 4 at lookup; after the other removal only 3 backends are left: Atlas says
    # `invalid backend_id`, nothing was removed, and R4 is looked up again (now 3).
    assert admin.remove_backend(R4) is True
    assert listed(atlas) == [(MASTER, "rw"), (R3, "ro")]  # R2 stays removed: that was the other admin
    assert atlas.mutating_commands() == ["REMOVE BACKEND 2", "REMOVE BACKEND 4", "REMOVE BACKEND 3"]
    assert admin.last_incidents == []
    other.close()


def test_wrong_backend_removed_by_a_race_is_put_back_and_the_removal_retried(atlas, admin, monkeypatch, caplog):
    other = AtlasAdmin(*atlas.address, USER, PASSWORD)
    concurrently_before_next_command(monkeypatch, lambda: other.remove_backend(R2))
    # R3 was 3 at lookup; by the time REMOVE BACKEND 3 arrives, 3 is R4: R4 comes back
    # (loudly), R3 goes, and R2 stays removed (the other admin's doing).
    assert admin.remove_backend(R3) is True
    assert listed(atlas) == [(MASTER, "rw"), (R4, "ro")]
    assert atlas.mutating_commands() == ["REMOVE BACKEND 2", "REMOVE BACKEND 3", f"ADD SLAVE {R4}", "REMOVE BACKEND 2"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and f"{R4} (ro) vanished with REMOVE BACKEND 3 (meant for {R3} (ro))" in errors[0]
    other.close()


def test_another_backend_vanishing_during_remove_is_left_to_the_other_admin(atlas, admin, monkeypatch, caplog):
    other = AtlasAdmin(*atlas.address, USER, PASSWORD)
    concurrently_before_next_command(monkeypatch, lambda: other.remove_backend(R4))
    # Our REMOVE BACKEND 2 still hits R2 (R4 was behind it); R4 was the other admin's.
    assert admin.remove_backend(R2) is True
    assert listed(atlas) == [(MASTER, "rw"), (R3, "ro")]
    assert atlas.mutating_commands() == ["REMOVE BACKEND 4", "REMOVE BACKEND 2"]
    assert [r.levelname for r in caplog.records if R4 in r.getMessage()] == ["WARNING"]
    assert "another admin removed it; left as it is" in caplog.text
    other.close()


# --- save_config --------------------------------------------------------------------


def test_save_config_persists_runtime_backends(atlas, admin, config):
    admin.add_slave(NEW)
    admin.remove_backend(R2)
    admin.save_config()
    assert [address for address, _ in read_ro_backends(config)] == [R3, R4, NEW]
    assert atlas.mutating_commands() == [f"ADD SLAVE {NEW}", "REMOVE BACKEND 2", "SAVE CONFIG"]


# --- addresses ----------------------------------------------------------------------


BAD_ADDRESSES = [
    "db2.example.com:3306",  # host name
    "10.0.0.2",  # missing port
    "'10.0.0.2:3306'",  # quoted
    '"10.0.0.2:3306"',
    "10.0.0.2:3306@2",  # weight
    "10.0.0.2:3306,10.0.0.3:3306",  # list
    "10.0.0.256:3306",
    "10.0.0.2:0",
    "10.0.0.2:65536",
    "010.0.0.2:3306",
    "10.0.0:3306",
    "10.0.0.2:3306; SAVE CONFIG",
    "",
]


@pytest.mark.parametrize("bad", BAD_ADDRESSES)
@pytest.mark.parametrize(
    "call",
    [
        lambda a, address: a.add_slave(address),
        lambda a, address: a.remove_backend(address),
    ],
    ids=["add_slave", "remove_backend"],
)
def test_invalid_address_is_a_value_error_before_anything_is_sent(atlas, admin, bad, call):
    with pytest.raises(ValueError, match="invalid backend address"):
        call(admin, bad)
    assert atlas.commands == []
    assert admin._conn is None  # not even connected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.0.0.2:3306", "10.0.0.2:3306"),
        (" 10.0.0.2:3306\n", "10.0.0.2:3306"),
        ("10.0.0.2:03306", "10.0.0.2:3306"),
        ("0.0.0.0:1", "0.0.0.0:1"),
        ("255.255.255.255:65535", "255.255.255.255:65535"),
    ],
)
def test_parse_address_normalizes(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("bad", BAD_ADDRESSES + ["１0.0.0.2:3306", None, "::1:3306"])
def test_parse_address_message_is_one_line(bad):
    with pytest.raises(ValueError) as caught:
        parse_address(bad)
    assert "\n" not in str(caught.value)
