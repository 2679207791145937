"""The one door to etcd: its v3 JSON API (the gRPC gateway every etcd 3.4 member serves on its
client URL), over http.client, with a deadline per call and failover between endpoints.

Why not etcd3gw: it pulls requests (and pbr, futurist, debtcollector); importing it costs
about 165 ms on the lab machine against 12 to 25 ms for http.client, and keepalived runs
``orch notify`` cold on every transition (bench/notify_latency). The calls orch needs are
seven small POSTs of JSON (docs/etcd.md, "The client"). This module is imported only when
the config has an ``etcd:`` section.

Every call has one deadline (``etcd.timeout``, or the caller's) over all endpoints: each
endpoint gets an equal share of what is left, so a member that accepts TCP and then says
nothing costs its share, never the whole call. The endpoint that answered last is tried
first next time. Errors are EtcdError (one line, never the password).

The verbs the token needs (orchestrator/token.py decides, this only talks):
``grant``/``keepalive``/``revoke``/``time_to_live`` for a lease; ``get``/``get_prefix``;
``create`` (put if the key does not exist), ``swap`` (put if the key is still at a
revision), ``delete_if`` (delete if still at a revision); ``put``; ``members``; ``status``.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from .errors import OrchError

if TYPE_CHECKING:
    from .config import Etcd

log = logging.getLogger(__name__)

NOT_FOUND = 5  # gRPC NotFound: "requested lease not found"
UNAUTHENTICATED = 16
INVALID_ARGUMENT = 3


class EtcdError(OrchError):
    """etcd could not be reached within the deadline, or refused a call."""

    def __init__(self, message: str, code: int = 0, reached: bool = False) -> None:
        super().__init__(message)
        self.code = code  # the gRPC code etcd answered with (0: none, e.g. no member answered)
        self.reached = reached  # a member answered (refused), as opposed to none answering in time


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unb64(value: Any) -> str:
    return base64.b64decode(value or "").decode("utf-8", "replace")


def range_end(prefix: str) -> str:
    """The end of the key range holding every key that starts with ``prefix``."""
    raw = bytearray(prefix.encode("utf-8"))
    while raw and raw[-1] == 0xFF:
        raw.pop()
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode("ascii")


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    lease: int  # 0: no lease
    mod_revision: int
    create_revision: int


def _kv(raw: Dict[str, Any]) -> KeyValue:
    return KeyValue(_unb64(raw.get("key")), _unb64(raw.get("value")), int(raw.get("lease") or 0),
                    int(raw.get("mod_revision") or 0), int(raw.get("create_revision") or 0))


class EtcdClient:
    """A small etcd v3 client: one instance per process, thread-safe per call (each call opens
    its own connection: a keepalive thread and a pass may call at once)."""

    def __init__(self, settings: "Etcd", timeout: Optional[float] = None) -> None:
        self.settings = settings
        self.endpoints: List[str] = list(settings.endpoints)
        self.timeout = settings.timeout if timeout is None else timeout
        self._token = ""  # the auth token (etcd user/password), fetched on first need
        self._ssl: Any = None
        self.last_endpoint = ""  # the member that answered last (orch status, doctor)

    # ---------------------------------------------------------------- transport

    def _context(self) -> Any:
        if self._ssl is None:
            import ssl  # only for https endpoints

            s = self.settings
            # A file that cannot be read or a key that does not match its certificate is this
            # host's configuration, the same for every member: one clear error, no member tried.
            try:
                ctx = ssl.create_default_context(cafile=s.cacert or None)
            except (OSError, ValueError) as exc:
                raise EtcdError(f"etcd TLS: cannot load etcd.cacert {s.cacert}: {_tls_reason(exc)}") from None
            if s.cert:
                try:
                    ctx.load_cert_chain(s.cert, s.key or None, password=_no_passphrase)
                except (OSError, ValueError) as exc:
                    raise EtcdError(f"etcd TLS: cannot load etcd.cert {s.cert} with etcd.key {s.key}: "
                                    f"{_tls_reason(exc)}") from None
            self._ssl = ctx
        return self._ssl

    def _post_one(self, endpoint: str, path: str, body: Dict[str, Any], timeout: float) -> Tuple[int, Dict[str, Any]]:
        import http.client

        parts = urlsplit(endpoint)
        host, port = parts.hostname or "", parts.port or 2379
        conn: Any
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if self._token and path != "/v3/auth/authenticate":
            headers["Authorization"] = self._token
        try:
            conn.request("POST", path, json.dumps(body), headers)
            resp = conn.getresponse()
            data = resp.read()
            status = resp.status
        finally:
            conn.close()
        try:
            answer = json.loads(data.decode("utf-8") or "{}")
        except ValueError:
            answer = {"error": data[:200].decode("utf-8", "replace")}
        return status, answer if isinstance(answer, dict) else {"error": str(answer)[:200]}

    def call(self, path: str, body: Dict[str, Any], timeout: Optional[float] = None, what: str = "") -> Dict[str, Any]:
        """POST ``body`` to ``path`` on the first member that answers within the deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        order = sorted(self.endpoints, key=lambda e: e != self.last_endpoint)
        errors: List[str] = []
        authenticated = False
        if any(e.startswith("https://") for e in order):
            self._context()  # this host's TLS files: an EtcdError before any member is tried
        i = 0
        while i < len(order):
            endpoint = order[i]
            left = deadline - time.monotonic()
            if left <= 0.01:
                errors.append(f"{endpoint}: deadline reached")
                i += 1
                continue
            share = max(left / (len(order) - i), min(left, 0.2))
            try:
                if self.settings.user and not self._token:
                    self._authenticate(endpoint, share)
                status, answer = self._post_one(endpoint, path, body, share)
            except EtcdError as exc:
                if exc.reached:
                    raise
                errors.append(f"{endpoint}: {exc}")
                i += 1
                continue
            except (OSError, ValueError) as exc:  # refused, unroutable, timed out, TLS, a torn answer
                errors.append(f"{endpoint}: {_os_text(exc, self.settings, endpoint)}")
                i += 1
                continue
            code = int(answer.get("code") or 0) if isinstance(answer.get("code"), (int, str)) else 0
            if status == 200 and "error" not in answer:
                self.last_endpoint = endpoint
                return answer.get("result", answer) if path == "/v3/lease/keepalive" else answer
            message = str(answer.get("message") or answer.get("error") or f"HTTP {status}")
            if code == UNAUTHENTICATED or "invalid auth token" in message:
                if self.settings.user and not authenticated:
                    self._token, authenticated = "", True
                    continue  # log in again once (a token expires), same endpoint
            if status >= 500 and code not in (NOT_FOUND, INVALID_ARGUMENT) and "leader" in message.lower():
                errors.append(f"{endpoint}: {message}")  # no leader on that member: try another
                i += 1
                continue
            raise EtcdError(f"etcd {what or path}: {_explain(message)}", code, reached=True)
        if errors and all(TLS_MARK in e for e in errors):  # each member answered, and TLS failed
            raise EtcdError(f"etcd {what or path}: no member could be used ({'; '.join(errors)})")
        raise EtcdError(f"etcd {what or path}: no member answered within "
                        f"{self.timeout if timeout is None else timeout:g}s ({'; '.join(errors)})")

    def _authenticate(self, endpoint: str, timeout: float) -> None:
        s = self.settings
        status, answer = self._post_one(endpoint, "/v3/auth/authenticate", {"name": s.user, "password": s.password}, timeout)
        if status != 200 or not answer.get("token"):
            # The message is etcd's ("authentication failed, invalid user ID or password"): never the password.
            raise EtcdError(f"etcd login as {s.user!r}: {_explain(str(answer.get('message') or answer.get('error') or status))}",
                            int(answer.get("code") or 0), reached=True)
        self._token = str(answer["token"])

    # ---------------------------------------------------------------- leases

    def grant(self, ttl: int, timeout: Optional[float] = None) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        answer = self.call("/v3/lease/grant", {"TTL": int(ttl)}, timeout, "lease grant")
        return int(answer["ID"])

    def keepalive(self, lease: int, timeout: Optional[float] = None) -> int:
        """Renew a lease: its TTL granted again (0 or less: it expired, or never existed)."""
        answer = self.call("/v3/lease/keepalive", {"ID": str(lease)}, timeout, "lease keepalive")
        return int(answer.get("TTL") or 0)

    def time_to_live(self, lease: int, timeout: Optional[float] = None) -> int:
        """Seconds left of a lease by the etcd leader's clock (-1: expired or unknown)."""
        try:
            answer = self.call("/v3/kv/lease/timetolive", {"ID": str(lease)}, timeout, "lease time-to-live")
        except EtcdError as exc:
            if exc.code == NOT_FOUND:
                return -1
            raise
        ttl = answer.get("TTL")
        return -1 if ttl is None else int(ttl)

    def lease_ttl(self, lease: int, timeout: Optional[float] = None) -> Tuple[int, int]:
        """(seconds left of a lease, -1 when gone; the raft term that answered): a TTL that did not go
        down within one term was renewed by its holder (a new leader restarts every lease, in a new term)."""
        try:
            answer = self.call("/v3/kv/lease/timetolive", {"ID": str(lease)}, timeout, "lease time-to-live")
        except EtcdError as exc:
            if exc.code == NOT_FOUND:
                return -1, 0
            raise
        ttl = answer.get("TTL")
        return (-1 if ttl is None else int(ttl)), int((answer.get("header") or {}).get("raft_term") or 0)

    def revoke(self, lease: int, timeout: Optional[float] = None) -> None:
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease)}, timeout, "lease revoke")
        except EtcdError as exc:
            if exc.code != NOT_FOUND:
                raise

    # ---------------------------------------------------------------- keys

    def get(self, key: str, timeout: Optional[float] = None) -> Optional[KeyValue]:
        answer = self.call("/v3/kv/range", {"key": _b64(key)}, timeout, f"get {key}")
        kvs = answer.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str, timeout: Optional[float] = None) -> List[KeyValue]:
        answer = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": range_end(prefix)}, timeout, f"get {prefix}*")
        return [_kv(kv) for kv in answer.get("kvs") or []]

    def put(self, key: str, value: str, lease: int = 0, timeout: Optional[float] = None) -> None:
        body: Dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self.call("/v3/kv/put", body, timeout, f"put {key}")

    def _txn(self, compare: Dict[str, Any], success: List[Dict[str, Any]], what: str,
             timeout: Optional[float]) -> Tuple[bool, Optional[KeyValue]]:
        """One transaction: if ``compare`` holds, ``success``; otherwise read the key. (succeeded, the key now if read)."""
        key = compare["key"]
        failure = [{"request_range": {"key": key}}]
        answer = self.call("/v3/kv/txn", {"compare": [compare], "success": success, "failure": failure}, timeout, what)
        if answer.get("succeeded"):
            return True, None
        for r in answer.get("responses") or []:
            kvs = (r.get("response_range") or {}).get("kvs") or []
            if kvs:
                return False, _kv(kvs[0])
        return False, None

    def create(self, key: str, value: str, lease: int, timeout: Optional[float] = None) -> Tuple[bool, Optional[KeyValue]]:
        """Put ``key`` only if it does not exist (create_revision 0): (created, the holder's key when not)."""
        put = {"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease)}}
        return self._txn({"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}, [put],
                         f"create {key}", timeout)

    def swap(self, key: str, mod_revision: int, value: str, lease: int,
             timeout: Optional[float] = None) -> Tuple[bool, Optional[KeyValue]]:
        """Put ``key`` only if it is still at ``mod_revision`` (a take-over or hand-over)."""
        put = {"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease)}}
        return self._txn({"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}, [put],
                         f"swap {key}", timeout)

    def delete_if(self, key: str, mod_revision: int, timeout: Optional[float] = None) -> Tuple[bool, Optional[KeyValue]]:
        """Delete ``key`` only if it is still at ``mod_revision`` (a release that cannot drop another's token)."""
        delete = {"request_delete_range": {"key": _b64(key)}}
        return self._txn({"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}, [delete],
                         f"delete {key}", timeout)

    # ---------------------------------------------------------------- cluster

    def members(self, timeout: Optional[float] = None) -> List[Tuple[str, Tuple[str, ...]]]:
        """(name, client URLs) of every member, as the cluster knows them."""
        answer = self.call("/v3/cluster/member/list", {}, timeout, "member list")
        return [(str(m.get("name") or m.get("ID")), tuple(m.get("clientURLs") or ())) for m in answer.get("members") or []]

    def status_of(self, endpoint: str, timeout: float = 1.0) -> Dict[str, Any]:
        """One member's own status (its leader, its raft term), asked of that member alone."""
        one = EtcdClient(self.settings, timeout)
        one.endpoints = [endpoint]
        one._token, one._ssl = self._token, self._ssl
        return one.call("/v3/maintenance/status", {}, timeout, f"status of {endpoint}")


@dataclass(frozen=True)
class Member:
    """One etcd member as ``member list`` names it (ids as etcd's decimal uint64)."""

    id: int
    name: str
    client_urls: Tuple[str, ...]
    peer_urls: Tuple[str, ...]


def member_list(c: EtcdClient, timeout: Optional[float] = None) -> List[Member]:
    """Every member with its id and its client and peer URLs (to tell on which host it runs)."""
    answer = c.call("/v3/cluster/member/list", {}, timeout, "member list")
    return [Member(int(m.get("ID") or 0), str(m.get("name") or m.get("ID")), tuple(m.get("clientURLs") or ()),
                   tuple(m.get("peerURLs") or ())) for m in answer.get("members") or []]


def move_leader(c: EtcdClient, leader_endpoint: str, target: int, timeout: float = 3.0) -> None:
    """etcd's MoveLeader (etcdctl move-leader): the leader hands its leadership to member ``target``.
    Sent to the current leader alone (any other member refuses it)."""
    one = EtcdClient(c.settings, timeout)
    one.endpoints = [leader_endpoint]
    one._token, one._ssl = c._token, c._ssl
    one.call("/v3/maintenance/transfer-leadership", {"targetID": str(target)}, timeout, f"move leader to {target:x}")


TLS_MARK = "TLS: "  # how an endpoint's TLS failure starts in an error message


def _no_passphrase(*_: Any) -> str:
    # An encrypted key would make OpenSSL prompt on the terminal (a hung notify): refuse instead.
    raise ValueError("etcd.key is encrypted (orch needs it without a passphrase, as etcd's own key files)")


def _tls_reason(exc: BaseException) -> str:
    """OpenSSL's reason, without its source line ("[SSL: X] reason (_ssl.c:123)" -> "reason")."""
    import re

    text = getattr(exc, "verify_message", None) or getattr(exc, "strerror", None) or str(exc)
    text = re.sub(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\] ", "", str(text))
    return re.sub(r" \(_ssl\.c:\d+\)$", "", text) or type(exc).__name__


def _explain(message: str) -> str:
    """etcd's refusal on one line, with what to do where etcd's own words do not say it."""
    message = " ".join(message.split())  # a plain-text answer (http.Error) ends in a newline
    if "CommonName of client" in message:
        # etcd (embed/serve.go, since CVE-2018-16886) refuses every JSON-gateway call whose client
        # certificate has a Common Name while auth is on: orch's certificate must have none.
        return (f"{message} (with --client-cert-auth and auth enabled, etcd refuses a client certificate that has "
                f"a Common Name on its JSON API: issue etcd.cert without one; the user and password say who orch is)")
    return message


def _refused_client(settings: "Etcd", reason: str) -> str:
    if not settings.cert:
        return f"{TLS_MARK}the member wants a client certificate (--client-cert-auth): set etcd.cert and etcd.key ({reason})"
    return f"{TLS_MARK}the member refused the client certificate etcd.cert {settings.cert} ({reason})"


def _os_text(exc: BaseException, settings: Optional["Etcd"] = None, endpoint: str = "") -> str:
    """One line saying why one member could not be used: what failed and, for TLS, which setting to look at."""
    import socket
    import ssl

    if isinstance(exc, socket.timeout) or type(exc).__name__ == "TimeoutError":
        return "no answer (timed out)"
    if isinstance(exc, ssl.SSLError) and settings is not None:
        reason = _tls_reason(exc)
        if isinstance(exc, ssl.SSLCertVerificationError):
            if "mismatch" in reason:  # "IP address mismatch" / "Hostname mismatch"
                return f"{TLS_MARK}the member's certificate does not name {urlsplit(endpoint).hostname} ({reason})"
            where = f"etcd.cacert {settings.cacert}" if settings.cacert else "any of the system's CAs: set etcd.cacert"
            return f"{TLS_MARK}the member's certificate is not signed by {where} ({reason})"
        # A member with --client-cert-auth ends the handshake of a client without an acceptable
        # certificate: with an alert, or (a race) by closing the connection first.
        if ("CERTIFICATE" in str(exc).upper() and "ALERT" in str(exc).upper()) or isinstance(exc, ssl.SSLEOFError):
            return _refused_client(settings, reason)
        return f"{TLS_MARK}{reason}"
    if isinstance(exc, ConnectionResetError) and endpoint.startswith("https://") and settings is not None:
        return _refused_client(settings, "connection reset during the handshake")
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if type(exc).__name__ == "RemoteDisconnected" and endpoint.startswith("http://"):
        text = f"{text} (an https member? the endpoint says http://)"
    return str(text)


_CLIENTS: Dict[int, EtcdClient] = {}


def client_for(settings: "Etcd") -> EtcdClient:
    """This process's client for ``settings`` (it remembers the member that answered last)."""
    found = _CLIENTS.get(id(settings))
    if found is None or found.settings is not settings:
        found = _CLIENTS[id(settings)] = EtcdClient(settings)
    return found
