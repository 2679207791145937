"""The HTTP server of ``orch maintain``: Prometheus metrics and the API (orchestrator/http_api.py
decides every answer) on maintainer.metrics_port, over TLS when http.tls_cert is set.

Three parts, none of which can stall another:

- ``ViewKeeper``, a maintainer listener: keeps the maintainer's last full view (GET /status).
- ``Refresher``: two threads, one per server, each with its own connection, observing its
  server every REFRESH_EVERY seconds (the same observation a pass makes of a server, no
  Atlas, no records); this host's thread also checks the VIP and publishes a Snapshot. A
  hung server stalls only its own thread; the endpoints then see the observation age.
- ``ApiServer``: a ThreadingHTTPServer; each request reads the Snapshot (one attribute read)
  or, for /history and the POSTs, does its slow work on its own thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, List, Optional, Tuple

from . import http_api
from .config import Config
from .errors import OrchError
from .http_api import Command, Effect, Request, Response, Snapshot
from .http_client import read_token
from .model import ClusterView, NodeState

log = logging.getLogger("orchestrator.http")

REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request (or finish a TLS handshake)
PEER_STALE = 3.0  # seconds: an older observation of the peer counts as no answer from it
MINE_KEPT = 32  # this node's observations kept (8 s at REFRESH_EVERY): older than PEER_STALE
HISTORY_READ_TIMEOUT = 2.0  # seconds per server for GET /history


class ViewKeeper:
    """A maintainer listener keeping its last view (GET /status)."""

    def __init__(self) -> None:
        self.view: Optional[ClusterView] = None
        self.at = float("-inf")

    def on_view(self, view: ClusterView) -> None:
        self.view, self.at = view, time.monotonic()

    def on_pass(self, result: Any) -> None:
        pass


class Refresher:
    """Observes both servers every REFRESH_EVERY seconds on threads of its own; ``snapshot()``
    is the newest Snapshot (never blocks)."""

    def __init__(self, cfg: Config, keeper: ViewKeeper, interval: float = http_api.REFRESH_EVERY) -> None:
        self.cfg = cfg
        self.keeper = keeper
        self.interval = interval
        self.stop = threading.Event()
        self.nodes: Dict[str, "Reading"] = {}  # name -> its latest reading
        # This node's recent observations: the errant-GTID check compares the peer with one
        # of this node finished before the peer's began (see _publish).
        self.mine: Deque["Reading"] = deque(maxlen=MINE_KEPT)
        self._snapshot = Snapshot()
        self.threads: List[threading.Thread] = []

    def start(self) -> "Refresher":
        for node in self.cfg.nodes:
            t = threading.Thread(target=self._loop, args=(node.name,), name=f"http-observe-{node.name}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def close(self) -> None:
        self.stop.set()

    def snapshot(self) -> Snapshot:
        keeper = self.keeper
        snap = self._snapshot
        return Snapshot(snap.view, snap.at, keeper.view, keeper.at, snap.write_token)

    def _loop(self, name: str) -> None:
        from .db import Server
        from .observe import observe_node

        server = Server(self.cfg.node(name), self.cfg.mysql, None)
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    state = observe_node(server, self.cfg.flavor, False)
                    self.nodes[name] = (state, started, time.monotonic())
                    if name == self.cfg.self_name:
                        self.mine.append(self.nodes[name])
                        self._publish(state)
                except Exception:  # the refresher never dies: the endpoints show its age instead
                    log.exception("http: observing %s failed", name)
                self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            server.close()

    def _publish(self, me: NodeState) -> None:
        from .observe import holds_address
        from .receipts import stamp

        now = time.monotonic()
        me, peer = paired(me, list(self.mine), self.nodes.get(self.cfg.peer.name), self.cfg, now)
        ka = self.cfg.keepalived
        holds_vip: Optional[bool] = None
        if ka.vip_check and ka.vip:
            try:
                holds_vip = holds_address(ka.vip)
            except OSError:
                holds_vip = None
        view = ClusterView(me=me, peer=peer, holds_vip=holds_vip)
        # How long ago each replica last received (the maintainer's memory; read, never written here).
        view = stamp(view, self.cfg.state_dir, save=False)
        self._snapshot = Snapshot(view, now)


Reading = Tuple[NodeState, float, float]  # (state, started, finished): time.monotonic()


HAPROXY_EVERY = 1.0  # seconds between two readings of each HAProxy's show stat


class HaproxyWatcher:
    """Reads every haproxy.stats_sockets' show stat every HAPROXY_EVERY seconds on a thread of
    its own, so that GET /status and the page answer from memory (a hung socket costs a
    request nothing); ``readings()`` is the latest, each with its age."""

    def __init__(self, cfg: Config, interval: float = HAPROXY_EVERY) -> None:
        self.cfg = cfg
        self.interval = interval
        self.stop = threading.Event()
        self.latest: Tuple[Any, ...] = ()

    def start(self) -> "HaproxyWatcher":
        if self.cfg.haproxy.stats_sockets:
            threading.Thread(target=self._loop, name="http-haproxy", daemon=True).start()
        return self

    def close(self) -> None:
        self.stop.set()

    def readings(self) -> List[Dict[str, Any]]:
        from .haproxy import Reading as HaproxyReading

        now = time.monotonic()
        latest = self.latest or tuple(HaproxyReading(p, False, "not read yet", at=now) for p in self.cfg.haproxy.stats_sockets)
        return [r.as_dict(now) for r in latest]

    def _loop(self) -> None:
        from . import haproxy

        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.latest = haproxy.observe(self.cfg)
            except Exception:  # never dies: the readings' age shows it
                log.exception("http: reading HAProxy's show stat failed")
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def paired(me: NodeState, mine: List[Reading], peer_reading: Optional[Reading], cfg: Config,
           now: float) -> Tuple[NodeState, NodeState]:
    """This node and its peer, fit to be judged together. Pure.

    The two servers are observed apart: a replica read after its master may hold
    transactions the master's older reading lacks, which would look errant (under write
    load, nearly always; and for good once the master hangs). So this node's GTIDs are taken
    from its latest reading that finished before the peer's began (``mine``, oldest first).
    A peer not read for PEER_STALE seconds, or with no such reading of this node yet, counts
    as not answering (the errant check is then not made)."""
    from .observe import unreachable

    if peer_reading is None or now - peer_reading[2] > PEER_STALE:
        age = "never" if peer_reading is None else f"{now - peer_reading[2]:.1f}s ago"
        return me, unreachable(cfg.peer, f"not observed lately (last answer: {age})", alive=False)
    before = [m for m in mine if m[2] <= peer_reading[1]]
    if not before:
        return me, unreachable(cfg.peer, "no reading of it after one of this node yet", alive=False)
    old = before[-1][0]
    return replace(me, executed=old.executed, binlog_pos=old.binlog_pos, binlog_state=old.binlog_state), peer_reading[0]


RUNS_DIR = "api-runs"  # under state_dir: the output of each command a POST runs, while it runs
RUNS_KEPT = 20  # output files left behind (by a maintainer that stopped meanwhile) kept at most


def run_command(cfg: Config, command: Command) -> Tuple[int, str, str]:
    """``orch -c CONFIG <argv>`` on this host, as the operator would run it: its exit code, stdout
    and stderr. Who asked, and from where, go in the environment (ORCH_OPERATOR, ORCH_ASKED_FROM,
    ORCH_CLIENT: journaled with the run), never in argv.

    The command outlives this process: it runs in a session of its own (a signal to the
    maintainer's process group does not reach it) and writes to files under state_dir/api-runs/,
    not pipes (a pipe whose reader is gone would break its next write). So a maintainer stopped
    or restarted meanwhile (conf/orch-maintain.service has KillMode=process) leaves a switchover
    to finish under its run lock, its output in that file."""
    argv = [sys.executable, "-m", "orchestrator.cli", "-c", cfg.path, "--node", cfg.self_name, *command.argv]
    env = {**os.environ, "ORCH_OPERATOR": command.operator, "ORCH_VIA_API": "1",  # VIA_API: not handed on again
           "ORCH_ASKED_FROM": command.asked_from, "ORCH_CLIENT": command.client}
    log.warning("http: POST /%s from %s (%s, %s): running orch %s", command.name, command.operator,
                command.asked_from or "no node named", command.client or "?", " ".join(command.argv))
    out, err, paths = _output_files(cfg, command.name)
    with out, err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True)
        killed = ""
        try:
            code = proc.wait(command.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            killed = f"\norch {command.name}: no answer within {command.timeout:g}s (killed)\n"
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace") + killed
    for path in paths:  # answered: the output goes back to the asker (and the run is journaled)
        with contextlib.suppress(OSError):
            os.unlink(path)
    log.warning("http: POST /%s: orch %s exited %d", command.name, command.argv[0], 1 if killed else code)
    return (1 if killed else code), stdout, stderr


def _output_files(cfg: Config, name: str) -> Tuple[Any, Any, List[str]]:
    """Two files for a command's stdout and stderr: named under state_dir/api-runs/ (an operator
    reads there what a command printed when the maintainer that ran it stopped), or anonymous
    temporary files when state_dir cannot be written (bookkeeping never stops a command)."""
    import tempfile

    where = os.path.join(cfg.state_dir, RUNS_DIR)
    try:
        os.makedirs(where, mode=0o700, exist_ok=True)
        stale = sorted(os.listdir(where))
        for old in stale[:max(0, len(stale) - 2 * RUNS_KEPT)]:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(where, old))
        base = os.path.join(where, f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{threading.get_ident()}-{name}")
        out, err = open(base + ".stdout", "w+b"), open(base + ".stderr", "w+b")
        return out, err, [base + ".stdout", base + ".stderr"]
    except OSError as exc:
        log.error("http: %s unusable (%s): the command's output goes to a temporary file", where, exc.strerror or exc)
        return tempfile.TemporaryFile(), tempfile.TemporaryFile(), []


def command_answer(cfg: Config, command: Command, code: int, stdout: str, stderr: str) -> Response:
    """A command's outcome as JSON: its exit code, what it printed (``stdout``) and logged
    (``stderr``), and both as ``output``; a ``--format json`` dry run's plan also as ``plan``
    (what the asking host shows before its prompt)."""
    import json

    doc: Dict[str, Any] = {"command": command.name, "node": cfg.self_name, "exit_code": code,
                           "output": stdout + stderr, "stdout": stdout, "stderr": stderr}
    if "--format" in command.argv:
        try:
            doc["plan"] = json.loads(stdout)
        except ValueError:
            pass
    return http_api.json_response(http_api.command_status(code), doc)


class ApiServer:
    """Metrics and the API on one port; ``start()`` serves from daemon threads."""

    def __init__(self, cfg: Config, port: int, registry: Any = None, address: Optional[str] = None) -> None:
        self.cfg = cfg
        self.port = port
        self.address = cfg.http.listen if address is None else address
        self.registry = registry
        self.keeper = ViewKeeper()
        self.refresher = Refresher(cfg, self.keeper)
        self.haproxy = HaproxyWatcher(cfg)
        self.httpd: Optional[ThreadingHTTPServer] = None
        self.token: Optional[str] = None
        self.strikes: Dict[str, http_api.Strikes] = {}  # client address -> its failed authentications
        self.auth_lock = threading.Lock()
        self.auth_failures: Any = None  # the orch_http_auth_failures_total counter (serve_http sets it)

    def start(self) -> "ApiServer":
        try:
            self.token = read_token(self.cfg)
        except OrchError as exc:  # the checks and metrics still serve; only the POSTs are off
            log.error("http: %s: POST /switchover, /pause and /resume are off", exc)
        if self.token and not self.cfg.http.tls:
            log.warning("http: http.token_file without http.tls_cert: the token crosses the network in clear")
        handler = _handler(self)
        family_server = _server_class(self.address)
        try:
            httpd = family_server((self.address or _any(), self.port), handler)
        except OSError as exc:
            raise OrchError(f"http: cannot listen on port {self.port}: {exc.strerror or exc}") from None
        if self.cfg.http.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                ctx.load_cert_chain(self.cfg.http.tls_cert, self.cfg.http.tls_key)
            except (OSError, ssl.SSLError) as exc:
                httpd.server_close()
                raise OrchError(f"http: cannot load http.tls_cert/tls_key: {exc}") from None
            # The handshake happens on the request's thread: a client that never finishes it
            # holds that thread (until REQUEST_TIMEOUT), not the accept loop.
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.httpd = httpd
        self.port = httpd.server_address[1]
        self.refresher.start()
        self.haproxy.start()
        threading.Thread(target=httpd.serve_forever, name="http-serve", daemon=True).start()
        log.info("http: serving the API and metrics on %s:%d (%s)", self.address or "*", self.port,
                 "https" if self.cfg.http.tls else "http")
        return self

    def close(self) -> None:
        self.refresher.close()
        self.haproxy.close()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def answer(self, req: Request) -> Response:
        """The route's answer, with the effects it asks for performed (the brute-force limit first)."""
        if http_api.needs_token(req):
            refused = self._gate(req)
            if refused is not None:
                return refused
        got = http_api.route(req, self.refresher.snapshot(), self.cfg, self.token)
        if isinstance(got, Response):
            return got
        if isinstance(got, Command):
            return command_answer(self.cfg, got, *run_command(self.cfg, got))
        return self._effect(got)

    def _gate(self, req: Request) -> Optional[Response]:
        """http_api.gate for this request's address, its strikes kept; a failure counted and
        logged (the address, never the token), a lock-out also journaled, once."""
        now = time.monotonic()
        with self.auth_lock:
            outcome = http_api.gate(self.strikes.get(req.client), req, self.token, now)
            if outcome.strikes is None:
                self.strikes.pop(req.client, None)
            else:
                self.strikes[req.client] = outcome.strikes
            if len(self.strikes) > http_api.AUTH_TRACKED:
                self.strikes = http_api.forget_old(self.strikes, now)
        if outcome.failed:
            if self.auth_failures is not None:
                self.auth_failures.inc()
            log.warning("http: POST %s from %s: missing or wrong token", req.path, req.client or "?")
        if outcome.locked_out:
            self._journal_lockout(req.client)
        elif outcome.answer is not None:
            log.debug("http: POST %s from %s: locked out (429)", req.path, req.client or "?")
        return outcome.answer

    def _journal_lockout(self, client: str) -> None:
        from .journal import Journal, new_run_id
        from .runs import journal_append

        reason = (f"{client or '?'}: {http_api.AUTH_FAILURES} failed authentications within {http_api.AUTH_WINDOW:g}s: "
                  f"its POSTs are refused (429) for {http_api.AUTH_LOCKOUT:g}s, even with the right token")
        log.error("http: lock-out: %s", reason)
        try:
            journal_append(Journal(self.cfg.state_dir), {"id": new_run_id(), "node": self.cfg.self_name, "event": "HTTP_LOCKOUT",
                                                         "by": "maintain", "phase": "note", "result": "refused", "reason": reason,
                                                         "address": client})
        except Exception:  # bookkeeping never stops the server
            log.exception("http: journaling a lock-out")

    def _effect(self, effect: Effect) -> Response:
        if effect.name == "metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            if self.registry is None:
                return http_api.error(404, "no metrics registry")
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if effect.name == "status":
            from .statusdoc import status_document

            snap = self.refresher.snapshot()
            assert snap.full is not None
            age = time.monotonic() - snap.full_at
            return http_api.json_response(200, status_document(snap.full, self.cfg, self.haproxy.readings()), (("X-Orch-Observed-Age", f"{age:.3f}"),))
        if effect.name == "history":
            return self._history(effect.since)
        if effect.name == "page":
            return self._page()
        return http_api.error(404, f"no such endpoint: {effect.name}")

    def _history(self, since_text: str) -> Response:
        from .history_read import history_entries
        from .history import parse_since

        since = 0.0
        if since_text:
            try:
                since = parse_since(since_text, time.time())
            except ValueError as exc:
                return http_api.error(400, f"since: {exc}")
        entries, errors, unread = history_entries(self.cfg, since, HISTORY_READ_TIMEOUT)
        headers = tuple(("X-Orch-Warning", e[:200]) for e in errors)
        return http_api.json_response(200 if unread < len(self.cfg.nodes) else 503, entries, headers)

    def _page(self) -> Response:
        from . import statuspage

        snap = self.refresher.snapshot()
        if snap.full is None:
            return http_api.error(503, "the maintainer has not finished a pass yet")
        from .history import merge_hosts
        from .history_read import PAGE_DEADLINE, history_entries, peer_history
        from .statusdoc import status_document

        since = time.time() - 7 * 86400
        asked = peer_history(self.cfg, since, PAGE_DEADLINE)  # the other host's, meanwhile (1 s at most)
        entries, _, _ = history_entries(self.cfg, since, HISTORY_READ_TIMEOUT)
        theirs = asked.result()
        if theirs.entries is not None:
            entries = merge_hosts(entries, theirs.entries)
        else:
            log.info("http: the status page without %s", theirs.note())
        page = statuspage.render(status_document(snap.full, self.cfg, self.haproxy.readings()), entries,
                                 peer={"host": theirs.host, "merged": theirs.entries is not None, "note": theirs.note()})
        return Response(200, page.encode("utf-8"), http_api.HTML)


def _any() -> str:
    return "0.0.0.0"


def _server_class(address: str) -> Any:
    import socket

    if ":" in (address or ""):
        class Server6(ThreadingHTTPServer):
            address_family = socket.AF_INET6
        return Server6
    return ThreadingHTTPServer


def _handler(api: ApiServer) -> Any:
    class Handler(BaseHTTPRequestHandler):
        server_version = "orch"
        sys_version = ""
        timeout = REQUEST_TIMEOUT
        protocol_version = "HTTP/1.1"

        def handle(self) -> None:
            if isinstance(self.connection, ssl.SSLSocket):
                try:
                    self.connection.do_handshake()
                except (OSError, ssl.SSLError) as exc:
                    log.debug("http: TLS handshake with %s failed: %s", self.client_address[0], exc)
                    return
            try:
                super().handle()
            except (OSError, ssl.SSLError) as exc:  # a client gone mid-request: nothing to answer
                log.debug("http: connection from %s: %s", self.client_address[0], exc)

        def _serve(self, method: str) -> None:
            length = 0
            if method == "POST":
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= http_api.MAX_BODY:
                    self._send(http_api.error(413, f"a body of at most {http_api.MAX_BODY} bytes"), method)
                    return
            body = self.rfile.read(length) if length else b""
            req = Request(method, self.path, self.headers.get("Authorization") or "", body, self.client_address[0])
            try:
                resp = api.answer(req)
            except Exception:
                log.exception("http: %s %s failed", method, req.path)
                resp = http_api.error(500, "internal error (in orch maintain's log)")
            self._send(resp, method)

        def _send(self, resp: Response, method: str) -> None:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in resp.headers:
                self.send_header(name, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(resp.body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's names)
            self._serve("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve("HEAD")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_OPTIONS(self) -> None:  # noqa: N802  (HAProxy's default check: answered as GET)
            self._serve("GET")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            # HAProxy checks every second: at debug level; the Authorization header is never logged.
            log.debug("http: %s %s", self.client_address[0], format % args)

    return Handler


def serve_http(maintainer: Any, cfg: Config, port: int, lease_keeper: Any = None) -> ApiServer:
    """Metrics and the API for a running Maintainer on ``port`` (both registered as its
    listeners); ``lease_keeper``: the etcd lease keeper whose figures the token metrics read."""
    from .metrics import Metrics

    metrics = Metrics(cfg)
    metrics.keeper = lease_keeper
    maintainer.add_listener(metrics)
    api = ApiServer(cfg, port, metrics.registry)
    api.auth_failures = metrics.http_auth_failures
    maintainer.add_listener(api.keeper)
    return api.start()
