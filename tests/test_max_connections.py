"""orch still logs in to a master at max_connections (MariaDB 10.11).

MariaDB accepts one connection beyond max_connections, for an account holding
CONNECTION ADMIN (or SUPER): the install checklist's orch grant has it, so orch can observe and
fence a master that the application has saturated. Without it orch gets error 1040,
sees a live master it cannot fence, and must refuse to promote.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

import pymysql
import pytest

from orchestrator.lab import mariadb as lab

from . import orchtest as t
from .test_grants import readme_grant

pytestmark = pytest.mark.mariadb

HOOK = Path(__file__).resolve().parent.parent / "hooks" / "check-mysql"
MAX_CONNECTIONS = 10  # MariaDB's minimum
APP = lab.Credentials("app", "app-pw")  # an ordinary account: no privileges at all
WITH_ADMIN = lab.Credentials("orch_admin", "orch-admin-pw")
WITHOUT_ADMIN = lab.Credentials("orch_noadmin", "orch-noadmin-pw")
TOO_MANY_CONNECTIONS = 1040


def grant_without_connection_admin() -> str:
    privileges = [p.strip() for p in readme_grant().split(",")]
    assert "CONNECTION ADMIN" in privileges, "the install checklist's orch grant must hold CONNECTION ADMIN"
    return ", ".join(p for p in privileges if p != "CONNECTION ADMIN")


def connect_error(server: lab.MariaDBInstance, creds: lab.Credentials, port: int = 0) -> int:
    """0 if ``creds`` can log in over TCP, else the server's error code."""
    try:
        server.tcp_connect(creds, port=port or server.port, connect_timeout=2).close()
        return 0
    except pymysql.err.OperationalError as exc:
        return exc.args[0]


@contextmanager
def saturated(server: lab.MariaDBInstance) -> Iterator[List[pymysql.connections.Connection]]:
    """Lower max_connections and fill every ordinary slot with idle client connections."""
    server.sql("SET GLOBAL max_connections = %s", (MAX_CONNECTIONS,))
    assert int(server.query_value("SELECT @@global.max_connections")) == MAX_CONNECTIONS
    conns: List[pymysql.connections.Connection] = []
    try:
        for _ in range(MAX_CONNECTIONS + 1):
            try:
                conns.append(server.tcp_connect(APP, connect_timeout=2))
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] == TOO_MANY_CONNECTIONS, exc
                break
        else:
            pytest.fail(f"{MAX_CONNECTIONS + 1} ordinary connections and no error 1040")
        # A replica's binlog dump thread holds one of the slots.
        assert 0 < len(conns) <= MAX_CONNECTIONS
        yield conns
    finally:
        for conn in conns:
            conn.close()
        server.sql("SET GLOBAL max_connections = 151")


def still_saturated(server: lab.MariaDBInstance, conns: List[pymysql.connections.Connection]) -> None:
    for conn in conns:
        conn.ping(reconnect=False)  # every client connection is still there
    assert connect_error(server, APP) == TOO_MANY_CONNECTIONS


def config(s1, s2, tmp_path: Path, creds: lab.Credentials) -> str:
    d = t.config_dict(s1, s2, str(tmp_path / f"state-{creds.user}"))
    d["mysql"] = {"user": creds.user, "password": creds.password, "connect_timeout": 1}
    return t.write_config(tmp_path / f"{creds.user}.yaml", d)


def test_orch_fences_and_rejoins_a_master_at_max_connections(mariadb_pair, tmp_path):
    s1, s2 = mariadb_pair
    for s in (s1, s2):
        s.create_account(APP)
        s.create_account(WITH_ADMIN, readme_grant())
        s.create_account(WITHOUT_ADMIN, grant_without_connection_admin())
    s1.sql("CREATE TABLE test.t (id INT PRIMARY KEY)")
    s1.sql("INSERT INTO test.t VALUES (1)")
    lab.wait_gtid_equal(s1, s2)
    with_admin = config(s1, s2, tmp_path, WITH_ADMIN)
    without_admin = config(s1, s2, tmp_path, WITHOUT_ADMIN)

    with saturated(s1) as conns:
        # Without CONNECTION ADMIN: 1040, and orch must not promote past a live master.
        assert connect_error(s1, WITHOUT_ADMIN) == TOO_MANY_CONNECTIONS
        r = t.orch(without_admin, "server1", "status")
        assert r.code != 0 and "1040" in r.output and "Too many connections" in r.output, r
        r = t.orch(without_admin, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code != 0, r
        assert "1040" in r.output, r
        assert t.read_only(s2) and not t.read_only(s1), "never two writable masters"
        still_saturated(s1, conns)

        # With exactly the install checklist's grant: orch gets the connection reserved beyond the limit.
        r = t.orch(with_admin, "server1", "status")
        assert r.code == 0 and "1040" not in r.output, r
        r = t.orch(with_admin, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 0, r
        assert "fence server1" in r.output, r
        assert t.read_only(s1) and not t.read_only(s2)
        # The busy old master rejoins too: orch logs in to it once more.
        r = t.orch(with_admin, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
        assert r.code == 0, r
        lab.wait_replica_running(s1)
        s2.sql("INSERT INTO test.t VALUES (2)")
        lab.wait_gtid_equal(s1, s2)
        assert int(s1.query_value("SELECT COUNT(*) FROM test.t")) == 2
        still_saturated(s1, conns)
    ends = [e for e in t.journal(str(tmp_path / f"state-{WITH_ADMIN.user}")) if e["phase"] == "end"]
    assert [(e["event"], e["result"]) for e in ends] == [("MASTER", "act"), ("BACKUP", "act")]


def test_only_one_connection_is_reserved(mariadb_pair):
    """The reserve is one connection for every privileged account together: an admin
    session left open (or a health check that holds it) locks orch out."""
    s1, _ = mariadb_pair
    s1.create_account(APP)
    s1.create_account(WITH_ADMIN, readme_grant())
    with saturated(s1):
        holder = s1.tcp_connect(WITH_ADMIN)
        try:
            assert connect_error(s1, WITH_ADMIN) == TOO_MANY_CONNECTIONS
        finally:
            holder.close()


def run_check(server: lab.MariaDBInstance, creds: lab.Credentials, path: Path, port: int = 0) -> int:
    text = server.client_defaults(creds).replace(f"port={server.port}\n", f"port={port or server.port}\n")
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)
    return subprocess.run([str(HOOK), str(path)], env={}, capture_output=True, timeout=10).returncode


def test_health_check_at_max_connections(mariadb_template, tmp_path_factory, tmp_path):
    """hooks/check-mysql at max_connections: an ordinary account fails (keepalived would
    give up the VIP of a busy but healthy master); extra_port answers without taking
    orch's reserved connection."""
    base = tmp_path_factory.mktemp("maxconn")
    extra_port = lab.free_port()
    server = lab.MariaDBInstance(
        "server1", str(base / "server1"), lab.free_port(), 1,
        extra_options={"extra_port": str(extra_port), "extra_max_connections": "2"},
    )
    lab.start_together([server], mariadb_template)
    try:
        check = lab.Credentials("check", "check-pw")  # no privileges
        server.create_account(APP)
        server.create_account(check)
        server.create_account(WITH_ADMIN, readme_grant())
        with saturated(server) as conns:
            assert run_check(server, check, tmp_path / "plain.cnf") != 0
            assert run_check(server, check, tmp_path / "extra.cnf", port=extra_port) == 0
            assert run_check(server, WITH_ADMIN, tmp_path / "admin.cnf") == 0
            holder = server.tcp_connect(check, port=extra_port)  # the check in progress
            try:
                assert connect_error(server, WITH_ADMIN) == 0, "orch's reserve is still free"
            finally:
                holder.close()
            for conn in conns:
                conn.ping(reconnect=False)
    finally:
        server.discard()
