"""TLS to a real server that offers it: each mode of mysql.tls as orch connects."""

from __future__ import annotations

import subprocess

import pytest

from orchestrator.config import Account, Node
from orchestrator.db import Server
from orchestrator.errors import DatabaseError
from orchestrator.lab import mariadb as lab


@pytest.fixture(scope="module")
def tls_server(mariadb_template, tmp_path_factory):
    """One mariadbd with a self-signed certificate for 127.0.0.1; (instance, certificate path)."""
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=orch-test",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    key.chmod(0o644)  # mariadbd runs as the user the lab starts it as
    server = lab.MariaDBInstance("tls1", str(base / "tls1"), lab.free_port(), 1,
                                 extra_options={"ssl_cert": str(cert), "ssl_key": str(key)})
    server.initialize(mariadb_template)
    server.start()
    try:
        yield server, str(cert)
    finally:
        server.discard()


def cipher(server, tls, ca=""):
    account = Account(lab.ORCH_CREDENTIALS.user, lab.ORCH_CREDENTIALS.password, 2.0, tls, ca)
    conn = Server(Node("tls1", server.host, server.port), account)
    try:
        return conn.query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")[0]["Value"]
    finally:
        conn.close()


def test_each_tls_mode_against_a_server_that_offers_tls(tls_server, tmp_path):
    server, cert = tls_server
    assert cipher(server, "preferred") != ""  # offered: encrypted, without verification
    assert cipher(server, "required") != ""
    assert cipher(server, "required", ca=cert) != ""  # verified against its CA, host name included
    assert cipher(server, "disabled") == ""
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other)], check=True, capture_output=True, timeout=60)
    with pytest.raises(DatabaseError, match="cannot connect"):
        cipher(server, "required", ca=str(other))  # a certificate its CA did not sign is refused
