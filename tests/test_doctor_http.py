"""orch doctor's checks of the http: section: the token file (exists, readable, a usable token,
mode not group/world-readable), the TLS certificate and key (they load), the CA; a warning when
the API is served without a token. Real files (and real certificates from openssl) gathered by
``gather_http``, judged by the pure ``check_http``; then ``orch doctor --format json`` against a
real pair shows the same checks under the same keys, and never the token. Also the haproxy:
section's sockets (a warning when one does not answer)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

from orchestrator.commands import doctor as d
from orchestrator.config import validate

from . import orchtest as t

TOKEN = "doctor-t\u00f6ken-is-not-printed"  # non-ASCII: read_token refuses it (printable ASCII only)
GOOD_TOKEN = "doctor-token-0123456789-secret"


def cfg_with(tmp_path: Path, metrics_port: int = 9105, **http: str) -> Any:
    raw = {"self": "server1", "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
           "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
           "state_dir": str(tmp_path / "state"), "keepalived": {"vip_check": False},
           "maintainer": {"metrics_port": metrics_port}, "http": http}
    return validate(raw, str(tmp_path / "orch.yaml"))


def token_file(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    p = tmp_path / "api.token"
    p.write_bytes(text.encode("utf-8"))
    p.chmod(mode)
    return str(p)


def by_name(checks: List[d.Check]) -> Dict[str, d.Check]:
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), names
    return {c.name: c for c in checks}


def certificate(tmp_path: Path, name: str = "api") -> Dict[str, str]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=orch-doctor",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return {"tls_cert": str(cert), "tls_key": str(key)}


@pytest.mark.parametrize("content, mode, expected", [
    (GOOD_TOKEN + "\n", 0o600, {"http token file": "pass"}),
    (GOOD_TOKEN, 0o400, {"http token file": "pass"}),
    (GOOD_TOKEN + "\n", 0o640, {"http token file mode": "warn", "http token file": "pass"}),
    (GOOD_TOKEN + "\n", 0o604, {"http token file mode": "warn", "http token file": "pass"}),
    ("", 0o600, {"http token file": "fail"}),
    ("\n", 0o600, {"http token file": "fail"}),
    ("short\n", 0o600, {"http token file": "fail"}),
    (TOKEN + "\n", 0o600, {"http token file": "fail"}),
])
def test_token_file(tmp_path, content, mode, expected):
    cfg = cfg_with(tmp_path, token_file=token_file(tmp_path, content, mode))
    checks = d.check_http(cfg, d.gather_http(cfg))
    assert {c.name: c.status for c in checks} == expected, checks
    for c in checks:
        assert GOOD_TOKEN not in c.detail + c.fix and TOKEN not in c.detail + c.fix
    if "http token file mode" in expected:
        assert f"mode {mode:o}" in by_name(checks)["http token file mode"].detail
        assert by_name(checks)["http token file mode"].fix == f"chmod 600 {tmp_path / 'api.token'}"


def test_token_file_missing_or_unreadable(tmp_path):
    cfg = cfg_with(tmp_path, token_file="missing.token")
    c = by_name(d.check_http(cfg, d.gather_http(cfg)))["http token file"]
    assert c.status == "fail" and "does not exist" in c.detail and str(tmp_path / "missing.token") in c.detail
    # A directory where the file should be: it exists but holds no token.
    (tmp_path / "dir.token").mkdir()
    cfg = cfg_with(tmp_path, token_file="dir.token")
    c = by_name(d.check_http(cfg, d.gather_http(cfg)))["http token file"]
    assert c.status == "fail" and "Is a directory" in c.detail, c
    # Unreadable for this user (as root every file is readable: the gathered fact stands in).
    facts = d.HttpFacts(token=d.FileFacts(str(tmp_path / "api.token"), exists=True, readable=False, mode=0o000))
    c = by_name(d.check_http(cfg, facts))["http token file"]
    assert c.status == "fail" and "not readable" in c.detail


def test_no_token_with_the_api_served_warns_that_posts_answer_403(tmp_path):
    checks = by_name(d.check_http(cfg_with(tmp_path), d.HttpFacts()))
    assert checks["http token file"].status == "warn" and "403" in checks["http token file"].detail
    # The API off and no token: nothing to say.
    assert d.check_http(cfg_with(tmp_path, metrics_port=0), d.HttpFacts()) == []


def test_tls_certificate_and_ca(tmp_path):
    tls = certificate(tmp_path)
    cfg = cfg_with(tmp_path, token_file=token_file(tmp_path, GOOD_TOKEN), tls_ca=tls["tls_cert"], **tls)
    checks = by_name(d.check_http(cfg, d.gather_http(cfg)))
    assert checks["http TLS certificate"].status == "pass" and checks["http TLS CA"].status == "pass", checks
    # Another certificate's key: the pair does not load.
    other = certificate(tmp_path, "other")
    cfg = cfg_with(tmp_path, tls_cert=tls["tls_cert"], tls_key=other["tls_key"])
    c = by_name(d.check_http(cfg, d.gather_http(cfg)))["http TLS certificate"]
    assert c.status == "fail" and "does not load" in c.detail, c
    # Not PEM at all, and files that do not exist.
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cfg = cfg_with(tmp_path, tls_cert="junk.pem", tls_key="junk.pem", tls_ca="nowhere.pem")
    checks = by_name(d.check_http(cfg, d.gather_http(cfg)))
    assert checks["http TLS certificate"].status == "fail" and checks["http TLS CA"].status == "fail", checks
    assert "nowhere.pem" in checks["http TLS CA"].detail


@pytest.mark.mariadb
def test_orch_doctor_json_has_the_http_checks_and_never_the_token(cluster, tmp_path):
    s1, s2, _, state = cluster
    token = token_file(tmp_path, GOOD_TOKEN + "\n", 0o644)
    cfg = t.write_config(tmp_path / "doctor-http.yaml", t.config_dict(
        s1, s2, state, maintainer={"metrics_port": 9105}, http={"token_file": token, "tls_cert": "missing.pem",
                                                                 "tls_key": "missing.key"}))
    r = t.orch(cfg, "server1", "doctor", "--format", "json", timeout=60)
    doc = json.loads(r.stdout)
    assert r.code == 1 and doc["exit"] == 1, r  # the certificate fails
    found = {c["name"]: c for c in doc["checks"] if c["name"].startswith("http ")}
    assert {k: v["status"] for k, v in found.items()} == {
        "http token file mode": "warn", "http token file": "pass", "http TLS certificate": "fail"}, found
    assert set(found["http token file mode"]) == {"name", "status", "detail", "fix"}
    assert GOOD_TOKEN not in r.stdout + r.stderr
    table = t.orch(cfg, "server1", "doctor", timeout=60)
    assert "WARN  http token file mode" in table.stdout and GOOD_TOKEN not in table.stdout + table.stderr
    os.chmod(token, 0o600)


def test_haproxy_sockets(tmp_path):
    """haproxy.stats_sockets: a socket that does not answer, or lacks a backend, is a warning."""
    from orchestrator import haproxy as hp

    up = hp.BackendServer("write", "write", "server1", "10.0.0.1:3306", "UP", "UP", "L7OK", "200", False)
    down = hp.BackendServer("read", "read", "server1", "10.0.0.1:3306", "DOWN", "DOWN", "L7STS", "503", False)
    readings = [hp.read_one(str(tmp_path / "gone.sock"), "write", "read"),
                hp.Reading("/run/a.sock", True, "no backend read (haproxy.read_backend) in its show stat", (up,)),
                hp.Reading("/run/b.sock", True, "", (up, down))]
    checks = by_name(d.check_haproxy(readings))
    assert [c.status for c in checks.values()] == ["warn", "warn", "pass"], checks
    assert "No such file or directory" in checks[f"haproxy {tmp_path / 'gone.sock'}"].detail
    assert "haproxy.write_backend" in checks["haproxy /run/a.sock"].fix
    assert checks["haproxy /run/b.sock"].detail == "show stat answers; up: write server1"
    assert d.check_haproxy([]) == []
