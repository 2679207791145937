"""orchestrator.lab.mariadb: option rendering, and real mariadbd pairs started by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pymysql
import pytest

from orchestrator.lab import mariadb as lab
from orchestrator.lab.mariadb import MariaDBInstance

ER_ACCESS_DENIED = 1045
ER_HOST_NOT_PRIVILEGED = 1130
ER_OPTION_PREVENTS_STATEMENT = 1290  # read_only

mariadb = pytest.mark.mariadb


def mariadbd_pids_under(basedir: Path) -> list[int]:
    """Live mariadbd processes whose --defaults-file lies under ``basedir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.startswith(f"--defaults-file={basedir}".encode()) for arg in argv):
            pids.append(int(entry.name))
    return pids


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (R, S, T, Z...), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


# --- no server needed --------------------------------------------------------


def test_argv_prefixes_ip_netns_exec(tmp_path: Path) -> None:
    instance = MariaDBInstance("s1", str(tmp_path / "s1"), 3306, 1, host="10.0.0.1", netns="orch-a")
    assert instance.mariadbd_argv() == [
        "ip", "netns", "exec", "orch-a",
        lab.MARIADBD, f"--defaults-file={tmp_path}/s1/my.cnf",
    ]


def test_argv_without_netns(tmp_path: Path) -> None:
    instance = MariaDBInstance("s1", str(tmp_path / "s1"), 3306, 1)
    assert instance.mariadbd_argv() == [lab.MARIADBD, f"--defaults-file={tmp_path}/s1/my.cnf"]


def test_options_follow_instance(tmp_path: Path) -> None:
    instance = MariaDBInstance("s2", str(tmp_path / "s2"), 3307, 2, host="10.0.0.2")
    options = instance.options()
    assert options["bind_address"] == "10.0.0.2"
    assert options["report_host"] == "10.0.0.2"
    assert options["port"] == "3307"
    assert options["server_id"] == "2"
    assert options["relay_log"] == "s2-relay-bin"
    assert options["gtid_strict_mode"] == "ON"
    assert options["socket"] == f"{tmp_path}/s2/mariadbd.sock"
    assert options["sync_binlog"] == "0"


def test_durable_keeps_default_flushing(tmp_path: Path) -> None:
    options = MariaDBInstance("s1", str(tmp_path), 3306, 1, durable=True).options()
    assert not set(lab.FAST_OPTIONS) & set(options)


def test_extra_options_override_and_remove(tmp_path: Path) -> None:
    instance = MariaDBInstance(
        "s1", str(tmp_path), 3306, 1, extra_options={"sync_binlog": "1", "report_host": None}
    )
    options = instance.options()
    assert options["sync_binlog"] == "1"
    assert "report_host" not in options


def test_write_config(tmp_path: Path) -> None:
    instance = MariaDBInstance("s1", str(tmp_path), 3306, 1, extra_options={"read_only": "ON"})
    instance.write_config()
    text = Path(instance.config_file).read_text()
    assert "[mariadbd]\n" in text
    assert "read_only=ON\n" in text
    assert f"[client]\nsocket={instance.socket}\n" in text


def test_socket_path_must_be_short(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="socket path"):
        MariaDBInstance("s1", str(tmp_path / ("x" * 100)), 3306, 1)


# --- real servers ------------------------------------------------------------


@mariadb
def test_pair_replicates(mariadb_pair: tuple[MariaDBInstance, MariaDBInstance]) -> None:
    server1, server2 = mariadb_pair
    server1.sql("CREATE TABLE test.t (id INT PRIMARY KEY, note VARCHAR(20))")
    server1.sql("INSERT INTO test.t VALUES (%s, %s), (%s, %s)", (1, "one", 2, "two"))
    lab.wait_gtid_equal(server1, server2)
    assert server2.sql("SELECT id, note FROM test.t ORDER BY id") == [
        {"id": 1, "note": "one"},
        {"id": 2, "note": "two"},
    ]
    position = server1.query_value("SELECT @@GLOBAL.gtid_current_pos")
    assert position == server2.query_value("SELECT @@GLOBAL.gtid_current_pos")
    assert position.startswith("0-1-")


@mariadb
def test_pair_configuration(mariadb_pair: tuple[MariaDBInstance, MariaDBInstance]) -> None:
    server1, server2 = mariadb_pair
    for server, server_id, read_only in ((server1, 1, 0), (server2, 2, 1)):
        row = server.sql(
            "SELECT @@server_id AS server_id, @@read_only AS read_only, @@log_bin AS log_bin, "
            "@@log_slave_updates AS log_slave_updates, @@binlog_format AS binlog_format, "
            "@@gtid_strict_mode AS gtid_strict_mode, @@port AS port"
        )[0]
        assert row == {
            "server_id": server_id,
            "read_only": read_only,
            "log_bin": 1,
            "log_slave_updates": 1,
            "binlog_format": "ROW",
            "gtid_strict_mode": 1,
            "port": server.port,
        }
        assert server.query_value("SHOW DATABASES LIKE 'test'") == "test"
    assert server1.sql("SHOW SLAVE STATUS") == []
    status = server2.sql("SHOW SLAVE STATUS")[0]
    assert (status["Master_Host"], status["Master_Port"]) == (server1.host, server1.port)
    assert status["Master_User"] == lab.REPL_CREDENTIALS.user
    assert status["Using_Gtid"] == "Slave_Pos"
    assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")


@mariadb
def test_replica_refuses_unprivileged_writes(
    mariadb_pair: tuple[MariaDBInstance, MariaDBInstance],
) -> None:
    server1, server2 = mariadb_pair
    app = lab.Credentials("app", "app-pw")
    server1.sql("CREATE TABLE test.t (id INT PRIMARY KEY)")
    server1.sql("CREATE USER %s@'%%' IDENTIFIED BY %s", (app.user, app.password))
    server1.sql("GRANT INSERT, SELECT ON test.* TO %s@'%%'", (app.user,))
    lab.wait_gtid_equal(server1, server2)
    with server1.tcp_connect(app) as conn, conn.cursor() as cursor:
        cursor.execute("INSERT INTO test.t VALUES (1)")
    with server2.tcp_connect(app) as conn, conn.cursor() as cursor:
        with pytest.raises(pymysql.err.MySQLError) as refused:
            cursor.execute("INSERT INTO test.t VALUES (2)")
    assert refused.value.args[0] == ER_OPTION_PREVENTS_STATEMENT


@mariadb
def test_accounts_log_in_over_tcp(mariadb_pair: tuple[MariaDBInstance, MariaDBInstance]) -> None:
    for server in mariadb_pair:
        for credentials in (lab.ORCH_CREDENTIALS, lab.REPL_CREDENTIALS):
            with server.tcp_connect(credentials) as conn, conn.cursor() as cursor:
                cursor.execute("SELECT CURRENT_USER()")
                assert cursor.fetchone() == (f"{credentials.user}@%",)
        with pytest.raises(pymysql.err.OperationalError) as denied:
            server.tcp_connect(lab.Credentials("orch", "wrong-password"))
        assert denied.value.args[0] == ER_ACCESS_DENIED
        with pytest.raises(pymysql.err.OperationalError) as no_root:
            server.tcp_connect(lab.ROOT_CREDENTIALS)
        assert no_root.value.args[0] in (ER_ACCESS_DENIED, ER_HOST_NOT_PRIVILEGED)


@mariadb
def test_kill_then_start_replica_catches_up(
    mariadb_pair: tuple[MariaDBInstance, MariaDBInstance],
) -> None:
    server1, server2 = mariadb_pair
    server1.sql("CREATE TABLE test.t (id INT PRIMARY KEY)")
    old_pid = server2.pid
    assert old_pid is not None

    server2.kill()

    assert not server2.is_running()
    assert server2.pid is None
    assert process_state(old_pid) is None
    with pytest.raises(pymysql.err.OperationalError):
        server2.connect(connect_timeout=1)
    server1.sql("INSERT INTO test.t VALUES (1)")

    server2.start()

    assert server2.is_running()
    assert server2.pid not in (None, old_pid)
    assert server2.query_value("SELECT @@read_only") == 1
    lab.wait_gtid_equal(server1, server2)
    assert server2.query_value("SELECT COUNT(*) FROM test.t") == 1


@mariadb
def test_stop_then_start_master_replica_reconnects(
    mariadb_pair: tuple[MariaDBInstance, MariaDBInstance],
) -> None:
    server1, server2 = mariadb_pair
    old_pid = server1.pid
    assert old_pid is not None

    server1.stop()

    assert not server1.is_running()
    assert process_state(old_pid) is None
    server1.start()
    server1.sql("CREATE TABLE test.after_restart (id INT PRIMARY KEY)")
    lab.wait_gtid_equal(server1, server2)
    assert server2.query_value("SHOW TABLES IN test LIKE 'after_restart'") == "after_restart"


@mariadb
def test_pause_and_resume(mariadb_pair: tuple[MariaDBInstance, MariaDBInstance]) -> None:
    server1, _ = mariadb_pair
    assert server1.pid is not None

    server1.pause()

    assert process_state(server1.pid) == "T"
    assert server1.is_running()
    with pytest.raises(pymysql.err.OperationalError):
        server1.tcp_connect(connect_timeout=0.5, read_timeout=0.5)

    server1.resume()

    assert process_state(server1.pid) in ("R", "S")
    assert server1.query_value("SELECT 1") == 1


@mariadb
def test_stop_wakes_a_paused_server(mariadb_pair: tuple[MariaDBInstance, MariaDBInstance]) -> None:
    server1, _ = mariadb_pair
    old_pid = server1.pid
    assert old_pid is not None
    server1.pause()

    server1.stop(timeout=10)

    assert process_state(old_pid) is None


@mariadb
def test_fixture_kills_servers_and_deletes_datadirs(request: pytest.FixtureRequest) -> None:
    started: list[tuple[MariaDBInstance, int]] = []

    def check_after_fixture_teardown() -> None:
        # Registered before the fixture is set up, so it runs after its teardown.
        for server, pid in started:
            assert process_state(pid) is None
            assert mariadbd_pids_under(Path(server.basedir)) == []
            assert not os.path.exists(server.datadir)

    request.addfinalizer(check_after_fixture_teardown)
    pair = request.getfixturevalue("mariadb_pair")
    for server in pair:
        assert server.pid is not None
        assert mariadbd_pids_under(Path(server.basedir)) == [server.pid]
        started.append((server, server.pid))


@mariadb
def test_running_pair_cleans_up_when_the_body_fails(
    mariadb_template: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    basedir = tmp_path_factory.mktemp("pair")
    with pytest.raises(RuntimeError, match="test body failed"):
        with lab.running_pair(str(basedir), mariadb_template) as (server1, server2):
            pids = [server1.pid, server2.pid]
            server2.pause()  # a paused server must not survive either
            raise RuntimeError("test body failed")

    assert all(process_state(pid) is None for pid in pids)
    assert mariadbd_pids_under(basedir) == []
    for server in (server1, server2):
        assert not os.path.exists(server.datadir)
        assert os.path.exists(server.log_file)  # kept for post-mortems
