"""orch calling the peer's HTTP API (POST /switchover, /pause, /resume, /promote, /demote, /ack;
GET /history): the one door to it.

The peer's address is its node's host and maintainer.metrics_port; https when http.tls_cert
is set (the peer's certificate checked against http.tls_ca, else the system's CAs); the token
is http.token_file's, sent as ``Authorization: Bearer`` and never logged or printed.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import sys
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from .config import Config
from .errors import EXIT_FAILED, EXIT_INCOMPLETE, OrchError

log = logging.getLogger("orchestrator.http")

VIA_API = "ORCH_VIA_API"  # set by the HTTP API for the command it runs: never handed on again
CONNECT_TIMEOUT = 3.0  # seconds: a peer host that does not answer is not waited for longer


class NoAnswer(OrchError):
    """The request reached the peer's orch, but no answer came back in time: the command may
    be running there (exit 3: see orch status / orch history for its outcome)."""

    exit_code = EXIT_INCOMPLETE


@dataclass(frozen=True)
class PeerAnswer:
    status: int  # HTTP status
    exit_code: int  # the command's exit code on the peer
    output: str  # what it printed there (stdout, then what it logged)
    plan: Optional[Dict[str, Any]] = None  # a --format json dry run's plan
    logged: str = ""  # what it logged there (its stderr), when the answer tells it apart

    @property
    def printed(self) -> str:
        """What the command printed there (its stdout): the whole output when the answer does
        not tell the two apart."""
        if self.logged and self.output.endswith(self.logged):
            return self.output[:len(self.output) - len(self.logged)]
        return self.output

    def show(self, out: Any, err: Any) -> None:
        """What it printed on ``out`` and what it logged on ``err``, as a command run here shows them."""
        for stream, text in ((out, self.printed), (err, self.logged)):
            if text:
                stream.write(text if text.endswith("\n") else text + "\n")


def api_origin(environ: Mapping[str, str]) -> Optional[Dict[str, str]]:
    """Who asked for the command this process runs, and from where, when the HTTP API runs it
    (ORCH_VIA_API): journaled with its run. None for a command run by hand here."""
    if not environ.get("ORCH_VIA_API"):
        return None
    return {"by": environ.get("ORCH_OPERATOR", ""), "from": environ.get("ORCH_ASKED_FROM", ""),
            "address": environ.get("ORCH_CLIENT", "")}


def read_token(cfg: Config) -> Optional[str]:
    """http.token_file's first line (None when unset). Read when the server starts and by a
    client calling the peer; OrchError (one line, never the token) when it cannot be used."""
    path = cfg.http.token_file
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise OrchError(f"http.token_file {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    if len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token:
        raise OrchError(f"http.token_file {path}: expected one line of at least 16 printable ASCII characters, no spaces")
    return token


def api_unavailable(cfg: Config) -> Optional[str]:
    """Why this host cannot call the peer's API (None when it can)."""
    if not cfg.maintainer.metrics_port:
        return "maintainer.metrics_port is 0 (the HTTP API is off)"
    if not cfg.http.token_file:
        return "http.token_file is not configured (the state-changing endpoints are off)"
    return None


def _connection(cfg: Config, timeout: float) -> http.client.HTTPConnection:
    peer = cfg.peer
    port = cfg.maintainer.metrics_port
    if cfg.http.tls:
        ctx = ssl.create_default_context(cafile=cfg.http.tls_ca or None)
        return http.client.HTTPSConnection(peer.host, port, timeout=timeout, context=ctx)
    return http.client.HTTPConnection(peer.host, port, timeout=timeout)


def get_peer(cfg: Config, target: str, timeout: float) -> Any:
    """GET ``target`` from the peer's API (no token: the GETs need none) and its JSON document.
    ``timeout`` bounds each network step; a caller that needs a total deadline runs this on a
    thread of its own (history_read.peer_history). OrchError (one line) when there is none."""
    if not cfg.maintainer.metrics_port:
        raise OrchError("maintainer.metrics_port is 0 (the HTTP API is off)")
    where = f"{'https' if cfg.http.tls else 'http'}://{cfg.peer.host}:{cfg.maintainer.metrics_port}{target}"
    conn = _connection(cfg, timeout)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        raw = resp.read(8 << 20)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        raise OrchError(f"{where}: {exc or type(exc).__name__}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise OrchError(f"{where}: HTTP {resp.status}")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise OrchError(f"{where}: not JSON") from None


def call_peer(cfg: Config, action: str, body: Dict[str, Any], timeout: float) -> PeerAnswer:
    """POST /<action> to the peer and wait up to ``timeout`` seconds for the command it runs.
    OrchError (one line) when the peer cannot be asked or gives no usable answer."""
    token = read_token(cfg)
    peer = cfg.peer
    port = cfg.maintainer.metrics_port
    scheme = "https" if cfg.http.tls else "http"
    where = f"{scheme}://{peer.host}:{port}/{action}"
    conn: http.client.HTTPConnection
    if cfg.http.tls:
        ctx = ssl.create_default_context(cafile=cfg.http.tls_ca or None)
        conn = http.client.HTTPSConnection(peer.host, port, timeout=CONNECT_TIMEOUT, context=ctx)
    else:
        conn = http.client.HTTPConnection(peer.host, port, timeout=CONNECT_TIMEOUT)
    payload = json.dumps(body).encode("utf-8")
    log.info("asking %s's orch (%s) to run %s", peer.name, where, action)
    sent = False
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(timeout)  # the command may take its catch-up
        conn.request("POST", f"/{action}", payload, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        sent = True
        resp = conn.getresponse()
        raw = resp.read(1 << 20)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        if sent:
            raise NoAnswer(f"asked {peer.name}'s orch at {where}, but no answer came back ({exc}): orch {action} may "
                           f"still be running there; see orch status and orch history") from None
        raise OrchError(f"cannot ask {peer.name}'s orch at {where}: {exc} (nothing asked, nothing changed)") from None
    finally:
        conn.close()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise OrchError(f"{peer.name}'s orch at {where} answered HTTP {resp.status} without JSON") from None
    if not isinstance(doc, dict) or "exit_code" not in doc:
        error = doc.get("error", doc) if isinstance(doc, dict) else doc
        raise OrchError(f"{peer.name}'s orch at {where} refused: HTTP {resp.status}: {error} (nothing changed)")
    plan = doc.get("plan")
    code, output = int(doc.get("exit_code", EXIT_FAILED)), str(doc.get("output", ""))
    logged = str(doc.get("stderr") or "")
    if code < 0:  # killed by a signal there: how far it got is unknown (exit 3, as a lost answer)
        killed = f"\norch {action} on {peer.name} was killed by signal {-code}: see orch status and orch history\n"
        output, logged = output + killed, (logged + killed if logged else "")
        code = EXIT_INCOMPLETE
    return PeerAnswer(resp.status, code, output, plan if isinstance(plan, dict) else None, logged)


def same_on_peer(cfg: Config, action: str, body: Dict[str, Any], out: Any, keeps: str, verb: str = "") -> int:
    """Ask the other host's orch to do ``action`` too (``orch ack``, ``pause``, ``resume`` whose
    record this host alone would keep), saying each step on ``out``. Exit 0 when it did, or when
    there is no API to ask it with (``keeps``: what that host keeps, for the advice); 3
    (incomplete) when it could not be asked or refused."""
    from .errors import EXIT_OK

    peer = cfg.peer.name
    why = api_unavailable(cfg)
    if why:
        out.write(f"{peer}'s host keeps its own {keeps}: run orch {action} there too (not asked: {why})\n")
        return EXIT_OK
    out.write(f"asking {peer}'s orch to {verb or action} too (POST /{action})\n")
    try:
        answer = call_peer(cfg, action, body, cfg.failover.lock_timeout + 60.0)
    except OrchError as exc:
        out.write(f"{exc}: run orch {action} on {peer}'s host too\n")
        return EXIT_INCOMPLETE
    out.write("".join(f"  {peer}: {line}\n" for line in answer.printed.splitlines()))
    sys.stderr.write("".join(f"{peer}: {line}\n" for line in answer.logged.splitlines()))
    if answer.exit_code != EXIT_OK:
        out.write(f"{peer}'s orch {action} exited {answer.exit_code}: run orch {action} on {peer}'s host\n")
        return EXIT_INCOMPLETE
    return EXIT_OK
