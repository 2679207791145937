"""orchestrator.statuspage: the page from ``orch status``'s and ``orch history``'s JSON.

Pure rendering first (every section, bad input, secrets), then in headless Chromium: hostile
names and reasons stay text, and the inline script refreshes the page from its server
(a local HTTP server on 127.0.0.1 answering with a newer page, then with an error). The
page rendered from a real lab is tests/test_statuspage_lab.py.
"""

from __future__ import annotations

import copy
import http.server
import threading
from typing import Any, Dict, Iterator, List

import pytest

from orchestrator import history as h
from orchestrator import statuspage

from . import chromium
from .test_timeline import FAILOVER_TO_2, ON_SERVER1, ON_SERVER2, SEMISYNC_ON, T0, run

SECRET = "pw-\u00e9t\u00e9-s3cr3t"


def node(name: str, address: str, role: str, replica_of: str = "", lag: Any = 0) -> Dict[str, Any]:
    n: Dict[str, Any] = {
        "name": name, "address": address, "reachable": True, "version": "10.11.19-MariaDB", "flavor": "mariadb",
        "server_id": 2 if role == "master" else 1, "role": role, "read_only": role != "master", "executed_gtids": "0-1-42",
        "replication": None, "errant_gtids": "",
        "semi_sync": {"wait": role == "master", "no_fallback": role == "master", "timeout_ms": 31536000000,
                      "wait_point": "AFTER_SYNC", "replica_side": True, "clients": 1 if role == "master" else 0,
                      "waiting_sessions": 0},
    }
    if replica_of:
        n["replication"] = {"source": replica_of, "io_thread": "running", "sql_thread": "running", "relay_log_applied": True,
                            "unapplied_gtids": "", "lag": lag, "gtid_auto_position": True, "last_io_error": "", "last_sql_error": ""}
        n["read_backend_ok"] = f"{name} is a healthy replica (lag {lag}s)"
    return n


def status_doc(**changes: Any) -> Dict[str, Any]:
    """A document shaped as ``orch status --format json`` prints it, from server2 (the master)."""
    doc: Dict[str, Any] = {
        "cluster": "atlas-ha", "self": "server2", "holds_vip": True,
        "vip": {"address": "10.0.0.100", "this_host_holds": True, "holder": "server2", "why": ""},
        "nodes": [node("server2", "10.0.0.2:3306", "master"), node("server1", "10.0.0.1:3306", "replica", "10.0.0.2:3306", 3)],
        "atlas": [{"name": "local", "reachable": True, "error": "", "backends": [
            {"ndx": 1, "address": "10.0.0.100:3306", "state": "up", "type": "rw"},
            {"ndx": 2, "address": "10.0.0.1:3306", "state": "up", "type": "ro"}]}],
        "journal": ON_SERVER2, "pending_event": None,
        "semi_sync_policy": {"enabled": True, "witness": "10.0.0.254", "auto_rewind": True, "record": None,
                             "text": "no fallback (failover.semi_sync: true), witness 10.0.0.254; auto_rewind on"},
        "anti_flapping": {"block_seconds": 3600, "blocked": False, "reason": "", "latest": None,
                          "text": "block_seconds 3600; no promotion on record; an automatic promotion is allowed"},
        "maintenance": {"paused": False, "text": "off (no pause on record)", "error": "", "record": None},
    }
    doc.update(changes)
    return doc


def history_doc() -> List[Dict[str, Any]]:
    return h.merge(h.journal_entries(ON_SERVER2), h.record_entries([
        {"run_id": "r-master", "kind": "failover", "node": "server2", "at": T0 + 2.03, "acks": "", "seen_on": "server1"}]))


def page(status: Dict[str, Any], history: List[Dict[str, Any]]) -> chromium.Element:
    return chromium.parse(statuspage.render(status, history))


# ---------------------------------------------------------------------------- pure


def test_the_page_shows_each_section_of_the_documents():
    root = page(status_doc(), history_doc())
    assert root.one("head").one("title").text() == "orch atlas-ha (server2)"
    roles = {el.attrs["data-node"]: el.attrs["data-role"] for el in root.find_all("div", class_="server")}
    assert roles == {"server2": "master", "server1": "replica"}
    assert "holds the VIP" in root.one("div", data_node="server2").text()
    vip = root.one(id="vip")
    assert vip.attrs["data-holder"] == "server2" and "10.0.0.100" in vip.text()
    arrow = root.one("div", class_="arrow")
    assert (arrow.attrs["data-from"], arrow.attrs["data-to"], arrow.attrs["data-lag"]) == ("server2", "server1", "3")
    assert "lag 3s" in arrow.text()
    assert "wait on, no fallback, 1 client(s)" in root.one("div", data_node="server2").text()
    backends = root.one("section", id="backends").text()
    assert "Atlas local" in backends and "10.0.0.1:3306" in backends and "server1" in backends
    rw = [row.text() for row in root.one("section", id="backends").find_all("tr") if "rw" in row.text()]
    assert rw == ["110.0.0.100:3306the VIPrwup"], rw
    assert "no fallback" in root.one("tr", id="policy-semi-sync").text()
    assert "not blocking" in root.one("tr", id="policy-anti-flapping").text()
    assert "off" in root.one("tr", id="policy-maintenance").text()
    assert root.find_all("tr", id="policy-write-token") == []  # no etcd: section, no row
    (f,) = root.find_all("div", class_="failover")
    assert (f.attrs["data-promoted"], f.attrs["data-old"], f.attrs["data-kind"]) == ("server2", "server1", "failover")
    assert [row.attrs["data-known"] for row in f.find_all("tr", class_="milestone")] == ["no", "yes", "yes", "yes"]
    assert len(root.find_all("tr", class_="entry")) == 3


def test_the_other_hosts_history_merged_shows_its_fault_marked_with_its_host():
    mine = h.mark_host(history_doc(), "server2")
    theirs = h.mark_host(h.merge(h.journal_entries(ON_SERVER1), []), "server1")
    root = chromium.parse(statuspage.render(status_doc(), h.merge_hosts(mine, theirs),
                                            peer={"host": "server1", "merged": True, "note": "server1's history merged (2 entries)"}))
    note = root.one(id="peer-history")
    assert (note.attrs["data-host"], note.attrs["data-merged"]) == ("server1", "yes")
    (f,) = root.find_all("div", class_="failover")
    known = {m.attrs["data-key"]: m.attrs["data-known"] for m in f.find_all("tr", class_="milestone")}
    assert known == {"fault": "yes", "vip": "yes", "opened": "yes", "rejoined": "yes"}, known
    fault = f.one("tr", data_key="fault").text()
    assert "server1: FAULT run r-fault" in fault, fault
    hosts = {row.attrs["data-run"]: row.attrs["data-host"] for row in root.find_all("tr", class_="entry")}
    assert hosts["r-fault"] == "server1" and hosts["r-master"] == "server2", hosts
    # The other host did not answer: said, not an error; its FAULT not seen.
    root = chromium.parse(statuspage.render(status_doc(), mine, peer={
        "host": "server1", "merged": False, "note": "server1's history not merged: no answer within 1s"}))
    note = root.one(id="peer-history")
    assert note.attrs["data-merged"] == "no" and "no answer within 1s" in note.text()
    (f,) = root.find_all("div", class_="failover")
    assert f.one("tr", data_key="fault").attrs["data-known"] == "no"


def test_what_goes_wrong_is_shown():
    down = {"name": "server1", "address": "10.0.0.1:3306", "reachable": False, "error": "(2003) Can't connect"}
    stopped = node("server1", "10.0.0.1:3306", "replica", "10.0.0.2:3306", None)
    stopped["replication"].update(io_thread="stopped", last_io_error="error reconnecting to master")
    pending = {"event": "MASTER", "run": "r-9", "at": T0}
    paused = {"paused": True, "text": "PAUSED: by dba: kernel upgrade", "error": "", "record": None}
    blocked = {"block_seconds": 3600, "blocked": True, "reason": "the failover of run r-1 is 120 s old", "latest": None, "text": "BLOCKED"}
    unreachable_atlas = [{"name": "local", "reachable": False, "error": "timed out", "backends": []}]
    haproxy = [{"name": "/run/haproxy/edge.sock", "reachable": True, "error": "", "age": 12.3, "backends": [
        {"role": "write", "backend": "write", "server": "server2", "address": "10.0.0.2:3306", "status": "UP", "check": "L7OK", "check_code": "200"},
        {"role": "write", "backend": "write", "server": "server1", "address": "10.0.0.1:3306", "status": "DOWN", "check": "L4CON", "check_code": ""}]},
        {"name": "/run/haproxy/gone.sock", "reachable": False, "error": "cannot read show stat: Connection refused", "backends": []}]
    root = page(status_doc(nodes=[node("server2", "10.0.0.2:3306", "master"), down], pending_event=pending, maintenance=paused,
                           anti_flapping=blocked, atlas=unreachable_atlas, haproxy=haproxy,
                           vip={"address": "10.0.0.100", "this_host_holds": False, "holder": "not this host", "why": ""}), [])
    assert root.one("div", data_node="server1").attrs["data-role"] == "unreachable"
    assert "(2003) Can't connect" in root.one("div", data_node="server1").text()
    assert "no replication between them" in root.one("div", class_="arrow").text()
    assert root.one(id="vip").attrs["data-holder"] == "not this host"
    assert "Maintenance mode: PAUSED" in root.one("section", id="policy").text()
    assert "Anti-flapping block: the failover of run r-1" in root.one("section", id="policy").text()
    assert "MASTER event (run r-9)" in root.one("tr", id="policy-pending-event").text()
    backends = root.one("section", id="backends").text()
    assert "unreachable timed out" in backends and "HAProxy /run/haproxy/edge.sock" in backends and "DOWN" in backends
    rows = {(r.attrs["data-role"], r.attrs["data-server"]): r for r in root.find_all("tr", class_="haproxy-server")}
    assert rows[("write", "server1")].attrs["data-status"] == "DOWN" and "L4CON" in rows[("write", "server1")].text()
    assert rows[("write", "server2")].attrs["data-status"] == "UP" and "L7OK 200" in rows[("write", "server2")].text()
    assert "stale read 12s ago" in root.one("div", data_haproxy="/run/haproxy/edge.sock").text()
    gone = root.one("div", data_haproxy="/run/haproxy/gone.sock")
    assert gone.attrs["data-reachable"] == "no" and "Connection refused" in gone.text()
    assert root.one(id="no-failovers")
    root = page(status_doc(nodes=[node("server2", "10.0.0.2:3306", "master"), stopped]), [])
    assert "threads: stopped / running" in root.one("div", class_="arrow").text()
    assert "error reconnecting to master" in root.one("div", data_node="server1").text()
    assert "lag unknown" in root.one("div", class_="arrow").text()


def test_the_write_token_is_shown_when_etcd_is_configured():
    held = {"holder": "server2", "lease_left": 4.2, "error": "", "ttl": 5, "host_lease": "694d8a", "host_lease_renewed_ago": 0.4,
            "text": "write token held by server2 (lease 4.2s left); this host's lease 694d8a renewed 0.4s ago by orch maintain; ttl 5s"}
    row = page(status_doc(token=held), []).one("tr", id="policy-write-token")
    assert "held by server2" in row.text() and "renewed 0.4s ago" in row.text()
    unread = dict(held, holder=None, lease_left=None, error="etcd: no endpoint answered", text="write token unknown: etcd unreadable")
    row = page(status_doc(token=unread), []).one("tr", id="policy-write-token")
    assert "unknown" in row.text() and "etcd unreadable" in row.text()
    free = dict(held, holder=None, lease_left=None, error="", text="write token free")
    assert "free" in page(status_doc(token=free), []).one("tr", id="policy-write-token").text()


@pytest.mark.parametrize("status, history", [
    ({}, []),
    ({"nodes": [{"name": "x"}], "vip": None, "atlas": [None, "x"], "journal": "no"}, [None, {"time": "not a time"}, {}]),
    (status_doc(nodes=[]), [{"time": h.iso(T0), "run_id": "r", "event": "MASTER", "outcome": "act", "reason": 5, "ms": "x"}]),
])
def test_odd_documents_still_give_a_page(status, history):
    html = statuspage.render(status, history)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_secrets_in_the_documents_are_never_shown():
    doc = status_doc()
    doc["password"] = SECRET
    doc["nodes"][0]["password"] = SECRET
    doc["atlas"][0]["admin"] = {"user": "user", "password": SECRET}
    doc["vip"]["token"] = SECRET
    entries = history_doc()
    entries[0]["password"] = SECRET
    html = statuspage.render(doc, entries)
    assert SECRET not in html and "s3cr3t" not in html


# ---------------------------------------------------------------------------- Chromium

HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>&amp;'


def hostile_documents() -> tuple:
    records = (run("r-m", HOSTILE, "MASTER", T0 + 2, 90, reason=FAILOVER_TO_2.replace("server2", HOSTILE))
               + run("r-s", HOSTILE, "SEMISYNC", T0 + 5, 2, reason=SEMISYNC_ON + HOSTILE))
    doc = status_doc(cluster=HOSTILE, self=HOSTILE, journal=records,
                     nodes=[node(HOSTILE, "10.0.0.2:3306", "master"), node("server1", "10.0.0.1:3306", "replica", "10.0.0.2:3306")])
    doc["nodes"][1]["replication"]["last_sql_error"] = HOSTILE
    doc["atlas"][0]["error"] = HOSTILE
    doc["maintenance"]["text"] = HOSTILE
    return doc, h.merge(h.journal_entries(records), [])


def test_hostile_names_and_reasons_stay_text_in_chromium(tmp_path):
    doc, entries = hostile_documents()
    html_file = tmp_path / "hostile.html"
    html_file.write_text(statuspage.render(doc, entries))
    root = chromium.parse(chromium.dump_dom(html_file.as_uri(), tmp_path))
    assert root.one("head").one("title").text() != "pwned"
    assert len(root.find_all("script")) == 1  # the page's own
    assert root.find_all("img") == []
    assert HOSTILE in root.one("div", class_="server", data_role="master").text()
    (f,) = root.find_all("div", class_="failover")
    assert f.attrs["data-promoted"] == HOSTILE
    assert root.one(id="refresh").text() == "static copy: not refreshed"


class PageServer:
    """Serves a sequence of answers to GET /, on 127.0.0.1 (the last one repeats)."""

    def __init__(self, answers: List[tuple]) -> None:
        self.answers = answers
        self.served = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                code, body = outer.answers[min(outer.served, len(outer.answers) - 1)]
                outer.served += 1
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "PageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def swapped() -> Dict[str, Any]:
    """The same cluster after a failover back: server1 the master, server2 its replica."""
    doc = status_doc(self="server2", vip={"address": "10.0.0.100", "this_host_holds": False, "holder": "not this host", "why": ""})
    doc["nodes"] = [node("server2", "10.0.0.2:3306", "replica", "10.0.0.1:3306"), node("server1", "10.0.0.1:3306", "master")]
    return doc


@pytest.fixture
def first_page() -> Iterator[str]:
    yield statuspage.render(status_doc(), history_doc())


def test_served_page_refreshes_itself_from_its_server(tmp_path, first_page):
    with PageServer([(200, first_page), (200, statuspage.render(swapped(), history_doc()))]) as server:
        root = chromium.parse(chromium.dump_dom(server.url, tmp_path, virtual_time_ms=statuspage.REFRESH_SECONDS * 1000 + 3000))
    assert server.served >= 2
    roles = {el.attrs["data-node"]: el.attrs["data-role"] for el in root.find_all("div", class_="server")}
    assert roles == {"server1": "master", "server2": "replica"}
    assert root.one(id="vip").attrs["data-holder"] == "not this host"
    assert root.one(id="refresh").text().startswith("updated ")
    assert len(root.find_all("main")) == 1


def test_a_failed_refresh_keeps_the_last_page_and_says_so(tmp_path, first_page):
    with PageServer([(200, first_page), (503, "the maintainer has not finished a pass yet")]) as server:
        root = chromium.parse(chromium.dump_dom(server.url, tmp_path, virtual_time_ms=statuspage.REFRESH_SECONDS * 1000 + 3000))
    assert server.served >= 2
    roles = {el.attrs["data-node"]: el.attrs["data-role"] for el in root.find_all("div", class_="server")}
    assert roles == {"server2": "master", "server1": "replica"}
    assert root.one(id="refresh").text().startswith("refresh failed (HTTP 503)")


def test_status_doc_is_the_shape_orch_status_prints():
    """The synthetic document has the keys orch status --format json writes (statusdoc.py)."""
    import inspect

    from orchestrator import statusdoc as st

    source = inspect.getsource(st)
    for key in status_doc():
        assert f'"{key}"' in source, key
    assert copy.deepcopy(status_doc()) == status_doc()


def test_the_module_renders_saved_documents_and_refuses_bad_ones(tmp_path):
    import json
    import subprocess
    import sys

    status, history = tmp_path / "status.json", tmp_path / "history.json"
    status.write_text(json.dumps(status_doc()))
    history.write_text(json.dumps(history_doc()))

    def module(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestrator.statuspage", *args], capture_output=True, text=True, timeout=60)

    ok = module(str(status), str(history))
    assert ok.returncode == 0 and ok.stdout == statuspage.render(status_doc(), history_doc()) and ok.stderr == ""
    (tmp_path / "bad.json").write_text("{not json")
    for args, message in (((str(history), str(history)), "expected orch status --format json's document"),
                          ((str(status), str(tmp_path / "bad.json")), "not JSON"),
                          ((str(status), str(tmp_path / "missing.json")), "No such file"),
                          ((str(status),), "usage:")):
        bad = module(*args)
        assert bad.returncode == 2 and bad.stdout == "" and message in bad.stderr, bad
        assert len(bad.stderr.strip().splitlines()) == 1
