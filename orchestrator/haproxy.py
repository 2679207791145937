"""HAProxy's view of the servers: the one door to HAProxy's runtime API (``show stat`` over
its UNIX stats socket, haproxy.stats_sockets), read only, each socket with a short deadline.

orch never changes HAProxy: HAProxy follows orch by checking its HTTP API (conf/haproxy.cfg,
docs/haproxy.md). Reading what HAProxy concluded lets ``orch status``, GET /status and the
status page say which server each HAProxy sends writes and reads to. ``parse_stat`` and
``backend_servers`` are pure; ``read_stat`` and ``observe`` do the I/O. A socket that does
not answer is a reading with ``reachable=False`` and its error, never an exception.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .config import Config

STAT_TIMEOUT = 1.0  # seconds for one socket's whole answer: HAProxy answers from memory in milliseconds
MAX_ANSWER = 4 << 20  # bytes: a show stat of a few backends is a few kB; more is not HAProxy's answer
STATUSES = ("UP", "DOWN", "MAINT", "DRAIN", "NOLB")


@dataclass(frozen=True)
class BackendServer:
    """One server line of a backend, as HAProxy last judged it."""

    role: str  # write | read (which of haproxy.write_backend / read_backend it is in)
    backend: str  # pxname
    server: str  # svname
    address: str  # addr (HAProxy 1.9+), "" when not given
    status: str  # UP | DOWN | MAINT | DRAIN | NOLB (normalized from ``raw_status``)
    raw_status: str  # HAProxy's words: "UP", "DOWN 1/2", "MAINT (via write/server1)", "no check"...
    check: str  # check_status: L7OK, L7STS, L4CON, L4TOUT... ("" when the server is not checked)
    check_code: str  # the HTTP status of the last check ("" when none)
    backup: bool  # a backup server (used only while no other server of its backend is up)

    def as_dict(self) -> Dict[str, Any]:
        return {"role": self.role, "backend": self.backend, "server": self.server, "address": self.address,
                "status": self.status, "raw_status": self.raw_status, "check": self.check, "check_code": self.check_code,
                "backup": self.backup}


@dataclass(frozen=True)
class Reading:
    """One HAProxy's answer (or why there is none)."""

    socket: str
    reachable: bool
    error: str = ""  # why it was not read, or what its answer lacks (a backend missing)
    servers: Tuple[BackendServer, ...] = ()
    at: float = 0.0  # time.monotonic() when read

    def as_dict(self, now: Optional[float] = None) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.socket, "socket": self.socket, "reachable": self.reachable, "error": self.error,
                               "backends": [s.as_dict() for s in self.servers]}
        if now is not None:
            out["age"] = round(max(0.0, now - self.at), 3)
        return out


def normalize_status(raw: str) -> str:
    """HAProxy's status text as one of STATUSES. "UP 1/2" (up, failing its checks) is UP and
    "DOWN 1/2" (down, passing them) DOWN until HAProxy decides; "no check" is UP, as HAProxy
    treats an unchecked server; anything unknown is DOWN (not to be counted on)."""
    text = raw.strip()
    if text.lower() == "no check":
        return "UP"
    word = text.split(" ", 1)[0].upper()
    return word if word in STATUSES else "DOWN"


def parse_stat(text: str) -> List[Dict[str, str]]:
    """``show stat``'s CSV as rows keyed by column name. ValueError when it is not that (an
    error message from HAProxy, an empty answer, a line with more fields than the header)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        first = lines[0].strip()[:120] if lines else "an empty answer"
        raise ValueError(f"not a show stat answer: {first}")
    columns = lines[0][2:].split(",")
    if "pxname" not in columns or "svname" not in columns or "status" not in columns:
        raise ValueError("show stat's header lacks pxname, svname or status")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        fields = line.split(",")
        if len(fields) > len(columns):
            raise ValueError(f"show stat line {n} has {len(fields)} fields, its header {len(columns)}")
        rows.append(dict(zip(columns, fields)))
    return rows


def backend_servers(rows: Sequence[Mapping[str, str]], write_backend: str, read_backend: str) -> Tuple[Tuple[BackendServer, ...], str]:
    """The servers of the write and read backends, write first, in HAProxy's order, and what
    is missing ("" when both backends are there)."""
    roles = {write_backend: "write", read_backend: "read"}
    found: Dict[str, List[BackendServer]] = {"write": [], "read": []}
    seen = set()
    for row in rows:
        backend, server = row.get("pxname", ""), row.get("svname", "")
        if backend not in roles:
            continue
        if server == "BACKEND":
            seen.add(backend)
            continue
        if server == "FRONTEND":
            continue
        raw = row.get("status", "")
        found[roles[backend]].append(BackendServer(
            roles[backend], backend, server, row.get("addr", ""), normalize_status(raw), raw,
            row.get("check_status", "").strip("* "), row.get("check_code", ""), row.get("bck", "0") == "1"))
    missing = [f"{name} (haproxy.{role}_backend)" for name, role in roles.items() if name not in seen and not found[role]]
    problem = f"no backend {', '.join(missing)} in its show stat" if missing else ""
    return tuple(found["write"] + found["read"]), problem


def read_stat(path: str, timeout: float = STAT_TIMEOUT) -> str:
    """``show stat`` from the runtime API socket at ``path``, whole within ``timeout`` seconds.
    OSError (or TimeoutError) when it cannot be had."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"show stat\n")
        chunks: List[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no whole answer within {timeout:g}s")
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:  # HAProxy closes a non-interactive session after its answer
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER:
                raise OSError(f"answer larger than {MAX_ANSWER} bytes")
    return b"".join(chunks).decode("utf-8", "replace")


def read_one(path: str, write_backend: str, read_backend: str, timeout: float = STAT_TIMEOUT) -> Reading:
    """One HAProxy's reading; never raises for what the socket does."""
    at = time.monotonic()
    try:
        text = read_stat(path, timeout)
    except socket.timeout:
        return Reading(path, False, f"no answer within {timeout:g}s", at=at)
    except OSError as exc:
        return Reading(path, False, f"cannot read show stat: {exc.strerror or exc}", at=at)
    try:
        rows = parse_stat(text)
    except ValueError as exc:
        return Reading(path, False, str(exc), at=at)
    servers, problem = backend_servers(rows, write_backend, read_backend)
    return Reading(path, True, problem, servers, at)


def observe(cfg: Config, timeout: float = STAT_TIMEOUT) -> Tuple[Reading, ...]:
    """Every configured HAProxy's reading, read side by side: a dead socket costs ``timeout``
    once, not once per socket."""
    h = cfg.haproxy
    if len(h.stats_sockets) < 2:
        return tuple(read_one(path, h.write_backend, h.read_backend, timeout) for path in h.stats_sockets)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(h.stats_sockets), thread_name_prefix="haproxy-stat") as pool:
        return tuple(pool.map(lambda path: read_one(path, h.write_backend, h.read_backend, timeout), h.stats_sockets))


def describe(reading: Mapping[str, Any]) -> List[str]:
    """One reading (as_dict's form) as lines for orch status: a line naming the HAProxy, then
    its write and its read backend, each server with its status and last check."""
    name = reading.get("name")
    if not reading.get("reachable"):
        return [f"haproxy {name}: UNREACHABLE: {reading.get('error')}"]
    lines = [f"haproxy {name}:"]
    for role in ("write", "read"):
        servers = [b for b in reading.get("backends") or [] if b.get("role") == role]
        if not servers:
            continue
        listed = ", ".join(f"{b['server']} {b['status']}" + (f" ({b['check']})" if b.get("check") else "") +
                           (" backup" if b.get("backup") else "") for b in servers)
        lines.append(f"  {role} backend {servers[0]['backend']}: {listed}")
    if reading.get("error"):
        lines.append(f"  {reading['error']}")
    return lines
