"""The HTTP API of `orch maintain` on a real pair (loopback): each check for each role, a hung
(SIGSTOPped) server that must not stall the endpoint, a killed replica, /status and /history
against the commands, the token, and HTTPS. Forwarding between hosts needs two addresses:
tests/test_http_lab.py (network namespaces)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional, Tuple

import pytest

from . import orchtest as t
from .test_metrics import free_port, wait_for

TOKEN = "test-token-0123456789abcdef"


def fetch(port: int, path: str, method: str = "GET", data: Optional[bytes] = None, token: str = "", timeout: float = 1.0,
          scheme: str = "http", ctx: Optional[ssl.SSLContext] = None) -> Tuple[int, Any]:
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Maintainer:
    """orch maintain for one node, serving the API on its own port."""

    def __init__(self, tmp: Path, s1: Any, s2: Any, node: str, state: str, **extra: Any) -> None:
        self.port = free_port()
        token = tmp / "api.token"
        token.write_text(TOKEN + "\n")
        os.chmod(token, 0o600)
        http = {"listen": "127.0.0.1", "token_file": str(token), **extra.pop("http", {})}
        raw = t.config_dict(s1, s2, state, maintainer={"interval": 1, "metrics_port": self.port}, http=http, **extra)
        raw["self"] = node
        self.config = t.write_config(tmp / f"{node}.yaml", raw)
        self.log_path = tmp / f"maintain-{node}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([t.ORCH, "-c", self.config, "maintain"], stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **kw: Any) -> Tuple[int, Any]:
        return fetch(self.port, path, **kw)

    def wait(self, path: str, status: int, what: str, timeout: float = 20, **kw: Any) -> Any:
        def check():
            try:
                code, doc = self.get(path, **kw)
            except OSError:
                return None
            return doc if code == status else None
        return wait_for(check, what=what, timeout=timeout)

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(30)
        self.log.close()
        return code


@pytest.fixture
def maintainers(cluster, tmp_path):
    s1, s2, _, state = cluster
    (tmp_path / "h1").mkdir()
    (tmp_path / "h2").mkdir()
    m1 = Maintainer(tmp_path / "h1", s1, s2, "server1", state)
    m2 = Maintainer(tmp_path / "h2", s1, s2, "server2", str(tmp_path / "state2"))
    try:
        m1.wait("/health", 200, "server1's API")
        m2.wait("/health", 200, "server2's API")
        yield s1, s2, m1, m2
    finally:
        for m in (m1, m2):
            assert m.stop() == 0, m.log_path.read_text()[-2000:]
        for m in (m1, m2):
            text = m.log_path.read_text()
            assert TOKEN not in text
            t.assert_no_secrets(text)


@pytest.mark.mariadb
def test_each_check_answers_for_each_role(maintainers):
    s1, s2, m1, m2 = maintainers
    code, doc = m1.get("/master")
    assert code == 200 and doc["role"] == "master" and doc["node"] == "server1", doc
    code, doc = m1.get("/replica")
    assert code == 503 and "writable" in doc["reason"], doc
    code, doc = m2.get("/master")
    assert code == 503 and doc["role"] == "replica", doc
    code, doc = m2.get("/replica")
    assert code == 200 and doc["lag"] == 0 and doc["observed_age"] < 2, doc
    assert m2.get("/replica?lag=0")[0] == 200
    # A replica that stops applying fails its check, with the read backend rule's words.
    s2.sql("STOP SLAVE SQL_THREAD")
    doc = m2.wait("/replica", 503, "the replica check to fail with the SQL thread stopped")
    assert "SQL thread" in doc["reason"], doc
    s2.sql("START SLAVE SQL_THREAD")
    m2.wait("/replica", 200, "the replica check to pass again")
    # Errant GTIDs on the replica: not a read backend.
    s2.sql("SET SESSION sql_log_bin = 1")
    s2.sql("INSERT INTO test.t VALUES (900, 'errant')")  # root bypasses read_only
    doc = m2.wait("/replica", 503, "the replica check to fail on an errant GTID")
    assert "errant" in doc["reason"], doc


@pytest.mark.mariadb
def test_status_and_history_are_the_commands_documents(maintainers):
    s1, s2, m1, m2 = maintainers
    m1.wait("/status", 200, "the maintainer's first pass")
    code, doc = m1.get("/status")
    r = t.orch(m1.config, None, "status", "--format", "json")
    assert r.code == 0, r
    expected = json.loads(r.stdout)
    assert set(doc) == set(expected) and [n["name"] for n in doc["nodes"]] == ["server1", "server2"]
    assert [n["role"] for n in doc["nodes"]] == [n["role"] for n in expected["nodes"]] == ["master", "replica"]
    assert set(doc["nodes"][1]) == set(expected["nodes"][1])
    code, hist = m1.get("/history")
    r = t.orch(m1.config, None, "history", "--format", "json")
    assert code == 200 and isinstance(hist, list) and hist == json.loads(r.stdout)
    assert m1.get("/history?since=soon")[0] == 400
    # GET /: the status page (orchestrator.statuspage) of this host's last observation.
    with urllib.request.urlopen(f"http://127.0.0.1:{m1.port}/", timeout=10) as resp:
        code, kind, page = resp.status, resp.headers["Content-Type"], resp.read().decode()
    assert code == 200 and kind.startswith("text/html") and "server1" in page and "as seen from server1" in page, page[:300]


@pytest.mark.mariadb
def test_a_hung_master_does_not_stall_the_endpoint(maintainers):
    """SIGSTOP the master's mariadbd: every check keeps answering (within the client's 1 s),
    from the last observation, and soon says the master is not vouched for; SIGCONT: 200 again."""
    s1, s2, m1, m2 = maintainers
    assert m1.get("/master")[0] == 200
    os.kill(s1.pid, signal.SIGSTOP)
    try:
        answers = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            answers.append(m1.get("/master", timeout=1.0))  # raises (fails the test) if the endpoint stalls
            answers.append(m1.get("/health", timeout=1.0))
            time.sleep(0.1)
        assert answers[-1][0] == 503 and answers[-2][0] == 503, answers[-2:]
        reasons = " ".join(doc["reason"] for _, doc in answers[-2:])
        assert "old" in reasons or "does not answer" in reasons, reasons
        # The replica's host still answers too (its own server is fine).
        assert m2.get("/health", timeout=1.0)[0] == 200
    finally:
        os.kill(s1.pid, signal.SIGCONT)
    m1.wait("/master", 200, "the master's check once its server answers again")


@pytest.mark.mariadb
def test_a_killed_replica_fails_its_checks_and_the_master_stays(maintainers):
    s1, s2, m1, m2 = maintainers
    s2.kill()
    doc = m2.wait("/replica", 503, "the killed replica's check to fail")
    assert "does not answer" in doc["reason"], doc
    assert m2.get("/health")[0] == 503
    assert m1.get("/master")[0] == 200


@pytest.mark.mariadb
def test_posts_need_the_token_and_run_the_command_here(maintainers):
    s1, s2, m1, m2 = maintainers
    assert m1.get("/pause", method="POST", data=b"{}")[0] == 401
    assert m1.get("/pause", method="POST", data=b"{}", token="x" * 26)[0] == 401
    code, doc = m1.get("/pause", method="POST", data=json.dumps({"reason": "http test", "by": "alice"}).encode(),
                       token=TOKEN, timeout=60)
    assert code == 200 and doc["exit_code"] == 0 and "pausing" in doc["output"], doc
    assert doc["output"] == doc["stdout"] + doc["stderr"] and "orch[" not in doc["stdout"], doc
    r = t.orch(m1.config, None, "status", "--format", "json")
    assert json.loads(r.stdout)["maintenance"]["paused"] is True
    assert json.loads(r.stdout)["maintenance"]["record"]["by"] == "alice"
    code, doc = m2.get("/resume", method="POST", data=b'{"dry_run": true}', token=TOKEN, timeout=60)
    assert code == 200 and "dry run: nothing changed" in doc["output"], doc
    code, doc = m2.get("/resume", method="POST", data=b"", token=TOKEN, timeout=60)
    assert code == 200 and doc["exit_code"] == 0, doc
    r = t.orch(m1.config, None, "status", "--format", "json")
    assert json.loads(r.stdout)["maintenance"]["paused"] is False
    # A switchover asked here with no keepalived: refused by its preflight, exit 1 -> 409.
    code, doc = m1.get("/switchover", method="POST", data=b"{}", token=TOKEN, timeout=60)
    assert code == 409 and doc["exit_code"] == 1 and "refusing to switch over" in doc["output"], doc
    assert TOKEN not in json.dumps(doc)


@pytest.mark.mariadb
def test_failed_authentications_lock_the_address_out(maintainers):
    """Five wrong tokens within a minute from one address: its POSTs answer 429 with
    Retry-After, even with the right token; counted, logged (the address, never the token),
    journaled once; the checks and the other host's API are not affected."""
    s1, s2, m1, m2 = maintainers
    wrong = "guess-" + "w" * 20
    for i in range(5):
        code, doc = m1.get("/pause", method="POST", data=b"{}", token=wrong)
        assert code == 401, (i, doc)
    req = urllib.request.Request(f"http://127.0.0.1:{m1.port}/pause", data=b'{"reason": "locked"}', method="POST")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=5)
    assert caught.value.code == 429 and 290 <= int(caught.value.headers["Retry-After"]) <= 300
    assert "too many failed authentications" in json.loads(caught.value.read())["error"]
    r = t.orch(m1.config, None, "status", "--format", "json")
    assert json.loads(r.stdout)["maintenance"]["paused"] is False  # the locked-out POST ran nothing
    assert m1.get("/health")[0] == 200  # the checks are not limited
    code, doc = m2.get("/resume", method="POST", data=b'{"dry_run": true}', token=TOKEN, timeout=60)
    assert code == 200, doc  # the other host keeps its own count
    with urllib.request.urlopen(f"http://127.0.0.1:{m1.port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert "orch_http_auth_failures_total 5.0" in metrics, [line for line in metrics.splitlines() if "auth" in line]
    r = t.orch(m1.config, None, "history", "--format", "json")
    lockouts = [e for e in json.loads(r.stdout) if e["event"] == "HTTP_LOCKOUT"]
    assert len(lockouts) == 1 and "127.0.0.1" in lockouts[0]["reason"] and lockouts[0]["outcome"] == "refused", lockouts
    log_text = m1.log_path.read_text()
    assert "lock-out: 127.0.0.1" in log_text and log_text.count("missing or wrong token") >= 5
    assert wrong not in log_text and wrong not in r.stdout


@pytest.mark.mariadb
def test_https_with_the_token(cluster, tmp_path):
    s1, s2, _, state = cluster
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=orch-test",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    m = Maintainer(tmp_path, s1, s2, "server1", state, http={"tls_cert": str(cert), "tls_key": str(key)})
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        m.wait("/master", 200, "the master check over HTTPS", scheme="https", ctx=ctx)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            m.get("/master", scheme="https", ctx=ssl.create_default_context())  # an unknown CA is refused
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            m.get("/master")  # plain HTTP on the HTTPS port gets no answer it can read
        # A client that connects and never starts TLS does not hold up the others.
        import socket

        idle = socket.create_connection(("127.0.0.1", m.port))
        try:
            assert m.get("/health", scheme="https", ctx=ctx)[0] == 200
        finally:
            idle.close()
        code, doc = m.get("/resume", method="POST", data=b'{"dry_run": true}', token=TOKEN, scheme="https", ctx=ctx, timeout=60)
        assert code == 200 and doc["exit_code"] == 0, doc
    finally:
        assert m.stop() == 0


@pytest.mark.mariadb
def test_a_pause_kept_on_one_host_is_handed_to_the_other(cluster, tmp_path):
    """No writable server: orch pause keeps the record on this host and asks the other host's
    orch (POST /pause) to keep it too; orch resume likewise. Both hosts share 127.0.0.1 here,
    so server1's config names server2's API port as maintainer.metrics_port (the port orch
    calls the peer on)."""
    s1, s2, _, state = cluster
    (tmp_path / "h2").mkdir()
    m2 = Maintainer(tmp_path / "h2", s1, s2, "server2", str(tmp_path / "state2"))
    try:
        m2.wait("/health", 200, "server2's API")
        raw = t.config_dict(s1, s2, state, maintainer={"interval": 1, "metrics_port": m2.port},
                            http={"token_file": str(tmp_path / "h2" / "api.token")})
        here = t.write_config(tmp_path / "server1-cli.yaml", raw)
        s1.sql("SET GLOBAL read_only = 1")  # no writable server: a read-only one must not log a row of its own
        r = t.orch(here, "server1", "pause", "--reason", "both fenced", "--yes", env={"SUDO_USER": "carol"})
        assert r.code == 0, r
        assert "asking server2's orch to pause too (POST /pause)" in r.stdout and "server2: " in r.stdout, r
        for config, node in ((here, "server1"), (m2.config, "server2")):
            doc = json.loads(t.orch(config, node, "status", "--format", "json").stdout)
            assert doc["maintenance"]["paused"] is True, (node, doc["maintenance"])
            assert doc["maintenance"]["record"]["seen_on"] == "state_dir" and doc["maintenance"]["record"]["by"] == "carol"
        r = t.orch(here, "server1", "resume", "--yes")
        assert r.code == 0 and "asking server2's orch to resume too" in r.stdout, r
        doc = json.loads(t.orch(m2.config, "server2", "status", "--format", "json").stdout)
        assert doc["maintenance"]["paused"] is False, doc["maintenance"]
        # The other host's API down: this host keeps it, and says the command is incomplete (exit 3).
        assert m2.stop() == 0
        r = t.orch(here, "server1", "pause", "--yes")
        assert r.code == 3 and "cannot ask server2's orch" in r.stdout and "run orch pause on server2's host too" in r.stdout, r
        # A switchover asked on a host that is not the master, with the master's API down: one line, exit 1.
        s1.sql("SET GLOBAL read_only = 0")
        raw2 = {**raw, "self": "server2"}
        there = t.write_config(tmp_path / "server2-cli.yaml", raw2)
        r = t.orch(there, "server2", "switchover", "--yes")
        assert r.code == 1 and "cannot ask server1's orch" in r.stderr, r
        assert TOKEN not in r.stdout + r.stderr
    finally:
        if m2.proc.poll() is None:
            m2.stop()
