"""The HTTP API, pure: a request and what orch last observed in, an answer (or the effect to
perform) out. The server around it (sockets, TLS, the refresher, running commands) is
orchestrator/http_server.py; docs/http-api.md is the reference.

Health endpoints read, they never act: ``/health``, ``/master`` and ``/replica`` answer from
the last observation (``Snapshot``), never from a query of their own, so a hung server
cannot stall a check and a check cannot stall the maintainer. An observation older than
``STALE_AFTER`` is not trusted: a server that stopped answering is not vouched for.

- ``/master``: 200 only on the writable VIP holder (and the etcd write token's holder, where
  etcd is configured: ``Snapshot.write_token``, None without etcd).
- ``/replica``: 200 only on a replica that passes the Atlas read backend's "may stay" rule
  (decide.replica_health with in_atlas=True: the rule of orch check --replica and of the
  maintainer); ``?lag=SECONDS`` replaces maintainer.max_lag for this check.
- ``/health``: 200 while orch observes its own server answering.
- ``POST /switchover``, ``/pause``, ``/resume``, ``/promote``, ``/demote``, ``/ack``:
  ``Authorization: Bearer <token>`` (http.token_file), then the orch command runs on this host
  (``Command``), with who asked and from where in its environment (journaled with its run).
"""

from __future__ import annotations

import hmac
import json
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import parse_qs

from .config import Config
from .model import ClusterView

# Seconds: an older observation vouches for nothing. Six refreshes missed: a server that
# takes that long to answer a few status queries is hung or about to be; the master role
# must leave a hung server before its replica is promoted (the read backend's backup).
STALE_AFTER = 1.5
REFRESH_EVERY = 0.25  # seconds between two observations of each server while the API is served
SWITCHOVER_MARGIN = 90.0  # seconds a switchover may take beyond its catch-up (the VIP's move, the promotion, the rejoin)
MAX_BODY = 4096  # bytes of a POST body
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """One HTTP request, as much of it as the API reads."""

    method: str
    target: str  # the path with its query string
    authorization: str = ""  # the Authorization header ("" when absent)
    body: bytes = b""
    client: str = ""  # the client's address (journaled with a command it asks for)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0].rstrip("/") or "/"

    @property
    def query(self) -> Dict[str, str]:
        """The query's parameters (the last of a repeated one)."""
        raw = self.target.split("?", 1)[1] if "?" in self.target else ""
        return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """What the endpoints answer from: the newest observation of both servers (the refresher's
    or the maintainer's), when it was made, and the maintainer's last full view."""

    view: Optional[ClusterView] = None  # None: nothing observed yet
    at: float = -math.inf  # time.monotonic() of ``view``
    full: Optional[ClusterView] = None  # the maintainer's last pass (with Atlas, the records): /status
    full_at: float = -math.inf
    # The etcd write token (the seam for etcd's leader key): True when this node holds it,
    # False when another does or nobody does, None where etcd is not configured.
    write_token: Optional[bool] = None

    def age(self, now: float) -> float:
        return now - self.at


@dataclass(frozen=True)
class Command:
    """A POST that authenticated: run ``orch <argv>`` on this host and answer with its outcome."""

    name: str  # switchover, pause or resume
    argv: Tuple[str, ...]  # after ``orch -c CONFIG``
    operator: str  # who asked (recorded by pause/resume, journaled with every run)
    timeout: float  # seconds before the command is given up on (and killed)
    asked_from: str = ""  # the asking host's node name, as it says ("" when it does not)
    client: str = ""  # the address the request came from


@dataclass(frozen=True)
class Effect:
    """A GET the server answers by reading something (``status``, ``history``, ``page``, ``metrics``)."""

    name: str
    since: str = ""  # /history?since=


Answer = Union[Response, Command, Effect]


def json_response(status: int, doc: Any, headers: Tuple[Tuple[str, str], ...] = ()) -> Response:
    return Response(status, (json.dumps(doc, indent=2, default=str) + "\n").encode("utf-8"), JSON, headers)


def error(status: int, text: str) -> Response:
    return json_response(status, {"error": text})


# ----------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def fresh(snap: Snapshot, now: float) -> Optional[str]:
    """Why the observation cannot be trusted now, or None when it can."""
    if snap.view is None:
        return "orch has not observed its server yet"
    age = snap.age(now)
    if age > STALE_AFTER:
        return f"orch's last observation is {age:.1f}s old (> {STALE_AFTER:g}s): its server may be hung"
    return None


def check_health(snap: Snapshot, now: float) -> Verdict:
    """orch runs and its own server answers."""
    stale = fresh(snap, now)
    if stale:
        return Verdict(False, stale)
    assert snap.view is not None
    me = snap.view.me
    if not me.reachable:
        return Verdict(False, f"{me.name}'s server does not answer: {me.error}")
    return Verdict(True, f"{me.name}'s server answers ({'writable' if me.writable else 'read-only'})")


def check_master(snap: Snapshot, cfg: Config, now: float) -> Verdict:
    """The writable VIP holder (and the etcd token's holder where etcd is configured)."""
    health = check_health(snap, now)
    if not health.ok:
        return health
    assert snap.view is not None
    view, me = snap.view, snap.view.me
    if not me.writable:
        return Verdict(False, f"{me.name} is read-only: not the master")
    if view.holds_vip is False:
        return Verdict(False, f"{me.name} is writable but does not hold VIP {cfg.keepalived.vip}: not the master")
    if view.holds_vip is None and cfg.keepalived.vip_check:
        return Verdict(False, f"whether {me.name} holds VIP {cfg.keepalived.vip} is not known")
    if snap.write_token is False:
        return Verdict(False, f"{me.name} does not hold the etcd write token: not the master")
    where = f"holds VIP {cfg.keepalived.vip}" if view.holds_vip else "keepalived.vip_check is off"
    return Verdict(True, f"{me.name} is the writable master ({where})")


def check_replica(snap: Snapshot, cfg: Config, now: float, max_lag: Optional[int] = None) -> Verdict:
    """A replica fit to serve reads: the Atlas read backend's rule (decide.replica_health,
    in_atlas=True), with ``max_lag`` in place of maintainer.max_lag when given."""
    from .decide import replica_health

    health = check_health(snap, now)
    if not health.ok:
        return health
    assert snap.view is not None
    view = snap.view
    if max_lag is not None:
        cfg = replace(cfg, maintainer=replace(cfg.maintainer, max_lag=max_lag))
    verdict = replica_health(view, view.me, view.peer, cfg, in_atlas=True)
    # None: healthy as far as can be told without the peer (errant GTIDs unchecked), as orch check --replica.
    return Verdict(verdict.healthy is not False, verdict.reason)


def node_facts(snap: Snapshot, now: float) -> Dict[str, Any]:
    """What a check's answer says besides its verdict: this node as last observed, and when."""
    view = snap.view
    facts: Dict[str, Any] = {"observed_age": None if view is None else round(snap.age(now), 3)}
    if view is None:
        return facts
    me = view.me
    r = me.replica
    role = ("unreachable" if not me.reachable else "master" if me.writable
            else "replica" if r is not None and r.configured else "fenced")
    facts.update(node=me.name, role=role, read_only=me.read_only if me.reachable else None, holds_vip=view.holds_vip,
                 lag=r.lag if me.reachable and r is not None and r.configured else None, write_token=snap.write_token)
    return facts


def check_answer(name: str, verdict: Verdict, snap: Snapshot, now: float) -> Response:
    doc = {"check": name, "ok": verdict.ok, "reason": verdict.reason, **node_facts(snap, now)}
    return json_response(200 if verdict.ok else 503, doc)


# ----------------------------------------------------------------------------- authentication


def authorized(header: str, token: Optional[str]) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time. No token configured: nobody."""
    if not token:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode("utf-8"))


# ----------------------------------------------------------------------------- brute force

AUTH_FAILURES = 5  # failed authentications from one address within AUTH_WINDOW ...
AUTH_WINDOW = 60.0  # ... seconds lock that address out ...
AUTH_LOCKOUT = 300.0  # ... for this many seconds: its POSTs answer 429, even with the right token
AUTH_TRACKED = 1024  # addresses remembered at most (the oldest forgotten first): memory stays bounded


@dataclass(frozen=True)
class Strikes:
    """One client address's recent failed authentications, and its lock-out."""

    failures: Tuple[float, ...] = ()  # time.monotonic() of each failure within AUTH_WINDOW
    locked_until: float = -math.inf

    def locked_for(self, now: float) -> float:
        """Seconds this address stays locked out (0: it is not)."""
        return max(0.0, self.locked_until - now)


@dataclass(frozen=True)
class AuthOutcome:
    """What one authenticated request did to its address's strikes."""

    strikes: Optional[Strikes]  # the address's strikes after it (None: nothing to remember)
    answer: Optional[Response]  # 429 when the address is locked out; None: route the request
    failed: bool = False  # the request carried no token or a wrong one
    locked_out: bool = False  # this failure started a lock-out (logged and journaled once)


def needs_token(req: Request) -> bool:
    """A request the token guards: a POST of an action."""
    return req.method == "POST" and req.path in ACTIONS


def too_many(seconds: float) -> Response:
    wait = max(1, math.ceil(seconds))
    return json_response(429, {"error": f"too many failed authentications from this address: try again in {wait}s"},
                         (("Retry-After", str(wait)),))


def gate(strikes: Optional[Strikes], req: Request, token: Optional[str], now: float) -> AuthOutcome:
    """The brute-force limit on the API token, decided for one request from its address's
    ``strikes``. Pure. A locked-out address is answered 429 (Retry-After) before its token is
    looked at; a failure is remembered for AUTH_WINDOW seconds, and the AUTH_FAILURES-th
    within it locks the address out for AUTH_LOCKOUT seconds; a success forgets its failures."""
    if not needs_token(req) or not token:  # nothing to guess (the POSTs are off without a token: 403)
        return AuthOutcome(strikes, None)
    current = strikes or Strikes()
    left = current.locked_for(now)
    if left > 0:
        return AuthOutcome(current, too_many(left))
    if authorized(req.authorization, token):
        return AuthOutcome(None, None)
    recent = tuple(t for t in current.failures if now - t < AUTH_WINDOW) + (now,)
    if len(recent) >= AUTH_FAILURES:
        return AuthOutcome(Strikes((), now + AUTH_LOCKOUT), None, failed=True, locked_out=True)
    return AuthOutcome(Strikes(recent), None, failed=True)


def forget_old(book: Dict[str, Strikes], now: float, keep: int = AUTH_TRACKED) -> Dict[str, Strikes]:
    """``book`` without the addresses with nothing left to remember, and at most ``keep`` of the
    others (the ones with the latest failure or lock-out kept). Pure."""
    live = {a: s for a, s in book.items()
            if s.locked_for(now) > 0 or any(now - t < AUTH_WINDOW for t in s.failures)}
    if len(live) <= keep:
        return live
    latest = sorted(live, key=lambda a: max((*live[a].failures, live[a].locked_until)), reverse=True)
    return {a: live[a] for a in latest[:keep]}


# ----------------------------------------------------------------------------- POST bodies


def _body(req: Request) -> Mapping[str, Any]:
    if not req.body.strip():
        return {}
    if len(req.body) > MAX_BODY:
        raise ValueError(f"the body is over {MAX_BODY} bytes")
    try:
        doc = json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("the body must be a JSON object")
    return doc


def _flag(doc: Mapping[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false")
    return value


def _text(doc: Mapping[str, Any], key: str, limit: int = 255) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise ValueError(f"{key}: expected a line of text (at most {limit} characters)")
    return value


KEYS = {
    "switchover": {"to", "dry_run", "format"},
    "pause": {"for", "reason", "dry_run"},
    "resume": {"dry_run"},
    "promote": {"dry_run", "format", "ignore_catchup", "ignore_anti_flapping", "force"},
    "demote": {"dry_run", "format", "rewind"},
    "ack": {"dry_run", "format"},
}
ASKED = {"by", "from"}  # every action's body: who asks (a person's name) and from which node


def _json_plan(doc: Mapping[str, Any], dry: Tuple[str, ...]) -> Tuple[str, ...]:
    fmt = doc.get("format", "table")
    if fmt not in ("table", "json"):
        raise ValueError("format: expected table or json")
    return ("--format", "json") if fmt == "json" and "--dry-run" in dry else ()


def command_for(name: str, doc: Mapping[str, Any], cfg: Config, client: str = "") -> Command:
    """The orch command a POST runs on this host (ValueError: a bad body, said in one line)."""
    unknown = set(doc) - KEYS[name] - ASKED
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
    by = _text(doc, "by", 64) or "http"
    origin = _text(doc, "from", 64)
    dry = ("--dry-run",) if _flag(doc, "dry_run") else ("--yes",)
    plan_timeout = cfg.failover.lock_timeout + cfg.failover.catchup_timeout + SWITCHOVER_MARGIN
    argv: Tuple[str, ...]
    if name == "switchover":
        to = _text(doc, "to", 64)
        if to and to not in {n.name for n in cfg.nodes}:
            raise ValueError(f"to: {to!r} is not a node of this cluster ({', '.join(n.name for n in cfg.nodes)})")
        argv = ("switchover", *dry, *_json_plan(doc, dry), *(("--to", to) if to else ()))
        timeout = cfg.failover.catchup_timeout + SWITCHOVER_MARGIN
    elif name == "pause":
        seconds = doc.get("for", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 366 * 86400:
            raise ValueError("for: expected seconds (0: until orch resume)")
        reason = _text(doc, "reason")
        argv = ("pause", *dry, *(("--for", f"{seconds:g}") if seconds else ()), *(("--reason", reason) if reason else ()))
        timeout = cfg.failover.lock_timeout + 30.0
    elif name == "resume":
        argv, timeout = ("resume", *dry), cfg.failover.lock_timeout + 30.0
    elif name == "promote":
        gates = tuple(f"--{key.replace('_', '-')}" for key in ("ignore_catchup", "ignore_anti_flapping", "force")
                      if _flag(doc, key))
        argv, timeout = ("promote", *dry, *_json_plan(doc, dry), *gates), plan_timeout
    elif name == "demote":
        argv, timeout = ("demote", *dry, *_json_plan(doc, dry), *(("--rewind",) if _flag(doc, "rewind") else ())), plan_timeout
    else:
        argv, timeout = ("ack", *dry, *_json_plan(doc, dry)), cfg.failover.lock_timeout + 30.0
    return Command(name, argv, by, timeout, origin, client)


# ----------------------------------------------------------------------------- the router


ROUTES = ("/", "/health", "/master", "/primary", "/replica", "/status", "/history", "/metrics")
ACTIONS = ("/switchover", "/pause", "/resume", "/promote", "/demote", "/ack")


def route(req: Request, snap: Snapshot, cfg: Config, token: Optional[str], now: Optional[float] = None) -> Answer:
    """The answer to ``req``, or the effect the server performs to make it. Pure."""
    now = time.monotonic() if now is None else now
    path = req.path
    if req.method in ("GET", "HEAD"):
        if path == "/health":
            return check_answer("health", check_health(snap, now), snap, now)
        if path in ("/master", "/primary"):  # /primary: Patroni's name for it
            return check_answer("master", check_master(snap, cfg, now), snap, now)
        if path == "/replica":
            lag = req.query.get("lag")
            max_lag = None
            if lag is not None:
                if not lag.isdigit() or int(lag) > 86400:
                    return error(400, f"lag: expected whole seconds from 0 to 86400, got {lag!r}")
                max_lag = int(lag)
            return check_answer("replica", check_replica(snap, cfg, now, max_lag), snap, now)
        if path == "/status":
            if snap.full is None:
                return error(503, "the maintainer has not finished a pass yet")
            return Effect("status")
        if path == "/history":
            return Effect("history", req.query.get("since", ""))
        if path in ("/", "/metrics"):
            return Effect("page" if path == "/" else "metrics")
        if path in ACTIONS:
            return error(405, f"{path} changes state: POST it")
        return error(404, f"no such endpoint: {path}")
    if req.method == "POST":
        if path not in ACTIONS:
            return error(405 if path in ROUTES else 404, f"POST {path}: not an action (POST {', '.join(ACTIONS)})")
        if not token:
            return error(403, "state-changing endpoints are off on this host: no http.token_file (or it cannot be read)")
        if not authorized(req.authorization, token):
            return error(401, "missing or wrong token (Authorization: Bearer <http.token_file's token>)")
        try:
            return command_for(path[1:], _body(req), cfg, req.client)
        except ValueError as exc:
            return error(400, f"POST {path}: {exc}")
    return error(405, f"method {req.method} not allowed")


def command_status(exit_code: int) -> int:
    """The HTTP status of a command's outcome: 200 done, 409 refused or incomplete, 400 bad
    input, 500 anything else (the exit code is in the body)."""
    from .errors import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE

    return {EXIT_OK: 200, EXIT_FAILED: 409, EXIT_INCOMPLETE: 409, EXIT_USAGE: 400}.get(exit_code, 500)
