"""The stand-in's proxy port and checker, against real MariaDB servers, pinned to
/work/shared/atlas-admin.md's routing and checker facts; and the admin client's
SET OFFLINE / SET ONLINE against the stand-in."""

from __future__ import annotations

import time
from pathlib import Path

import pymysql
import pytest

from orchestrator.atlas.client import AtlasAdmin
from orchestrator.errors import AtlasError
from orchestrator.lab import mariadb as lab
from orchestrator.lab.atlas_standin.standin import AtlasStandin, encrypt_password

pytestmark = pytest.mark.mariadb

ADMIN_PW = "atlas-admin-pw"
APP_USER, APP_PW = "app", "app-secret-pw"


def addr(server: lab.MariaDBInstance) -> str:
    return f"{server.host}:{server.port}"


def proxy_conf(path: Path, rw: str, ro: str) -> str:
    path.write_text(
        "[mysql-proxy]\n"
        "admin-username = user\n"
        f"admin-password = {ADMIN_PW}\n"
        "admin-address = 127.0.0.1:2345\n"
        f"proxy-backend-addresses = {rw}\n"
        f"proxy-read-only-backend-addresses = {ro}\n"
        f"pwds = {APP_USER}:{encrypt_password(APP_PW)}\n"
    )
    return str(path)


def create_app_user(master: lab.MariaDBInstance, replica: lab.MariaDBInstance) -> None:
    """An application account without SUPER/READ_ONLY ADMIN: read_only stops its writes (1290)."""
    master.sql("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (APP_USER, APP_PW))
    master.sql("GRANT SELECT, INSERT, UPDATE, DELETE ON test.* TO %s@'%%'", (APP_USER,))
    lab.wait_gtid_equal(master, replica)


def client(standin: AtlasStandin, timeout: float = 2) -> pymysql.connections.Connection:
    host, port = standin.proxy_address
    return pymysql.connect(host=host, port=port, user=APP_USER, password=APP_PW, autocommit=True,
                           connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout)


def server_id(conn, sql: str = "SELECT @@server_id") -> int:
    with conn.cursor() as cur:
        cur.execute(sql)
        return int(cur.fetchone()[0])


def wait_state(standin: AtlasStandin, address: str, state: str, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    while True:
        states = {a: st for _, a, st, _ in standin.backends()}
        if states.get(address) == state:
            return time.monotonic()
        assert time.monotonic() < deadline, f"{address} is {states.get(address)}, not {state}: {standin.backends()}"
        time.sleep(0.02)


@pytest.fixture
def proxied(mariadb_pair, tmp_path):
    s1, s2 = mariadb_pair
    s1.sql("CREATE TABLE test.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40))")
    create_app_user(s1, s2)
    conf = proxy_conf(tmp_path / "atlas.cnf", addr(s1), addr(s2))
    standin = AtlasStandin(conf, host="127.0.0.1", port=0, check_interval=0.3, proxy_port=0).start()
    try:
        wait_state(standin, addr(s1), "up")
        wait_state(standin, addr(s2), "up")
        yield s1, s2, standin
    finally:
        standin.stop()


def admin(standin: AtlasStandin) -> AtlasAdmin:
    host, port = standin.address
    return AtlasAdmin(host, port, "user", ADMIN_PW, timeout=2)


def test_routing_autocommit_reads_to_replica_writes_and_transactions_to_master(proxied):
    s1, s2, standin = proxied
    conn = client(standin)
    assert server_id(conn) == 2, "an autocommit SELECT goes to the up read-only backend"
    assert server_id(conn, "/*master*/ SELECT @@server_id") == 1
    with conn.cursor() as cur:
        cur.execute("INSERT INTO test.t (v) VALUES ('through the proxy')")
        cur.execute("BEGIN")
        cur.execute("SELECT @@server_id")
        assert cur.fetchone()[0] == 1, "inside a transaction everything goes to the read/write backend"
        cur.execute("COMMIT")
    assert server_id(conn) == 2
    conn.autocommit(False)
    assert server_id(conn) == 1, "autocommit off: the read/write backend"
    conn.close()
    assert standin.routed[f"ro {addr(s2)}"] >= 2 and standin.routed[f"rw {addr(s1)}"] >= 3


def test_reads_fall_back_to_the_master_and_nothing_when_no_backend_is_up(proxied):
    s1, s2, standin = proxied
    with admin(standin) as a:
        assert a.set_offline(addr(s2), "ro")
        conn = client(standin)
        assert server_id(conn) == 1, "no read-only backend up: reads go to the read/write backend"
        assert a.set_offline(addr(s1))
        with pytest.raises(pymysql.err.OperationalError) as err:
            server_id(conn)
        assert err.value.args[0] == 2013, "no backend up: the connection is closed"
        with pytest.raises(pymysql.err.OperationalError) as err:
            client(standin)
        assert err.value.args[0] in (2013, 2003), err.value
        assert a.set_online(addr(s1)) and a.set_online(addr(s2), "ro")
        assert {b.state for b in a.backends()} <= {"unknown", "up"}
    wait_state(standin, addr(s1), "up")  # the checker takes ONLINE backends up on its cycle
    wait_state(standin, addr(s2), "up")
    assert server_id(client(standin)) == 2


def test_failed_connection_marks_a_backend_down_and_the_checker_brings_it_back(proxied):
    s1, s2, standin = proxied
    s2.kill()
    conn = client(standin)
    with pytest.raises(pymysql.err.OperationalError):
        server_id(conn)  # the read tries the dead replica: down at once, this client is closed
    assert {a: st for _, a, st, _ in standin.backends()}[addr(s2)] == "down"
    assert server_id(client(standin)) == 1, "a dead read-only backend's reads are served by the master"
    s2.start()
    wait_state(standin, addr(s2), "up")


def test_checker_marks_a_read_only_server_up_as_the_writer(proxied):
    """Atlas's probe is a login and SELECT 1: a read-only server passes as the read/write
    backend, and writes then fail with 1290 (why orch sets it OFFLINE without a writer)."""
    s1, s2, standin = proxied
    s1.sql("SET GLOBAL read_only = 1")
    conn = client(standin)
    with pytest.raises(pymysql.err.OperationalError) as err:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO test.t (v) VALUES ('refused')")
    assert err.value.args[0] == 1290


def test_offline_backends_are_not_probed(proxied):
    s1, s2, standin = proxied
    with admin(standin) as a:
        a.set_offline(addr(s2), "ro")
    time.sleep(1)  # three checker cycles
    assert {a: st for _, a, st, _ in standin.backends()}[addr(s2)] == "offline"


def test_set_offline_online_are_idempotent_and_verified(proxied):
    s1, s2, standin = proxied
    with admin(standin) as a:
        assert a.set_offline(addr(s1)) is True
        assert a.set_offline(addr(s1)) is False
        assert a.set_online(addr(s1)) is True
        assert a.set_online(addr(s1)) is False, "ONLINE on a backend that is not offline would make it unknown"
        with pytest.raises(AtlasError):
            a.set_offline("10.9.9.9:3306")
    assert standin.mutating_commands() == ["SET OFFLINE 1", "SET ONLINE 1"]
