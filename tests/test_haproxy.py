"""orchestrator/haproxy.py: HAProxy's show stat parsed into (role, backend, server, status,
check), table-driven from HAProxy 2.6's real header; the door's deadline against a socket that
accepts and never answers; and a real HAProxy (Debian's, no frontend: it binds no port) whose
write backend checks two local HTTP servers answering /master as orch does, read over its
stats socket while the answers flip. The lab's HAProxy in front of a real pair, in orch status
and on the page across a failover, is tests/test_haproxy_lab.py."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
import time
from typing import Dict, Iterator, List

import pytest

from orchestrator import haproxy as hp
from orchestrator.lab.haproxy import HAPROXY, unavailable_reason

# HAProxy 2.6's show stat header (Debian 12), trimmed after the columns orch reads; every
# column name a row below does not give is empty, as in HAProxy's own lines.
HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,"
          "chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,"
          "check_code,check_duration,hrsp_1xx,last_chk,addr,cookie,mode,")
COLUMNS = HEADER[2:].split(",")


def row(**values: str) -> str:
    return ",".join(values.get(c, "") for c in COLUMNS)


def stat(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n\n"


def srv(backend: str, server: str, status: str, check: str = "", code: str = "", addr: str = "", bck: str = "0") -> str:
    return row(pxname=backend, svname=server, status=status, check_status=check, check_code=code, addr=addr, bck=bck)


SHIPPED = stat(  # conf/haproxy.cfg's backends, server1 the master, as HAProxy 2.6 prints them
    row(pxname="mysql_write", svname="FRONTEND", status="OPEN"),
    srv("write", "server1", "UP", "L7OK", "200", "10.0.0.1:3306"),
    srv("write", "server2", "DOWN", "L7STS", "503", "10.0.0.2:3306"),
    row(pxname="write", svname="BACKEND", status="UP"),
    srv("read", "server1", "DOWN", "L7STS", "503", "10.0.0.1:3306"),
    srv("read", "server2", "UP", "L7OK", "200", "10.0.0.2:3306"),
    srv("read", "server1-master", "UP", "", "", "10.0.0.1:3306", bck="1"),
    srv("read", "server2-master", "MAINT (via write/server2)", "", "", "10.0.0.2:3306", bck="1"),
    row(pxname="read", svname="BACKEND", status="UP"),
)


@pytest.mark.parametrize("raw, status", [
    ("UP", "UP"), ("DOWN", "DOWN"), ("MAINT", "MAINT"), ("UP 1/2", "UP"), ("DOWN 1/2", "DOWN"), ("NOLB", "NOLB"),
    ("MAINT (via write/server1)", "MAINT"), ("MAINT (resolution)", "MAINT"), ("DRAIN (agent)", "DRAIN"),
    ("no check", "UP"), ("", "DOWN"), ("something new", "DOWN"),
])
def test_normalize_status(raw, status):
    assert hp.normalize_status(raw) == status


@pytest.mark.parametrize("text, write, read, expected, problem", [
    (SHIPPED, "write", "read", [
        ("write", "server1", "UP", "L7OK", "200", False), ("write", "server2", "DOWN", "L7STS", "503", False),
        ("read", "server1", "DOWN", "L7STS", "503", False), ("read", "server2", "UP", "L7OK", "200", False),
        ("read", "server1-master", "UP", "", "", True), ("read", "server2-master", "MAINT", "", "", True)], ""),
    # Other backend names (haproxy.write_backend / read_backend): only those two are taken.
    (stat(srv("rw", "a", "UP 1/2", "L7STS", "503"), row(pxname="rw", svname="BACKEND", status="UP"),
          srv("write", "x", "UP"), srv("ro", "b", "no check")),
     "rw", "ro", [("write", "a", "UP", "L7STS", "503", False), ("read", "b", "UP", "", "", False)], ""),
    # A backend missing from the answer is said, with the key that names it.
    (stat(srv("write", "server1", "UP", "L7OK", "200")), "write", "read",
     [("write", "server1", "UP", "L7OK", "200", False)], "no backend read (haproxy.read_backend) in its show stat"),
    (stat(), "write", "read", [], "no backend write (haproxy.write_backend), read (haproxy.read_backend) in its show stat"),
    # A backend with no server left is there (its BACKEND line), not missing.
    (stat(row(pxname="write", svname="BACKEND", status="DOWN"), row(pxname="read", svname="BACKEND", status="DOWN")),
     "write", "read", [], ""),
    # "* L7OK": a check in progress.
    (stat(srv("write", "s", "DOWN 1/2", "* L7OK", "200"), srv("read", "s", "DOWN", "L4TOUT")), "write", "read",
     [("write", "s", "DOWN", "L7OK", "200", False), ("read", "s", "DOWN", "L4TOUT", "", False)], ""),
])
def test_backend_servers(text, write, read, expected, problem):
    servers, said = hp.backend_servers(hp.parse_stat(text), write, read)
    assert [(s.role, s.server, s.status, s.check, s.check_code, s.backup) for s in servers] == expected
    assert said == problem


def test_addresses_and_raw_status_are_kept():
    servers, _ = hp.backend_servers(hp.parse_stat(SHIPPED), "write", "read")
    last = servers[-1]
    assert (last.address, last.raw_status, last.backend) == ("10.0.0.2:3306", "MAINT (via write/server2)", "read")
    assert last.as_dict()["status"] == "MAINT" and last.as_dict()["backup"] is True


@pytest.mark.parametrize("text, message", [
    ("", "not a show stat answer: an empty answer"),
    ("Unknown command. Please enter one of the following commands only :\n", "not a show stat answer: Unknown command"),
    ("Permission denied\n", "not a show stat answer: Permission denied"),
    ("# a,b,c\nx,y,z\n", "header lacks pxname"),
    (HEADER + "\n" + row(pxname="write", svname="s") + ",extra,extra\n", "has"),
])
def test_parse_stat_refuses_what_is_not_show_stat(text, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        hp.parse_stat(text)


def test_describe_lines_for_orch_status():
    servers, _ = hp.backend_servers(hp.parse_stat(SHIPPED), "write", "read")
    reading = hp.Reading("/run/haproxy/orch-admin.sock", True, "", servers).as_dict()
    assert hp.describe(reading) == [
        "haproxy /run/haproxy/orch-admin.sock:",
        "  write backend write: server1 UP (L7OK), server2 DOWN (L7STS)",
        "  read backend read: server1 DOWN (L7STS), server2 UP (L7OK), server1-master UP backup, server2-master MAINT backup",
    ]
    partial = hp.Reading("/x.sock", True, "no backend read (haproxy.read_backend) in its show stat", servers[:1]).as_dict()
    assert hp.describe(partial) == ["haproxy /x.sock:", "  write backend write: server1 UP (L7OK)",
                                    "  no backend read (haproxy.read_backend) in its show stat"]
    gone = hp.Reading("/x.sock", False, "cannot read show stat: No such file or directory").as_dict(now=0.0)
    assert hp.describe(gone) == ["haproxy /x.sock: UNREACHABLE: cannot read show stat: No such file or directory"]
    assert gone["age"] == 0.0


# --- the door ----------------------------------------------------------------------------------


def test_missing_socket_and_not_a_socket(tmp_path):
    r = hp.read_one(str(tmp_path / "none.sock"), "write", "read")
    assert not r.reachable and "No such file or directory" in r.error
    (tmp_path / "file").write_text("x")
    r = hp.read_one(str(tmp_path / "file"), "write", "read")
    assert not r.reachable and r.error.startswith("cannot read show stat")


@pytest.mark.parametrize("behaviour", ["silent", "trickle"])
def test_a_socket_that_accepts_and_never_finishes_costs_the_deadline_only(tmp_path, behaviour):
    path = str(tmp_path / "hung.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    stop = threading.Event()
    held: List[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                server.settimeout(0.2)
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)
            if behaviour == "trickle":  # a byte every 0.1 s: each recv answers, the whole never comes
                threading.Thread(target=lambda c=conn: [c.send(b"#") or time.sleep(0.1) for _ in range(100)
                                                        if not stop.is_set()], daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        t0 = time.monotonic()
        r = hp.read_one(path, "write", "read", timeout=0.5)
        took = time.monotonic() - t0
        assert not r.reachable and "within 0.5s" in r.error, r
        assert took < 2.0, took  # the deadline, not one per recv
    finally:
        stop.set()
        for c in held:
            c.close()
        server.close()


def test_observe_reads_the_sockets_side_by_side_in_their_order(tmp_path):
    """Three sockets that accept and never answer cost one deadline, not three; a missing one
    keeps its place."""
    servers, stop, held = [], threading.Event(), []
    paths = [str(tmp_path / f"hung{i}.sock") for i in range(3)]
    for path in paths:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(4)
        server.settimeout(0.2)
        servers.append(server)

        def serve(srv: socket.socket = server) -> None:
            while not stop.is_set():
                try:
                    held.append(srv.accept()[0])
                except OSError:
                    continue

        threading.Thread(target=serve, daemon=True).start()
    missing = str(tmp_path / "none.sock")
    from orchestrator.config import validate

    cfg = validate({"self": "server1", "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
                    "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
                    "keepalived": {"vip_check": False}, "haproxy": {"stats_sockets": paths + [missing]}})
    try:
        t0 = time.monotonic()
        readings = hp.observe(cfg, timeout=1.0)
        took = time.monotonic() - t0
    finally:
        stop.set()
        for c in held:
            c.close()
        for srv in servers:
            srv.close()
    assert [r.socket for r in readings] == paths + [missing]
    assert all(not r.reachable for r in readings)
    assert took < 2.5, took  # one after the other would be 3 s at least


# --- a real HAProxy ----------------------------------------------------------------------------


class Orch(http.server.BaseHTTPRequestHandler):
    """Answers GET /master and /replica as orch does: 200 for the role the server has, else 503."""

    master = False

    def do_GET(self) -> None:  # noqa: N802
        code = 200 if type(self).master == (self.path == "/master") else 503
        try:
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        except OSError:  # HAProxy closes once it has the status line
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def real_haproxy(tmp_path) -> Iterator[Dict[str, object]]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    handlers = {name: type(f"Orch{name}", (Orch,), {"master": name == "server1"}) for name in ("server1", "server2")}
    servers = {name: http.server.ThreadingHTTPServer((f"127.0.0.{i}", 0), h) for i, (name, h) in enumerate(handlers.items(), 1)}
    for s in servers.values():
        threading.Thread(target=s.serve_forever, daemon=True).start()
    sock = tmp_path / "admin.sock"
    lines = ["global", f"    stats socket {sock} mode 600 level admin", "defaults", "    mode tcp", "    timeout connect 1s",
             "    timeout client 10s", "    timeout server 10s", "    timeout check 1s",
             "    default-server inter 200ms fastinter 100ms downinter 200ms fall 1 rise 1"]
    for backend, uri in (("write", "/master"), ("read", "/replica")):
        lines += [f"backend {backend}", "    option httpchk", f"    http-check send meth GET uri {uri} ver HTTP/1.1 hdr Host orch",
                  "    http-check expect status 200"]
        for i, (name, s) in enumerate(servers.items(), 1):
            lines.append(f"    server {name} 127.0.0.{i}:3306 check port {s.server_address[1]}")
    conf = tmp_path / "haproxy.cfg"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(conf)], stdout=open(tmp_path / "haproxy.log", "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield {"socket": str(sock), "handlers": handlers, "log": tmp_path / "haproxy.log"}
    finally:
        proc.terminate()
        proc.wait(10)
        for s in servers.values():
            s.shutdown()
            s.server_close()


def statuses(path: str) -> Dict[tuple, str]:
    r = hp.read_one(path, "write", "read")
    assert r.reachable and not r.error, r
    return {(s.role, s.server): f"{s.status} {s.check} {s.check_code}".strip() for s in r.servers}


def wait_statuses(path: str, expected: Dict[tuple, str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    seen: Dict[tuple, str] = {}
    while time.monotonic() < deadline:
        seen = statuses(path)
        if all(seen.get(k) == v for k, v in expected.items()):
            return
        time.sleep(0.1)
    raise AssertionError(f"HAProxy's show stat: {seen}, expected {expected}")


def test_a_real_haproxy_read_over_its_stats_socket(real_haproxy):
    path = str(real_haproxy["socket"])
    wait_statuses(path, {("write", "server1"): "UP L7OK 200", ("write", "server2"): "DOWN L7STS 503",
                         ("read", "server1"): "DOWN L7STS 503", ("read", "server2"): "UP L7OK 200"})
    r = hp.read_one(path, "write", "read")
    assert [s.address for s in r.servers[:2]] == ["127.0.0.1:3306", "127.0.0.2:3306"]
    handlers = real_haproxy["handlers"]
    handlers["server1"].master, handlers["server2"].master = False, True  # a failover, as orch would answer
    wait_statuses(path, {("write", "server1"): "DOWN L7STS 503", ("write", "server2"): "UP L7OK 200",
                         ("read", "server1"): "UP L7OK 200", ("read", "server2"): "DOWN L7STS 503"})
    # An operator's maintenance is HAProxy's MAINT.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(b"disable server write/server2\n")
        s.recv(100)
    wait_statuses(path, {("write", "server2"): "MAINT"})
    # Backend names that are not there: the reading says which key names them.
    r = hp.read_one(path, "mysql_rw", "read")
    assert r.reachable and r.error == "no backend mysql_rw (haproxy.write_backend) in its show stat"
    assert os.stat(path).st_mode & 0o777 == 0o600


# --- the config keys ----------------------------------------------------------------------------


def test_haproxy_config_keys():
    from orchestrator.config import ConfigError, validate

    base = {"self": "server1", "nodes": {"server1": {"host": "10.0.0.1"}, "server2": {"host": "10.0.0.2"}},
            "mysql": {"user": "orch", "password": "x"}, "replication": {"user": "repl", "password": "y"},
            "keepalived": {"vip_check": False}}
    cfg = validate(base)
    assert (cfg.haproxy.stats_sockets, cfg.haproxy.write_backend, cfg.haproxy.read_backend) == ((), "write", "read")
    cfg = validate({**base, "haproxy": {"stats_sockets": ["/run/a.sock", "/run/b.sock"], "write_backend": "rw"}})
    assert cfg.haproxy.stats_sockets == ("/run/a.sock", "/run/b.sock") and cfg.haproxy.write_backend == "rw"
    with pytest.raises(ConfigError) as err:
        validate({**base, "haproxy": {"stats_sockets": ["relative.sock", "/a", "/a", 3, "/" + "x" * 120],
                                      "write_backend": "read", "socket": "/x"}})
    assert sorted(err.value.problems) == sorted([
        "haproxy.stats_sockets[0]: expected an absolute UNIX socket path (at most 107 bytes)",
        "haproxy.stats_sockets[2]: /a is listed twice",
        "haproxy.stats_sockets[3]: expected an absolute UNIX socket path (at most 107 bytes)",
        "haproxy.stats_sockets[4]: expected an absolute UNIX socket path (at most 107 bytes)",
        "haproxy.read_backend: the same backend as write_backend: give each its own",
        "haproxy.socket: unknown key",
    ]), err.value.problems
    with pytest.raises(ConfigError) as err:
        validate({**base, "haproxy": {"stats_sockets": "/run/a.sock"}})
    assert err.value.problems == ["haproxy.stats_sockets: expected a list of absolute UNIX socket paths"]
