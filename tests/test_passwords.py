"""Any UTF-8 password works for every account orch uses, and never shows in its output.

The orch account (``mysql:``), the replication account (``replication:``, sent in
CHANGE MASTER ... MASTER_PASSWORD), Atlas's admin account (``atlas[i].admin``) and the
keepalived health check (hooks/check-mysql, a client defaults file), on real servers.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List

import pymysql
import pytest

from orchestrator.lab.atlas_standin.atlasconf import AtlasConfigError, escape_value, load_config
from orchestrator.atlas.client import AtlasAdmin, AtlasError
from orchestrator.lab.atlas_standin.standin import AtlasStandin
from orchestrator.lab import mariadb as lab

from . import orchtest as t
from .test_grants import readme_grant

HOOK = Path(__file__).resolve().parent.parent / "hooks" / "check-mysql"

# Latin-1 letters, CJK, and a 4-byte character (outside MariaDB's utf8mb3).
ORCH = lab.Credentials("orch_u8", "pässwörd-密码-🔑")
REPL = lab.Credentials("repl_u8", "rëplica-密码-🔑-ß")
ATLAS_PW = "ädmin-密码-🔑"
# Distinctive fragments: a leak of part of a password shows too.
SECRETS = (ORCH.password, REPL.password, ATLAS_PW, "密码", "🔑")


def addr(server: lab.MariaDBInstance) -> str:
    return f"{server.host}:{server.port}"


def create_accounts(*servers: lab.MariaDBInstance) -> None:
    for server in servers:
        server.create_account(ORCH, readme_grant())
        server.create_account(REPL, "REPLICATION SLAVE")


def account(creds: lab.Credentials, tmp_path: Path, use_file: bool) -> Dict[str, str]:
    if not use_file:
        return {"user": creds.user, "password": creds.password}
    path = tmp_path / f"{creds.user}.pass"
    path.write_text(creds.password + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return {"user": creds.user, "password_file": str(path)}


def orch_config(s1, s2, tmp_path: Path, use_file: bool = False, **extra) -> str:
    d = t.config_dict(s1, s2, str(tmp_path / "state"), **extra)
    d["mysql"] = {**account(ORCH, tmp_path, use_file), "connect_timeout": 1}
    d["replication"] = account(REPL, tmp_path, use_file)
    return t.write_config(tmp_path / "orch.yaml", d)


def state_files(tmp_path: Path) -> List[str]:
    state = tmp_path / "state"
    return [p.read_text(errors="replace") for p in state.rglob("*") if p.is_file()] if state.exists() else []


def io_thread_connected(replica: lab.MariaDBInstance, source: lab.MariaDBInstance) -> dict:
    """Wait until ``replica``'s IO thread is logged in to ``source`` as the UTF-8 account."""
    lab.wait_replica_running(replica, timeout=15)  # fails with Last_IO_Error (1045 ...)
    st = t.slave_status(replica)
    assert st["Slave_IO_Running"] == "Yes" and st["Last_IO_Errno"] == 0, st
    assert st["Master_User"] == REPL.user and int(st["Master_Port"]) == source.port
    return st


# ----------------------------------------------------------------------- orch and replication


@pytest.mark.mariadb
@pytest.mark.parametrize("use_file", [False, True], ids=["inline", "password_file"])
def test_failover_and_rejoin_with_utf8_passwords(mariadb_pair, tmp_path, use_file):
    s1, s2 = mariadb_pair
    create_accounts(s1, s2)
    cfg = orch_config(s1, s2, tmp_path, use_file)
    s1.sql("CREATE TABLE test.t (id INT PRIMARY KEY)")
    s1.sql("INSERT INTO test.t VALUES (1)")
    lab.wait_gtid_equal(s1, s2)
    outputs = []

    r = t.orch(cfg, "server1", "status")
    outputs.append(r.output)
    assert r.code == 0 and "unusable" not in r.output and "1045" not in r.output, r

    # Over and back: each old master rejoins through the replication account.
    for new, old, new_name, old_name, row in ((s2, s1, "server2", "server1", 2), (s1, s2, "server1", "server2", 3)):
        r = t.orch(cfg, new_name, "notify", "INSTANCE", "VI_1", "MASTER", "100")  # fences the live old master
        outputs.append(r.output)
        assert r.code == 0, r
        assert not t.read_only(new) and t.read_only(old)
        r = t.orch(cfg, old_name, "notify", "INSTANCE", "VI_1", "BACKUP", "90")
        outputs.append(r.output)
        assert r.code == 0, r
        io_thread_connected(old, new)
        new.sql("INSERT INTO test.t VALUES (%s)", (row,))
        lab.wait_gtid_equal(new, old)
        assert int(old.query_value("SELECT COUNT(*) FROM test.t")) == row

    r = t.orch(cfg, "server2", "status")
    outputs.append(r.output)
    assert r.code == 0, r
    ends = [e for e in t.journal(str(tmp_path / "state")) if e["phase"] == "end"]
    assert [e["result"] for e in ends] == ["act"] * 4
    t.assert_no_secrets(*outputs, *state_files(tmp_path), extra=SECRETS)


@pytest.mark.mariadb
def test_replication_password_too_long_for_the_server_does_not_leak(mariadb_pair, tmp_path):
    """MariaDB stores at most 96 bytes of MASTER_PASSWORD; its error 1470 quotes the
    first 40 characters of the value. orch must refuse without repeating that text."""
    s1, s2 = mariadb_pair
    repl = lab.Credentials("repl_long", "long-secret-" + "ü" * 50)  # 112 bytes
    for s in (s1, s2):
        s.create_account(ORCH, readme_grant())
        s.create_account(repl, "REPLICATION SLAVE")
    d = t.config_dict(s1, s2, str(tmp_path / "state"))
    d["mysql"] = {"user": ORCH.user, "password": ORCH.password, "connect_timeout": 1}
    d["replication"] = {"user": repl.user, "password": repl.password}
    cfg = t.write_config(tmp_path / "orch.yaml", d)
    outputs = [t.orch(cfg, None, "check-config").output]
    outputs.append(t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100").output)
    r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    outputs.append(r.output)
    assert r.code != 0, r
    t.assert_no_secrets(*outputs, *state_files(tmp_path), extra=SECRETS + (repl.password, "long-secret", "üüüü"))


@pytest.mark.mariadb
def test_wrong_utf8_password_is_access_denied_not_unreachable(mariadb_pair, tmp_path):
    s1, s2 = mariadb_pair
    create_accounts(s1, s2)
    d = t.config_dict(s1, s2, str(tmp_path / "state"))
    wrong = "pässwörd-密码-🔒"  # one character off
    d["mysql"] = {"user": ORCH.user, "password": wrong, "connect_timeout": 1}
    cfg = t.write_config(tmp_path / "orch.yaml", d)
    r = t.orch(cfg, "server1", "status")
    assert r.code != 0
    assert "1045" in r.output and "Access denied" in r.output, r
    t.assert_no_secrets(r.output, extra=SECRETS + (wrong,))


# ----------------------------------------------------------------------- the health check


def run_check(cnf: Path) -> subprocess.CompletedProcess:
    # keepalived runs the script with an almost empty environment: no LANG, no PATH.
    return subprocess.run([str(HOOK), str(cnf)], env={}, capture_output=True, text=True, timeout=10)


@pytest.mark.mariadb
def test_check_mysql_with_utf8_passwords(mariadb_pair, tmp_path):
    s1, _ = mariadb_pair
    passwords = [
        ORCH.password,
        "voilà",  # ends in byte 0xA0, a latin1 space to the option file parser
        " blanks at both ends ",
        'a#b\\c"d\'e;f',  # comment characters, escapes and quotes
    ]
    for i, password in enumerate(passwords):
        creds = lab.Credentials(f"check{i}", password)
        s1.create_account(creds)
        cnf = tmp_path / f"check{i}.cnf"
        cnf.write_text(s1.client_defaults(creds), encoding="utf-8")
        os.chmod(cnf, 0o600)
        proc = run_check(cnf)
        assert proc.returncode == 0, (password, proc.stderr)
        t.assert_no_secrets(proc.stdout, proc.stderr, extra=(password,))

        cnf.write_text(s1.client_defaults(lab.Credentials(creds.user, password + "x")), encoding="utf-8")
        proc = run_check(cnf)
        assert proc.returncode != 0 and "Access denied" in proc.stderr, (password, proc.stderr)
        t.assert_no_secrets(proc.stdout, proc.stderr, extra=(password,))


@pytest.mark.mariadb
def test_check_mysql_needs_the_password_quoted(mariadb_pair, tmp_path):
    """Why hooks/check-mysql says to quote: unquoted, the last byte of "à" is dropped."""
    s1, _ = mariadb_pair
    creds = lab.Credentials("check_raw", "voilà")
    s1.create_account(creds)
    cnf = tmp_path / "check.cnf"
    cnf.write_text(s1.client_defaults(creds).replace(lab.option_value(creds.password), creds.password), encoding="utf-8")
    assert f"password={creds.password}\n" in cnf.read_text()
    assert run_check(cnf).returncode != 0


def test_option_value_quotes_for_option_files():
    assert lab.option_value("pässwörd") == '"pässwörd"'
    assert lab.option_value('a\\b"c\nd') == '"a\\\\b\\"c\\nd"'


# ----------------------------------------------------------------------- Atlas's admin port


def atlas_conf(path: Path, password: str, ro: str = "", user: str = "user") -> str:
    path.write_text(
        "[mysql-proxy]\n"
        f"admin-username = {escape_value(user)}\n"
        f"admin-password = {escape_value(password)}\n"
        "admin-address = 127.0.0.1:2345\n"
        "proxy-backend-addresses = 127.0.0.1:3999\n"
        f"proxy-read-only-backend-addresses = {ro}\n",
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture
def standin(tmp_path):
    started: List[AtlasStandin] = []

    def start(password: str, ro: str = "", user: str = "user") -> AtlasStandin:
        conf = atlas_conf(tmp_path / f"atlas{len(started)}.cnf", password, ro, user)
        s = AtlasStandin(conf, host="127.0.0.1", port=0, check_interval=None).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.mark.parametrize("password", [
    ATLAS_PW,
    "back\\slash",
    "  leading blanks",
    "tab\tinside",
])
def test_atlas_admin_client_logs_in_with_any_password(standin, password):
    s = standin(password)
    host, port = s.address
    with AtlasAdmin(host, port, "user", password) as admin:
        assert [b.address for b in admin.backends()] == ["127.0.0.1:3999"]
    with pytest.raises(AtlasError, match="authentication failed") as failed:
        AtlasAdmin(host, port, "user", password + "x").connect()
    t.assert_no_secrets(str(failed.value), extra=(password,))


def test_atlas_admin_user_name_is_compared_as_utf8_bytes(standin):
    s = standin(ATLAS_PW, user="管理")
    host, port = s.address
    with AtlasAdmin(host, port, "管理", ATLAS_PW) as admin:
        assert admin.backends()
    with pytest.raises(AtlasError, match="unknown user"):
        AtlasAdmin(host, port, "管理x", ATLAS_PW).connect()


def test_atlas_hashes_the_utf8_bytes_of_its_config_value(standin):
    """A client hashing other bytes (stock PyMySQL encodes a str password as latin-1) fails."""
    password = "pässwörd"  # latin-1 can encode it, so only the bytes differ
    s = standin(password)
    host, port = s.address
    with pytest.raises(pymysql.err.OperationalError) as latin1:
        pymysql.connect(host=host, port=port, user="user", password=password, connect_timeout=2)
    assert latin1.value.args[0] == 1045 and "password doesn't match" in latin1.value.args[1]
    with pytest.raises(pymysql.err.MySQLError) as utf8:
        pymysql.connect(host=host, port=port, user="user", password=password.encode("utf-8"), connect_timeout=2)
    assert utf8.value.args[0] == 1105, "authenticated; then the admin port rejects SET NAMES"


def write_raw_conf(path: Path, value_line: str) -> str:
    path.write_bytes(b"[mysql-proxy]\nadmin-username = user\n" + value_line.encode("utf-8", "surrogateescape") + b"\n")
    return str(path)


def test_atlas_reads_admin_password_as_gkeyfile_string(tmp_path):
    conf = tmp_path / "atlas.cnf"
    # Leading blanks go, escapes are decoded, trailing blanks are chomped (chassis).
    assert load_config(write_raw_conf(conf, "admin-password =  \\sp\\\\w\\td  \t")).admin_password == " p\\w\td"
    assert load_config(write_raw_conf(conf, f"admin-password={ATLAS_PW}")).admin_password == ATLAS_PW
    # \v is no blank for GKeyFile
    assert load_config(write_raw_conf(conf, "admin-password=pw\v")).admin_password == "pw\v"
    for bad in ("admin-password = bad\\q", "admin-password = ends\\", "admin-password = p\udce4ss"):
        with pytest.raises(AtlasConfigError, match="admin-password"):
            load_config(write_raw_conf(conf, bad))  # Atlas refuses to start
    # a latin-1 byte in a comment is fine: GKeyFile checks only the values it reads
    conf.write_bytes(b"# caf\xe9\n[mysql-proxy]\nadmin-username=user\nadmin-password=pw\n")
    assert load_config(str(conf)).admin_password == "pw"


def test_escape_value_round_trips_through_atlas_config(tmp_path):
    conf = tmp_path / "atlas.cnf"
    for value in (ATLAS_PW, "back\\slash", " \tleading", "new\nline\rx", "a\\sb"):
        text = escape_value(value)
        assert load_config(write_raw_conf(conf, f"admin-password = {text}")).admin_password == value
    for value in ("trailing ", "tab\t"):
        with pytest.raises(ValueError, match="trailing whitespace"):
            escape_value(value)


@pytest.mark.mariadb
def test_maintain_against_atlas_with_utf8_admin_password(mariadb_pair, standin, tmp_path):
    s1, s2 = mariadb_pair
    create_accounts(s1, s2)
    s = standin(ATLAS_PW)
    host, port = s.address
    pass_file = tmp_path / "atlas.pass"
    pass_file.write_text(ATLAS_PW + "\n", encoding="utf-8")
    os.chmod(pass_file, 0o600)
    atlas = [{"name": "local", "admin": {"host": host, "port": port, "user": "user", "password_file": str(pass_file)}}]
    cfg = orch_config(s1, s2, tmp_path, atlas=atlas)
    assert [a for _, a, _, ty in s.backends() if ty == "ro"] == []
    r = t.orch(cfg, "server1", "maintain", "--once")
    assert r.code == 0, r
    assert [a for _, a, _, ty in s.backends() if ty == "ro"] == [addr(s2)], r
    assert s.mutating_commands() == [f"ADD SLAVE {addr(s2)}"]
    r2 = t.orch(cfg, "server1", "maintain", "--once")
    assert r2.code == 0 and s.mutating_commands() == [f"ADD SLAVE {addr(s2)}"], r2
    t.assert_no_secrets(r.output, r2.output, *state_files(tmp_path), extra=SECRETS)


@pytest.mark.mariadb
def test_notify_removes_backend_from_atlas_with_utf8_admin_password(mariadb_pair, standin, tmp_path):
    s1, s2 = mariadb_pair
    create_accounts(s1, s2)
    s = standin(ATLAS_PW, ro=addr(s2))
    host, port = s.address
    atlas = [{"name": "local", "admin": {"host": host, "port": port, "user": "user", "password": ATLAS_PW}}]
    cfg = orch_config(s1, s2, tmp_path, atlas=atlas)
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0, r
    end = [e for e in t.journal(str(tmp_path / "state")) if e["phase"] == "end"][-1]
    # Every Atlas step logged in with the UTF-8 admin password: the read/write backend set
    # offline and online, and the new master's read-only entry handled (kept while Atlas's
    # read/write backend is not up yet: it is then the only server Atlas can read from).
    assert all(step["result"] in ("ok", "skipped") and "failed" not in step["detail"] for step in end["steps"]), end
    atlas_steps = {step["step"]: step["detail"] for step in end["steps"] if step["step"] in ("SetRwOffline", "SetRwOnline", "RemoveBackend")}
    assert set(atlas_steps) == {"SetRwOffline", "SetRwOnline", "RemoveBackend"}, end
    ro = [a for _, a, _, ty in s.backends() if ty == "ro"]
    assert ro == [] or atlas_steps["RemoveBackend"].startswith("kept"), (ro, atlas_steps)
    t.assert_no_secrets(r.output, *state_files(tmp_path), extra=SECRETS)
