"""Alerts: a webhook and a mail after the runs that matter, received by sinks this test
starts on loopback, deduplicated across processes, never holding a failover up.

The SMTP sink is a small line-protocol server speaking just enough SMTP (EHLO, AUTH PLAIN,
MAIL, RCPT, DATA, QUIT); the HTTP sink is http.server. Both record what they received.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from orchestrator import alerts
from orchestrator.config import parse
from orchestrator.errors import ConfigError

from . import orchtest as t

TOKEN = "tok-7f3a9c-webhook-secret"
SMTP_PASSWORD = "smtp-pw-9d2e41"


# --- sinks ---------------------------------------------------------------------------


class HttpSink:
    """Records every POST (path, headers, JSON body) and answers 200."""

    def __init__(self) -> None:
        self.received: List[Dict[str, Any]] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.append({"path": self.path, "headers": dict(self.headers), "raw": body.decode(),
                                      "json": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/orch"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """A minimal SMTP server: records each message's envelope, AUTH credentials and data."""

    def __init__(self) -> None:
        self.messages: List[Dict[str, Any]] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 sink ESMTP")
                mail: Dict[str, Any] = {"rcpt": [], "auth": None}
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode().rstrip("\r\n")
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        self.reply("250-sink")
                        self.reply("250-AUTH PLAIN")
                        self.reply("250 8BITMIME")
                    elif verb == "HELO":
                        self.reply("250 sink")
                    elif verb == "AUTH":
                        parts = cmd.split()
                        _, user, password = base64.b64decode(parts[2]).decode().split("\0")
                        mail["auth"] = (user, password)
                        self.reply("235 2.7.0 accepted")
                    elif verb == "MAIL":
                        mail["from"] = cmd[10:]
                        self.reply("250 ok")
                    elif verb == "RCPT":
                        mail["rcpt"].append(cmd[8:])
                        self.reply("250 ok")
                    elif verb == "DATA":
                        self.reply("354 go on")
                        data = []
                        while True:
                            chunk = self.rfile.readline().decode()
                            if chunk in (".\r\n", ".\n", ""):
                                break
                            data.append(chunk[1:] if chunk.startswith("..") else chunk)
                        mail["data"] = "".join(data)
                        sink.messages.append(dict(mail))
                        mail = {"rcpt": [], "auth": mail["auth"]}
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:  # RSET, NOOP...
                        self.reply("250 ok")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DeadEndpoint:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sinks():
    http_sink, smtp_sink = HttpSink(), SmtpSink()
    yield http_sink, smtp_sink
    http_sink.close()
    smtp_sink.close()


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def alerts_config(tmp_path: Path, webhook_url: str = "", smtp_port: int = 0, **extra: Any) -> Dict[str, Any]:
    section: Dict[str, Any] = dict(extra)
    if webhook_url:
        section["webhook"] = {"url": webhook_url, "timeout": 2, "headers": {"Authorization": f"Bearer {TOKEN}"}}
    if smtp_port:
        pw = tmp_path / "smtp.pass"
        pw.write_text(SMTP_PASSWORD + "\n")
        pw.chmod(0o600)
        section["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "user": "orch-alerts", "password_file": str(pw),
                           "from": "orch@example.com", "to": ["ops@example.com", "dba@example.com"], "timeout": 2}
    return section


def write(cluster, tmp_path: Path, name: str, section: Dict[str, Any], **extra: Any) -> str:
    s1, s2, _, state = cluster
    return t.write_config(tmp_path / name, t.config_dict(s1, s2, state, alerts=section, **extra))


def secrets_absent(*texts: str) -> None:
    t.assert_no_secrets(*texts, extra=(TOKEN, SMTP_PASSWORD))


def journal_ends(state: str) -> List[Dict[str, Any]]:
    return [e for e in t.journal(state) if e["phase"] == "end"]


def break_replica_sql_thread(s1, s2) -> None:
    """server2's SQL thread stops on a duplicate key: a promotion of server2 is refused."""
    conn = s2.connect()
    with conn.cursor() as cur:
        cur.execute("SET sql_log_bin = 0")
        cur.execute("INSERT INTO test.t VALUES (7, 'conflict')")
    conn.close()
    s1.sql("INSERT INTO test.t VALUES (7, 'row 7')")
    wait_for(lambda: t.slave_status(s2)["Slave_SQL_Running"] == "No")


# --- real runs -------------------------------------------------------------------------


@pytest.mark.mariadb
def test_promotion_sends_webhook_json_and_a_readable_mail(cluster, sinks, tmp_path):
    s1, s2, _, state = cluster
    http_sink, smtp_sink = sinks
    cfg = write(cluster, tmp_path, "alerts.yaml", alerts_config(tmp_path, http_sink.url, smtp_sink.port))
    s1.kill()
    r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
    assert r.code == 0, r
    assert not t.read_only(s2)
    # The process waited for its sending threads at exit: both already arrived.
    assert len(http_sink.received) == 1 and len(smtp_sink.messages) == 1, r
    end = journal_ends(state)[-1]

    hook = http_sink.received[0]
    assert hook["path"] == "/hooks/orch" and hook["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert hook["headers"]["Content-Type"] == "application/json"
    body = hook["json"]
    assert (body["event"], body["cluster"], body["node"], body["outcome"], body["trigger"]) == (
        "promotion", "test", "server2", "act", "MASTER")
    begin = [e for e in t.journal(state) if e["phase"] == "begin"][-1]
    assert body["run_id"] == end["id"] == begin["id"] and body["reason"] == begin["reason"]
    assert abs(datetime.datetime.fromisoformat(body["time"].replace("Z", "+00:00")).timestamp() - time.time()) < 60
    assert body["suppressed"] == 0 and any("make server2 writable" in s for s in body["steps"])

    mail = smtp_sink.messages[0]
    assert mail["auth"] == ("orch-alerts", SMTP_PASSWORD)  # logged in with the password file's password
    assert mail["from"].startswith("<orch@example.com>") and mail["rcpt"] == ["<ops@example.com>", "<dba@example.com>"]
    text = mail["data"]
    assert "Subject: [orch test] server2 promoted to master" in text
    for line in ("cluster:  test", "node:     server2", "outcome:  act", f"run id:   {end['id']}", "reason:   "):
        assert line in text, text
    assert "[ok] make server2 writable" in text
    assert "alert sent: webhook to http://127.0.0.1" in r.stderr and "alert sent: mail via 127.0.0.1" in r.stderr
    secrets_absent(hook["raw"], text, r.stdout, r.stderr,
                   Path(state, "journal.jsonl").read_text(), Path(state, alerts.STATE).read_text())


@pytest.mark.mariadb
def test_refusals_are_deduplicated_across_runs_and_counted_in_the_next_alert(cluster, sinks, tmp_path):
    s1, s2, _, state = cluster
    http_sink, smtp_sink = sinks
    cfg = write(cluster, tmp_path, "alerts.yaml", alerts_config(tmp_path, http_sink.url, smtp_sink.port, dedup_seconds=300))
    break_replica_sql_thread(s1, s2)
    s1.kill()
    outputs = []
    for _ in range(3):  # keepalived retrying, or a flapping cluster: three separate processes
        r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 1 and "SQL thread stopped on error 1062" in r.stderr, r
        outputs.append(r.output)
    assert len(http_sink.received) == 1 and len(smtp_sink.messages) == 1
    body = http_sink.received[0]["json"]
    assert (body["event"], body["outcome"], body["node"]) == ("refusal", "refused", "server2")
    assert "SQL thread stopped on error 1062" in body["reason"]
    assert "Subject: [orch test] server2: MASTER refused" in smtp_sink.messages[0]["data"]
    assert all("suppressed: sent less than 300s ago" in o for o in outputs[1:])
    assert [e["result"] for e in journal_ends(state)] == ["refused"] * 3  # the journal keeps every one

    # The next alert sent (a forced promotion) says how many were held back.
    r = t.orch(cfg, "server2", "promote", "--force", "--yes")
    assert r.code == 0, r
    assert len(http_sink.received) == 2 and len(smtp_sink.messages) == 2
    body = http_sink.received[1]["json"]
    assert body["event"] == "promotion" and body["suppressed"] == 2
    assert body["suppressed_alerts"][0]["count"] == 2 and "refusal on server2" in body["suppressed_alerts"][0]["alert"]
    text = smtp_sink.messages[1]["data"]
    assert "suppressed since the last alert (identical within alerts.dedup_seconds): 2" in text
    secrets_absent(*outputs, r.output, *(h["raw"] for h in http_sink.received), *(m["data"] for m in smtp_sink.messages))


@pytest.mark.mariadb
def test_dead_webhook_costs_the_failover_no_more_than_its_timeout(cluster, sinks, tmp_path):
    s1, s2, _, state = cluster
    _, smtp_sink = sinks
    dead = DeadEndpoint()
    try:
        section = alerts_config(tmp_path, dead.url, smtp_sink.port)
        timeout = section["webhook"]["timeout"]
        cfg = write(cluster, tmp_path, "dead.yaml", section)
        s1.kill()
        r = t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        exited = time.time()
    finally:
        dead.close()
    assert r.code == 0, r
    assert not t.read_only(s2)
    end = journal_ends(state)[-1]
    assert end["result"] == "act"
    ended = datetime.datetime.fromisoformat(end["time"].replace("Z", "+00:00")).timestamp()
    # From the journal's end record (writes long open) to the process's exit: the webhook's
    # timeout, and the interpreter's teardown, no more.
    after_end = exited - ended
    print(f"dead webhook: exit {after_end:.2f}s after the end record (timeout {timeout}s)")
    assert after_end < timeout + 0.75, f"{after_end:.2f}s after the end record (webhook timeout {timeout}s)\n{r}"
    assert after_end > timeout * 0.8, "the dead endpoint was not waited for at all?"
    assert "alert not sent: webhook to http://127.0.0.1" in r.stderr and f"no answer within its timeout ({timeout:g}s)" in r.stderr
    assert r.stderr.count("WARNING") >= 1 and "Traceback" not in r.stderr
    assert len(smtp_sink.messages) == 1, "the mail goes out even though the webhook hangs"
    secrets_absent(r.output)


@pytest.mark.mariadb
def test_maintainer_rejoin_alerts(cluster, sinks, tmp_path):
    """The maintainer's runs go through the same door: its rejoin of the old master alerts."""
    s1, s2, _, state = cluster
    http_sink, smtp_sink = sinks
    cfg = write(cluster, tmp_path, "alerts.yaml", alerts_config(tmp_path, http_sink.url, smtp_sink.port))
    s1.kill()
    assert t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100").code == 0
    s1.start()
    s1.sql("SET GLOBAL read_only = 1")  # as read_only=ON in my.cnf brings it back; keepalived's BACKUP event is lost
    r = t.orch(cfg, "server1", "maintain", "--once")
    assert r.code == 0, str(r)
    t.lab.wait_gtid_equal(s1, s2)
    got = [(h["json"]["event"], h["json"]["node"], h["json"]["by"]) for h in http_sink.received]
    assert got == [("promotion", "server2", ""), ("rejoin", "server1", "maintain")], str(r)
    assert "Subject: [orch test] server1 rejoined as a replica" in smtp_sink.messages[1]["data"]
    assert "run by maintain" in smtp_sink.messages[1]["data"]
    secrets_absent(r.output, *(h["raw"] for h in http_sink.received), *(m["data"] for m in smtp_sink.messages))


@pytest.mark.mariadb
def test_rejoin_and_anti_flapping_block_alert(cluster, sinks, tmp_path):
    """Failover, rejoin of the old master, then a second automatic failover: blocked, and
    the repeated block (its age in seconds changes) is one alert."""
    s1, s2, _, state = cluster
    http_sink, _ = sinks
    cfg = write(cluster, tmp_path, "alerts.yaml", alerts_config(tmp_path, http_sink.url),
                failover={"catchup_timeout": 5, "block_seconds": 3600})
    s1.kill()
    assert t.orch(cfg, "server2", "notify", "INSTANCE", "VI_1", "MASTER", "100").code == 0
    s1.start()
    r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "BACKUP", "90")
    assert r.code == 0, r
    got = [(h["json"]["event"], h["json"]["node"], h["json"]["outcome"]) for h in http_sink.received]
    assert got == [("promotion", "server2", "act"), ("rejoin", "server1", "act")], got
    assert "Rewind" not in http_sink.received[1]["raw"]
    promotion_steps = [s["step"] for s in journal_ends(state)[0]["steps"]]
    assert "RecordPromotion" in promotion_steps, promotion_steps
    t.lab.wait_gtid_equal(s1, s2)
    s2.kill()
    outputs = []
    for _ in range(2):
        r = t.orch(cfg, "server1", "notify", "INSTANCE", "VI_1", "MASTER", "100")
        assert r.code == 1 and "anti-flapping" in r.stderr, str(r)
        outputs.append(r.output)
        time.sleep(1.1)  # the block's age, in whole seconds, is in its reason
    got = [(h["json"]["event"], h["json"]["node"], h["json"]["outcome"]) for h in http_sink.received]
    assert got == [("promotion", "server2", "act"), ("rejoin", "server1", "act"), ("anti-flapping", "server1", "refused")], got
    assert "orch ack" in http_sink.received[2]["json"]["reason"]
    assert "suppressed: sent less than 300s ago" in outputs[1]
    secrets_absent(*outputs, *(h["raw"] for h in http_sink.received))


def test_no_alerts_configured_loads_no_alert_code(tmp_path):
    """The notify path with no alerts section: a None check, nothing imported."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    config = tmp_path / "orch.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": "test", "self": "server1",
        "nodes": {"server1": {"host": "127.0.0.1", "port": ports[0]}, "server2": {"host": "127.0.0.1", "port": ports[1]}},
        "mysql": {"user": "orch", "password": "pw", "connect_timeout": 1}, "replication": {"user": "repl", "password": "pw"},
        "state_dir": str(tmp_path / "state"), "keepalived": {"vip_check": False},
    }))
    config.chmod(0o600)
    code = "import json, sys; from orchestrator import cli; c = cli.main(sys.argv[1:]); print(json.dumps([c, sorted(sys.modules)]))"
    proc = subprocess.run([sys.executable, "-c", code, "-c", str(config), "notify", "INSTANCE", "VI_1", "BACKUP", "90"],
                          capture_output=True, text=True, timeout=60)
    exit_code, modules = json.loads(proc.stdout.splitlines()[-1])
    assert exit_code == 3, proc.stderr  # journaled (incomplete): execute_plan ran to its end
    assert not {"orchestrator.alerts", "smtplib", "urllib.request"} & set(modules)


# --- pure ------------------------------------------------------------------------------

GOOD = {
    "self": "server1",
    "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
    "mysql": {"user": "orch", "password": "pw1"},
    "replication": {"user": "repl", "password": "pw2"},
    "keepalived": {"vip": "10.0.0.100"},
}


def problems(alerts_section: Any) -> List[str]:
    with pytest.raises(ConfigError) as exc:
        parse({**GOOD, "alerts": alerts_section})
    return exc.value.problems


def test_config_defaults_and_secrets(tmp_path):
    pw = tmp_path / "smtp.pass"
    pw.write_text("mailpw\n")
    c = parse({**GOOD, "alerts": {
        "webhook": {"url": "https://hooks.example.com/services/T1/B2/XYZ", "headers": {"Authorization": "Bearer abc-token"}},
        "smtp": {"host": "mail.example.com", "starttls": True, "user": "orch", "password_file": str(pw),
                 "from": "orch@example.com", "to": ["ops@example.com"]},
    }})
    assert parse(GOOD).alerts is None
    a = c.alerts
    assert a.dedup_seconds == 300 and a.webhook.timeout == 3.0 and a.smtp.timeout == 3.0
    assert a.smtp.port == 587 and a.smtp.password == "mailpw" and a.smtp.sender == "orch@example.com"
    # Logs redact every one: the password, the header value and its token, the URL (often the token itself).
    assert {"mailpw", "Bearer abc-token", "abc-token", "https://hooks.example.com/services/T1/B2/XYZ"} <= set(c.secrets)
    assert "mailpw" not in repr(c) and "abc-token" not in repr(c) and "XYZ" not in repr(c)


@pytest.mark.parametrize("section, expected", [
    ({"webhok": {"url": "http://x/"}}, "alerts.webhok: unknown key"),
    ({}, "alerts: give webhook or smtp (or leave alerts out)"),
    ({"webhook": {"url": "http://x/", "timeuot": 1}}, "alerts.webhook.timeuot: unknown key"),
    ({"webhook": {"url": "ftp://x/"}}, "alerts.webhook.url: expected an http:// or https:// URL"),
    ({"webhook": {"url": "http://user:pw@x/"}}, "alerts.webhook.url: credentials in the URL are not supported: give them in headers (Authorization)"),
    ({"webhook": {"url": "http://x/", "headers": {"X-Token": "a\r\nInjected: 1"}}}, "alerts.webhook.headers.X-Token: expected a one-line string"),
    ({"webhook": {"url": "http://x/", "timeout": 0}}, "alerts.webhook.timeout: expected a number from 0.1 to 60"),
    ({"smtp": {"host": "mail.example.com", "user": "u", "password": "p", "from": "a@b", "to": ["c@d"]}},
     "alerts.smtp.starttls: must be true to log in to a non-loopback host (the password would cross the network in clear)"),
    ({"smtp": {"host": "127.0.0.1", "password": "p", "from": "a@b", "to": ["c@d"]}}, "alerts.smtp.user: missing (a password needs a user)"),
    ({"smtp": {"host": "127.0.0.1", "from": "a@b", "to": "c@d"}}, "alerts.smtp.to: expected a list of mail addresses"),
    ({"smtp": {"host": "127.0.0.1", "from": "a@b", "to": ["nobody"]}}, "alerts.smtp.to[0]: expected a mail address"),
    ({"smtp": {"host": "127.0.0.1", "to": ["c@d"]}}, "alerts.smtp.from: missing"),
    ({"smtp": {"host": "127.0.0.1", "from": "a@b", "to": ["c@d"], "pasword": "x"}}, "alerts.smtp.pasword: unknown key"),
    ({"webhook": {"url": "http://x/"}, "dedup_seconds": -1}, "alerts.dedup_seconds: expected a number from 0 to 86400"),
])
def test_config_errors_name_the_key(section, expected):
    got = problems(section)
    assert expected in got, got
    assert not any("Injected" in p for p in got), "a header value (maybe a token) was echoed"


def record(**kw: Any) -> Dict[str, Any]:
    return {"id": "run-1", "node": "server2", "event": "MASTER", "result": "act", "reason": "promoting server2", "error": "",
            "steps": [], **kw}


def step(name: str, result: str = "ok") -> Dict[str, Any]:
    return {"step": name, "description": name, "result": result, "detail": "", "ms": 1}


@pytest.mark.parametrize("rec, kind", [
    (record(steps=[step("CatchUp"), step("SetWritable")]), alerts.PROMOTION),
    (record(steps=[step("Fence"), step("SetWritable", "failed")], result="failed", error="boom"), alerts.FAILURE),
    (record(result="refused", reason="refusing to promote server2: its SQL thread stopped"), alerts.REFUSAL),
    (record(result="refused", reason="refusing to promote server2: anti-flapping block: ..."), alerts.ANTI_FLAPPING),
    (record(result="refused", reason="promoting server2", error="refused by the anti-flapping block"), alerts.ANTI_FLAPPING),
    (record(event="SPLIT-BRAIN", by="maintain", steps=[step("Fence")]), alerts.SPLIT_BRAIN),
    (record(event="SPLIT-BRAIN", by="maintain", result="noop", reason="SPLIT BRAIN: both writable"), alerts.SPLIT_BRAIN),
    (record(reason="both servers are writable: fencing server1, server2 stays the master", steps=[step("Fence")]), alerts.SPLIT_BRAIN),
    (record(event="REJOIN", by="maintain", steps=[step("ChangeSource"), step("StartReplica")]), alerts.REJOIN),
    (record(event="BACKUP", node="server1", steps=[step("Fence"), step("ChangeSource"), step("StartReplica")]), alerts.REJOIN),
    (record(event="BACKUP", steps=[step("Rewind"), step("ChangeSource")]), alerts.REWIND),
    (record(event="MAINTAIN", by="maintain", steps=[step("AddBackend")]), alerts.MAINTAINER),
    (record(event="MAINTAIN", by="maintain", steps=[step("AddBackend", "failed")], result="partial"), None),
    (record(event="BACKUP", steps=[step("Fence")], result="incomplete"), None),
])
def test_which_runs_alert(rec, kind):
    assert alerts.classify(rec) == kind


def cfg_with(**section: Any):
    return parse({**GOOD, "alerts": {"webhook": {"url": "http://127.0.0.1:9/x", "headers": {"X-Key": "hdr-secret-1"}}, **section}})


def test_dedup_window_counts_and_reports_then_expires():
    cfg = cfg_with()
    refusal = alerts.alert_for(cfg, record(result="refused", reason="refusing: SQL thread stopped"), 1000.0)
    other = alerts.alert_for(cfg, record(steps=[step("SetWritable")]), 1000.0)
    send, state, suppressed = alerts.dedup({}, refusal, 1000.0, 300)
    assert send and suppressed == ()
    for now in (1001.0, 1100.0):
        send, state, _ = alerts.dedup(json.loads(json.dumps(state)), refusal, now, 300)  # through JSON, as on disk
        assert not send
    # Another alert goes out at once, carrying the count; the counts restart.
    send, state, suppressed = alerts.dedup(state, other, 1150.0, 300)
    assert send and suppressed == (("refusal on server2: refusing: SQL thread stopped", 2),)
    send, state, suppressed = alerts.dedup(state, refusal, 1299.0, 300)
    assert not send
    # Past the window the same alert is sent again, with what was held back meanwhile.
    send, state, suppressed = alerts.dedup(state, refusal, 1300.0, 300)
    assert send and suppressed == (("refusal on server2: refusing: SQL thread stopped", 1),)
    assert not alerts.dedup(state, refusal, 1301.0, 300)[0]
    # Numbers in the reason (ages, timings) do not make a repeated refusal a new alert.
    later = alerts.alert_for(cfg, record(result="refused", reason="anti-flapping block: promoted 17s ago"), 1302.0)
    earlier = alerts.alert_for(cfg, record(result="refused", reason="anti-flapping block: promoted 12s ago"), 1302.0)
    assert later.key == earlier.key and later.key != refusal.key
    # A clock stepped back never mutes alerts; a window of 0 never deduplicates.
    assert alerts.dedup(state, refusal, 10.0, 300)[0]
    assert alerts.dedup(state, refusal, 1400.0, 0)[0]
    # An unreadable or foreign state is a fresh one.
    assert alerts.dedup({"keys": "garbage"}, refusal, 1.0, 300)[0]


def test_messages_carry_no_secrets():
    cfg = cfg_with()
    rec = record(result="failed", reason="promoting server2", error="login failed with pw1 and hdr-secret-1",
                 steps=[{**step("SetWritable", "failed"), "detail": "pw2 rejected"}])
    alert = alerts.alert_for(cfg, rec, 0.0)
    body = json.dumps(alerts.webhook_body(alert))
    subject, text = alerts.mail_text(alert)
    for secret in ("pw1", "pw2", "hdr-secret-1", "http://127.0.0.1:9/x"):
        assert secret not in body and secret not in text and secret not in subject
    assert "login failed with *** and ***" in text and alert.event == alerts.FAILURE


def test_state_file_replaced_atomically(tmp_path):
    path = str(tmp_path / alerts.STATE)
    alerts.save_state(path, {"format": 1, "keys": {}})
    assert alerts.load_state(path) == {"format": 1, "keys": {}}
    assert (tmp_path / alerts.STATE).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [alerts.STATE]  # no temporary file left
    (tmp_path / alerts.STATE).write_text("{torn")
    assert alerts.load_state(path) == {}


def test_failure_to_send_is_a_warning_never_an_exception(tmp_path, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cfg = parse({**GOOD, "state_dir": str(tmp_path), "alerts": {
        "webhook": {"url": f"http://127.0.0.1:{closed}/secret-path-token", "timeout": 1},
        "smtp": {"host": "127.0.0.1", "port": closed, "from": "a@example.com", "to": ["b@example.com"], "timeout": 1}}})
    caplog.set_level("INFO", logger="orchestrator.alerts")
    alerts.after_run(cfg, record(steps=[step("SetWritable")]))  # returns at once
    alerts.wait()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith(f"alert not sent: webhook to http://127.0.0.1:{closed} failed: [Errno 111]") for w in warnings), warnings
    assert any(w.startswith(f"alert not sent: mail via 127.0.0.1:{closed} failed") for w in warnings), warnings
    assert not any("secret-path-token" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / alerts.STATE).read_text())["keys"], "the dedup state was saved"


def test_example_config_alerts_block_is_valid_once_uncommented():
    path = Path(__file__).resolve().parent.parent / "conf" / "orch.yaml"
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# alerts:"))
    block = [line[2:] for line in lines[start:] if line.startswith("# ")]
    section = yaml.safe_load("\n".join(block))["alerts"]
    section["smtp"]["password"] = section["smtp"].pop("password_file")  # the file exists only on a real host
    a = parse({**GOOD, "alerts": section}).alerts
    assert a.webhook.timeout == 3 and a.smtp.starttls and a.smtp.port == 587 and a.dedup_seconds == 300
