"""The randomized fault test's machinery: two hosts in network namespaces, a VIP the test
moves like keepalived would, orch runs recorded in a timestamped history, and the checks.

Topology (every interface and address lives in namespaces made here; the host's own
interfaces, routes and sysctls are never touched)::

    ochaos-<pid>-br   bridge br0 with ports vh1, vh2, vcl
    ochaos-<pid>-h1   eth0 10.231.57.1/24   mariadbd server1, orch runs of server1
    ochaos-<pid>-h2   eth0 10.231.57.2/24   mariadbd server2, orch runs of server2
    ochaos-<pid>-cl   eth0 10.231.57.10/24  the writer, writing through the VIP 10.231.57.100

No keepalived runs: the test plays it (:class:`Chaos`), adding the VIP to one host's
eth0 and firing ``orch notify`` the way keepalived's notify would. The namespace names
carry the creating PID, so a run that died without cleaning up is found and removed by
the next one.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pymysql

from orchestrator.lab import mariadb
from orchestrator.lab.netns import holds_address, in_netns, namespace_unavailable, remove_namespace
from orchestrator.lab.hosts import APP_CREDENTIALS, LAB_OVERRIDES, NAMES, Host, lab_config, write_secret
from orchestrator.lab.probes import ServerState, server_state
from orchestrator.lab.proc import orch_bin, run
from orchestrator.lab.traffic import Writer, create_app_schema

from . import orchtest

PREFIX = "ochaos"
SUBNET = "10.231.57"  # not the namespace lab's 10.213.0
VIP = f"{SUBNET}.100"
CLIENT_ADDRESS = f"{SUBNET}.10"
WITNESS = f"{SUBNET}.254"  # the bridge's own address: failover.witness
PREFIXLEN = 24
IFACE = "eth0"
MYSQL_PORT = 3306
VRRP_INSTANCE = "VI_1"
PRIORITY = {"server1": "250", "server2": "249"}  # what conf/keepalived-serverN.conf give

# The lab's maintainer.interval (LAB_OVERRIDES), and the test's pass cadence.
MAINTAINER_INTERVAL = float(LAB_OVERRIDES["maintainer.interval"].value)
ORCH_TIMEOUT = 60.0  # an orch run still going after this is reported as hung
# keepalived's check (interval 1, timeout 1, fall 2) calls a hung server failed after ~2-3 s
PAUSE_DETECT = 2.5
HOLD_TABLE = ("test", "chaos_hold")  # the row the long UPDATE holds


# --------------------------------------------------------------------------- availability


def unavailable_reason() -> Optional[str]:
    """Why the test cannot run here (None when it can); creates and deletes a probe namespace."""
    if os.geteuid() != 0:
        return "the chaos test needs root (network namespaces, moving the VIP)"
    if not shutil.which("ip"):
        return "the ip command is missing (apt-get install iproute2)"
    if not os.access(mariadb.MARIADBD, os.X_OK):
        return f"{mariadb.MARIADBD} not found (apt-get install mariadb-server)"
    return namespace_unavailable(f"{PREFIX}-{os.getpid()}-probe")


def cleanup_stale() -> List[str]:
    """Remove namespaces of earlier runs of this test whose process is gone."""
    removed = []
    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{PREFIX}-(\d+)-\w+", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            remove_namespace(name)
            removed.append(name)
    return removed


# --------------------------------------------------------------------------- orch.yaml

def chaos_hosts(workdir: Path) -> Dict[str, Host]:
    tag = f"{PREFIX}-{os.getpid()}"
    return {name: Host(name, i, str(workdir / name), f"{SUBNET}.{i}", MYSQL_PORT, 0, netns=f"{tag}-h{i}")
            for i, name in enumerate(NAMES, 1)}


def orch_config(workdir: Path, name: str) -> Dict[str, Any]:
    """``name``'s orch.yaml: conf/orch.yaml with this test's hosts and paths and the LAB_OVERRIDES
    for "chaos" (orchestrator.lab.hosts); writes the password files it names."""
    hosts = chaos_hosts(workdir)
    host = hosts[name]
    host.path.mkdir(parents=True, exist_ok=True)
    write_secret(host.file("mysql.pass"), mariadb.ORCH_CREDENTIALS.password)
    write_secret(host.file("repl.pass"), mariadb.REPL_CREDENTIALS.password)
    host.file("state").mkdir(mode=0o700, exist_ok=True)
    return lab_config(host, hosts[next(n for n in hosts if n != name)], "chaos", vip=VIP, witness=WITNESS, interface=IFACE)


# --------------------------------------------------------------------------- history

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) orch\[\d+\] (\w+) \S+ [\w.]+: (.*)$")
_NOISE_LINES = ("no atlas configured",)
# What says what a run decided and did; the rest (the SQL statements) is left out.
_KEY_LINE = re.compile(r"decision|maintain:|step \d+/\d+|skipped|waited|refus|incomplete|failed|act in|noop in|Traceback|Error")


def output_tail(text: str, lines: int, clock: Optional[Callable[[float], str]] = None) -> Tuple[str, ...]:
    """The lines of an orch run's output that say what it decided and did (at most ``lines``:
    the first decision and the last ones), without pid and run id. With ``clock``, each line
    starts with the time orch logged it (``clock`` turns a wall-clock time into text)."""
    kept = []
    for raw in text.splitlines():
        m = _LOG_LINE.match(raw)
        if m:
            when = ""
            if clock is not None:
                wall = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                when = clock(wall) + " "
            line = f"{when}{m.group(2)} {m.group(3)}".strip()
        else:
            line = raw.strip()
        if line and not any(n in line for n in _NOISE_LINES):
            kept.append(line)
    key = [line for line in kept if _KEY_LINE.search(line) or " INFO " not in f" {line} "]
    if kept and (not key or key[-1] != kept[-1]):
        key.append(kept[-1])
    if len(key) > lines:
        key = key[:1] + key[-(lines - 1):]
    return tuple(key)


@dataclass
class Event:
    t: float  # CLOCK_MONOTONIC
    source: str
    text: str
    detail: Tuple[str, ...] = ()
    kind: str = "event"  # "maintain": a periodic pass, collapsed when it repeats itself


class History:
    """Every event of the run, from any thread, with its CLOCK_MONOTONIC time."""

    def __init__(self) -> None:
        self._events: List[Event] = []
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        """Count times from now on."""
        self.t0 = time.monotonic()
        self.t0_wall = time.time()

    def add(self, source: str, text: str, detail: Tuple[str, ...] = (), kind: str = "event", at: Optional[float] = None) -> None:
        event = Event(time.monotonic() if at is None else at, source, text, tuple(detail), kind)
        with self._lock:
            self._events.append(event)

    def events(self) -> List[Event]:
        with self._lock:
            return sorted(self._events, key=lambda e: e.t)

    def rel(self, t: float) -> str:
        return f"+{t - self.t0:.2f}s"

    def rel_wall(self, wall: float) -> str:
        """A wall-clock time (an orch log line's) on the history's scale."""
        return f"+{wall - self.t0_wall:.2f}s"

    def render(self, collapse: bool = True) -> str:
        """One line per event (plus its detail lines). With ``collapse``, a maintainer pass
        that says exactly what the same host's previous pass said, with nothing else in
        between, only bumps that pass's count."""
        out: List[Tuple[Event, int, float]] = []
        last_pass: Dict[str, int] = {}  # source -> index in out
        for e in self.events():
            if collapse and e.kind == "maintain":
                i = last_pass.get(e.source)
                if i is not None and _same_pass(out[i][0], e):
                    out[i] = (out[i][0], out[i][1] + 1, e.t)
                    continue
                last_pass[e.source] = len(out)
            elif e.kind != "maintain":
                last_pass.clear()
            out.append((e, 1, e.t))
        lines = []
        for e, count, last in out:
            text = e.text
            if count > 1:
                text = f"{_pass_head(e)} x{count} until +{last - self.t0:.2f}s"
            lines.append(f"{e.t - self.t0:8.2f}s  {e.source:<28} {text}")
            lines += [f"{'':12}| {d}" for d in e.detail]
        return "\n".join(lines)


def _pass_head(e: Event) -> str:
    return e.text.split(" in ", 1)[0]


def _same_pass(a: Event, b: Event) -> bool:
    return _pass_head(a) == _pass_head(b) and a.detail == b.detail


# --------------------------------------------------------------------------- orch runs


@dataclass
class OrchRun:
    host: str
    args: Tuple[str, ...]
    code: Optional[int]  # None: hung (killed after ORCH_TIMEOUT)
    output: str
    started: float
    seconds: float


# --------------------------------------------------------------------------- the lab


class ChaosLab:
    """Two host namespaces with mariadbd, a client namespace and a bridge; the VIP; orch."""

    def __init__(self, workdir: Path, template: str) -> None:
        self.workdir = workdir
        self.template = template
        tag = f"{PREFIX}-{os.getpid()}"
        self.hosts = chaos_hosts(workdir)
        self.bridge_ns = f"{tag}-br"
        self.client_ns = f"{tag}-cl"
        self.namespaces = [self.bridge_ns, *(h.netns or "" for h in self.hosts.values()), self.client_ns]
        self.dbs = {name: h.db() for name, h in self.hosts.items()}
        self.configs: Dict[str, str] = {}
        self.app_password_file = workdir / "app.pass"
        self.orch = orch_bin()
        self.created: List[str] = []

    def peer_of(self, name: str) -> str:
        return next(n for n in self.hosts if n != name)

    def address(self, name: str) -> str:
        return self.hosts[name].backend

    # -- build ------------------------------------------------------------------

    def up(self) -> None:
        """Network, both servers (server1 writable master, server2 its semi-sync replica), configs, VIP on server1."""
        cleanup_stale()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._network()
        mariadb.start_together(self.dbs.values(), self.template)
        s1, s2 = self.dbs["server1"], self.dbs["server2"]
        s1.sql("SET GLOBAL read_only = 0")
        mariadb.start_replication(s2, s1)
        create_app_schema(s1)
        schema, table = HOLD_TABLE
        s1.sql(f"CREATE TABLE `{schema}`.`{table}` (id INT PRIMARY KEY, n BIGINT NOT NULL DEFAULT 0)")
        s1.sql(f"INSERT INTO `{schema}`.`{table}` VALUES (1, 0)")
        s1.sql(f"GRANT UPDATE ON `{schema}`.`{table}` TO %s@'%%'", (APP_CREDENTIALS.user,))
        mariadb.wait_gtid_equal(s1, s2)
        write_secret(self.app_password_file, APP_CREDENTIALS.password)
        for name in self.hosts:
            self._write_config(name)
        self.vip_add("server1")
        # The servers start with the wait off (my.cnf); orch's maintainer switches it on on the master.
        deadline = time.monotonic() + 15
        while not self.semisync_on("server1"):
            if time.monotonic() > deadline:
                raise AssertionError("server1's semi-synchronous replication did not turn on within 15 s "
                                     "(orch maintain --once on server1 should switch the wait on)")
            self.run_orch("server1", "maintain", "--once")
            time.sleep(0.05)

    def _network(self) -> None:
        for ns in self.namespaces:
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        br = self.bridge_ns
        run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", br, "link", "set", "br0", "up"])
        run(["ip", "-n", br, "addr", "add", f"{WITNESS}/{PREFIXLEN}", "dev", "br0"])
        ends = [(h.netns or "", f"vh{h.index}", h.address) for h in self.hosts.values()]
        ends.append((self.client_ns, "vcl", CLIENT_ADDRESS))
        for ns, port, address in ends:
            # Both ends are created inside our namespaces: nothing appears in the host's.
            run(["ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", IFACE, "netns", ns])
            run(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{address}/{PREFIXLEN}", "dev", IFACE])
            run(["ip", "-n", ns, "link", "set", IFACE, "up"])

    def _write_config(self, name: str) -> None:
        host = self.hosts[name]
        self.configs[name] = orchtest.write_config(host.file("orch.yaml"), orch_config(self.workdir, name))
        result = self.run_orch(name, "check-config")
        if result.code != 0:
            raise AssertionError(f"orch check-config on {name} failed (exit {result.code}): {result.output.strip()}")

    # -- teardown ------------------------------------------------------------------

    def down(self) -> List[str]:
        """Kill both servers (our PIDs), whatever still runs in our namespaces, delete the namespaces."""
        problems: List[str] = []
        for db in self.dbs.values():
            try:
                db.kill()  # SIGKILL also ends a SIGSTOPped server
            except Exception as exc:
                problems.append(f"{db.name}: {exc}")
        for ns in reversed(self.created):
            problems += remove_namespace(ns)
        self.created = []
        for db in self.dbs.values():
            shutil.rmtree(db.datadir, ignore_errors=True)
        return problems

    # -- the VIP ---------------------------------------------------------------------

    def vip_add(self, name: str) -> None:
        run(["ip", "-n", self.hosts[name].netns or "", "addr", "add", f"{VIP}/{PREFIXLEN}", "dev", IFACE])
        # keepalived's gratuitous ARP: the client must not keep sending to the old holder's MAC.
        run(["ip", "-n", self.client_ns, "neigh", "del", VIP, "dev", IFACE], check=False)

    def vip_del(self, name: str) -> None:
        run(["ip", "-n", self.hosts[name].netns or "", "addr", "del", f"{VIP}/{PREFIXLEN}", "dev", IFACE], check=False)

    def vip_holders(self) -> List[str]:
        return [n for n, h in self.hosts.items() if holds_address(h.netns or "", VIP)]

    # -- observation -------------------------------------------------------------------

    def servers(self) -> Dict[str, ServerState]:
        return {n: server_state(db) for n, db in self.dbs.items()}

    def status_value(self, name: str, variable: str) -> str:
        rows = self.dbs[name].sql("SHOW GLOBAL STATUS LIKE %s", (variable,))
        return str(rows[0]["Value"]) if rows else ""

    def semisync_on(self, name: str) -> bool:
        try:
            return self.status_value(name, "Rpl_semi_sync_master_status") == "ON"
        except pymysql.MySQLError:
            return False

    def gtids(self, name: str) -> Dict[str, str]:
        row = self.dbs[name].sql(
            "SELECT @@global.gtid_binlog_pos AS binlog_pos, @@global.gtid_current_pos AS current_pos, "
            "@@global.gtid_binlog_state AS binlog_state")[0]
        return {k: str(v or "") for k, v in row.items()}

    def describe(self) -> List[str]:
        lines = []
        holders = self.vip_holders()
        for name, st in self.servers().items():
            db = self.dbs[name]
            where = "paused" if db.pid and _paused(db.pid) else ("running" if db.is_running() else "not running")
            lines.append(f"{st.describe()}; mariadbd {where}" + ("; holds the VIP" if name in holders else ""))
            if st.up:
                try:
                    gtids = self.gtids(name)
                    lines.append(f"    semi-sync master {self.status_value(name, 'Rpl_semi_sync_master_status')}, "
                                 f"gtid_binlog_pos {gtids['binlog_pos']}, gtid_current_pos {gtids['current_pos']}")
                except pymysql.MySQLError as exc:
                    lines.append(f"    ({exc})")
        return lines

    def error_log_tail(self, name: str, lines: int = 6) -> Tuple[str, ...]:
        try:
            text = Path(self.dbs[name].log_file).read_text(errors="replace")
        except OSError:
            return ()
        return tuple(line for line in text.splitlines() if line.strip())[-lines:]

    # -- processes ---------------------------------------------------------------------

    def run_orch(self, name: str, *args: str, timeout: float = ORCH_TIMEOUT) -> OrchRun:
        """``orch -c <name's config> ARGS`` inside ``name``'s namespace; a run past ``timeout`` is killed (our PID)."""
        argv = ["ip", "netns", "exec", self.hosts[name].netns or "", self.orch, "-c", self.configs.get(name, ""), *args]
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            code: Optional[int] = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()  # `ip netns exec` execs orch in place: this is orch's PID
            output, _ = proc.communicate()
            code = None
        return OrchRun(name, tuple(args), code, output or "", started, time.monotonic() - started)

    def writer(self) -> Writer:
        return Writer(VIP, MYSQL_PORT, self.workdir, self.app_password_file, netns=self.client_ns, pause=0.005,
                      name="chaos-writer")


def _paused(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


# --------------------------------------------------------------------------- invariants


Sample = Tuple[float, Dict[str, Optional[int]]]  # (time, read_only of each server; None: no answer)


def both_writable_windows(samples: List[Sample], interval: float) -> List[Tuple[float, float, int]]:
    """(first, last, count) of every stretch in which both servers were seen writable.

    A stretch ends only at a sample that sees a server read-only: a server that does not
    answer (paused, killed, restarting) neither starts nor ends one. Its length is
    ``last - first + interval`` (the sampling period).
    """
    windows = []
    first = last = None
    count = 0
    for t, row in samples:
        values = list(row.values())
        if len(values) == 2 and all(v == 0 for v in values):
            if first is None:
                first, count = t, 0
            last = t
            count += 1
        elif any(v == 1 for v in values) and first is not None:
            windows.append((first, last, count))
            first = None
    if first is not None:
        windows.append((first, last, count))
    return [(a, b + interval, n) for a, b, n in windows]


# --------------------------------------------------------------------------- the chaos driver


@dataclass
class LongWrite:
    variant: str
    row_id: Optional[int]
    seconds: float
    acked: bool = False
    error: str = ""


@dataclass
class Stats:
    faults: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)
    skipped_gates: int = 0


class Chaos:
    """Plays keepalived and the faults; runs maintainer passes; records everything in ``history``.

    Randomness: the fault schedule (which fault, durations, event order and lateness) comes
    from ``random.Random(seed)`` in the main thread; the background noise (stale and
    duplicated events, extra passes) from ``random.Random(seed + 1)``. Timing still varies
    from run to run, so a seed reproduces the schedule, not every interleaving.
    """

    def __init__(self, lab: ChaosLab, history: History, seed: int) -> None:
        self.lab = lab
        self.h = history
        self.rng = random.Random(seed)
        self.noise_rng = random.Random(seed + 1)
        self.holder: Optional[str] = "server1"  # None while the VIP moves
        self.last_holder = "server1"
        self.state_lock = threading.Lock()
        self.failures: List[str] = []  # lab problems
        self._orch_failures: Dict[Tuple[str, str], List[str]] = {}  # (tag, what) -> runs
        self.long_writes: List[LongWrite] = []
        self.stats = Stats()
        self._runs: List[threading.Thread] = []
        self._runs_lock = threading.Lock()
        self._stop_noise = threading.Event()
        self._stop_passes = threading.Event()
        self._background: List[threading.Thread] = []
        self._next_long_id = 1

    # -- orch -----------------------------------------------------------------------

    def orch(self, name: str, *args: str, why: str = "", kind: str = "event") -> OrchRun:
        result = self.lab.run_orch(name, *args)
        label = " ".join(a for a in args if a not in ("INSTANCE", VRRP_INSTANCE) and a != PRIORITY.get(name))
        code = "HUNG (killed)" if result.code is None else f"exit {result.code}"
        ended = result.started + result.seconds
        text = f"{code} in {result.seconds:.2f}s (ended {self.h.rel(ended)})" + (f" [{why}]" if why else "")
        # A pass's lines carry no time, so that identical passes collapse in the report.
        detail = output_tail(result.output, 3) if kind == "maintain" else output_tail(result.output, 10, self.h.rel_wall)
        self.h.add(f"{name} orch {label}", text, detail, kind=kind, at=result.started)
        self.stats.exits[(label, result.code)] += 1
        if result.code is None:
            self._orch_failed("[orch hung]", f"did not finish within {ORCH_TIMEOUT:g}s", name, label, result.started)
        elif result.code in (2, 70) or result.code < 0:
            self._orch_failed("[orch crash]", f"exit {result.code}: " + " | ".join(output_tail(result.output, 6)),
                              name, label, result.started)
        return result

    def _orch_failed(self, tag: str, what: str, name: str, label: str, started: float) -> None:
        with self._runs_lock:
            self._orch_failures.setdefault((tag, what), []).append(f"orch {label} on {name} at {self.h.rel(started)}")

    def problems(self) -> List[str]:
        """Lab problems, and orch runs that crashed or hung (identical ones grouped)."""
        with self._runs_lock:
            grouped = [
                f"{tag} {len(runs)} run(s), {runs[0]}" + (f" ... {runs[-1]}" if len(runs) > 1 else "") + f": {what}"
                for (tag, what), runs in self._orch_failures.items()
            ]
        return self.failures + grouped

    def spawn(self, fn: Callable[[], Any], name: str) -> threading.Thread:
        thread = threading.Thread(target=fn, name=name, daemon=True)
        with self._runs_lock:  # started under the lock: the pruning below only drops finished runs
            self._runs = [t for t in self._runs if t.is_alive()]
            self._runs.append(thread)
            thread.start()
        return thread

    def notify(self, name: str, state: str, delay: float = 0.0, why: str = "") -> None:
        """keepalived's notify: fire and forget, after ``delay`` seconds."""
        def go() -> None:
            if delay > 0:
                time.sleep(delay)
            self.orch(name, "notify", "INSTANCE", VRRP_INSTANCE, state, PRIORITY[name], why=why)

        self.spawn(go, f"notify-{name}-{state}")

    def wait_runs(self, timeout: float) -> bool:
        """Wait for every notify and extra pass started so far; False if some still run."""
        deadline = time.monotonic() + timeout
        with self._runs_lock:
            runs = list(self._runs)
        for thread in runs:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in runs)

    # -- keepalived -------------------------------------------------------------------

    def move_vip(self, old: str, new: str, old_state: str, why: str) -> None:
        """keepalived on ``old`` gives the VIP up (BACKUP or FAULT), keepalived on ``new`` takes it (MASTER).

        Each host's event fires when its own keepalived changes state, possibly late and
        possibly twice; the order between the two hosts is random.
        """
        rng = self.rng
        late_old = rng.uniform(0.5, 2.5) if rng.random() < 0.2 else 0.0
        late_new = rng.uniform(0.5, 2.5) if rng.random() < 0.2 else 0.0
        dup_old = rng.uniform(0.1, 1.5) if rng.random() < 0.2 else None
        dup_new = rng.uniform(0.1, 1.5) if rng.random() < 0.2 else None
        gap = rng.uniform(0.0, 0.3)
        with self.state_lock:
            self.holder = None
        self.lab.vip_del(old)
        self.h.add("keepalived", f"{old} {old_state}: VIP {VIP} removed from {old} ({why})")
        self.notify(old, old_state, late_old, why=f"VIP left {old}" + (f", late by {late_old:.1f}s" if late_old else ""))
        if dup_old is not None:
            self.notify(old, old_state, late_old + dup_old, why="duplicate")
        time.sleep(gap)
        self.lab.vip_add(new)
        with self.state_lock:
            self.holder = self.last_holder = new
        self.h.add("keepalived", f"{new} MASTER: VIP {VIP} added to {new}")
        self.notify(new, "MASTER", late_new, why=f"VIP on {new}" + (f", late by {late_new:.1f}s" if late_new else ""))
        if dup_new is not None:
            self.notify(new, "MASTER", late_new + dup_new, why="duplicate")

    def keepalived_event(self, name: str, state: str, why: str) -> None:
        """A state change of one host's keepalived that does not move the VIP (FAULT, BACKUP)."""
        self.h.add("keepalived", f"{name} {state} ({why})")
        self.notify(name, state, why=why)
        if self.rng.random() < 0.2:
            self.notify(name, state, self.rng.uniform(0.1, 1.5), why="duplicate")

    # -- background: maintainer passes and noise -----------------------------------------

    def start_background(self) -> None:
        for name in self.lab.hosts:
            self._background.append(self._thread(lambda n=name: self._passes(n), f"passes-{name}"))
        self._background.append(self._thread(self._noise, "noise"))

    def _thread(self, fn: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=fn, name=name, daemon=True)
        thread.start()
        return thread

    def _passes(self, name: str) -> None:
        """`orch maintain --once` every maintainer.interval, like the daemon's schedule."""
        while not self._stop_passes.is_set():
            started = time.monotonic()
            self.orch(name, "maintain", "--once", kind="maintain")
            self._stop_passes.wait(max(0.0, MAINTAINER_INTERVAL - (time.monotonic() - started)))

    def _noise(self) -> None:
        """Events keepalived may deliver late or twice, stale ones included, and extra passes."""
        rng = self.noise_rng
        while not self._stop_noise.wait(rng.uniform(0.4, 1.6)):
            with self.state_lock:
                holder = self.holder or self.last_holder
            other = self.lab.peer_of(holder)
            r = rng.random()
            where = f"VIP on {self.holder or 'no host (moving)'} when fired"
            if r < 0.3:
                self.notify(other, "MASTER", why=f"noise: MASTER on the host without the VIP, {where}")
            elif r < 0.6:
                self.notify(holder, "BACKUP", why=f"noise: BACKUP on the VIP holder, {where}")
            elif r < 0.72:
                self.notify(holder, "MASTER", why=f"noise: MASTER repeated on the VIP holder, {where}")
            elif r < 0.84:
                self.notify(other, "BACKUP", why=f"noise: BACKUP repeated on the host without the VIP, {where}")
            elif r < 0.92:
                self.notify(other, "MASTER", why=f"noise: reversed pair, {where}")
                self.notify(holder, "BACKUP", why=f"noise: reversed pair, {where}")
            else:
                host = rng.choice(sorted(self.lab.hosts))
                self.spawn(lambda: self.orch(host, "maintain", "--once", why="noise: extra pass"), "extra-pass")

    def stop_noise(self) -> None:
        self._stop_noise.set()

    def stop_background(self) -> None:
        self._stop_noise.set()
        self._stop_passes.set()
        for thread in self._background:
            thread.join(ORCH_TIMEOUT + 5)

    # -- servers -------------------------------------------------------------------------

    def kill(self, name: str, why: str) -> None:
        db = self.lab.dbs[name]
        pid = db.pid
        db.kill()
        self.h.add("fault", f"kill -9 mariadbd on {name} (pid {pid}): {why}")

    def restart(self, name: str) -> None:
        started = time.monotonic()
        self.h.add("fault", f"starting mariadbd on {name} again")
        try:
            self.lab.dbs[name].start(timeout=60)
        except Exception as exc:
            self.failures.append(f"[lab] mariadbd on {name} did not start again: {exc}")
            raise
        self.h.add("fault", f"mariadbd on {name} accepts connections again (pid {self.lab.dbs[name].pid}, "
                            f"{time.monotonic() - started:.1f}s); read_only=ON from its my.cnf")

    def pause(self, name: str) -> None:
        self.lab.dbs[name].pause()
        self.h.add("fault", f"SIGSTOP mariadbd on {name} (pid {self.lab.dbs[name].pid})")

    def resume(self, name: str) -> None:
        self.lab.dbs[name].resume()
        self.h.add("fault", f"SIGCONT mariadbd on {name}")

    def sql(self, name: str, statement: str, why: str) -> None:
        try:
            self.lab.dbs[name].sql(statement)
            self.h.add("fault", f"{name}: {statement} ({why})")
        except pymysql.MySQLError as exc:
            self.h.add("fault", f"{name}: {statement} ({why}) failed: {exc.args[-1] if exc.args else exc}")

    # -- the gate between faults ----------------------------------------------------------

    def lossless(self) -> Tuple[bool, str]:
        """Whether a fault may hit the master now: it is writable with semi-sync on, and its
        peer replicates from it with both threads running (the peer has every acknowledged write)."""
        with self.state_lock:
            master = self.holder
        if master is None:
            return False, "the VIP is moving"
        replica = self.lab.peer_of(master)
        states = self.lab.servers()
        m, r = states[master], states[replica]
        if not m.up or m.read_only:
            return False, f"the VIP holder is not a writable master: {m.describe()}"
        if not r.up or not r.read_only or not r.replicating or r.source != self.lab.address(master):
            return False, f"{replica} is not a running read-only replica of {master}: {r.describe()}"
        if not self.lab.semisync_on(master):
            return False, f"{master}'s semi-synchronous replication is off (its replica has not caught up)"
        return True, f"{master} writable with semi-sync on, {replica} replicating"

    def wait_lossless(self, timeout: float) -> Tuple[bool, str]:
        deadline = time.monotonic() + timeout
        while True:
            ok, why = self.lossless()
            if ok or time.monotonic() > deadline:
                return ok, why
            time.sleep(0.2)

    # -- the schedule ----------------------------------------------------------------------

    def run(self, seconds: float, gate_timeout: float = 8.0) -> None:
        """Faults one after another until ``seconds`` have passed; every fault is healed before the next."""
        deadline = time.monotonic() + seconds
        number = 0
        while time.monotonic() < deadline - 1.5:
            number += 1
            ok, why = self.wait_lossless(min(gate_timeout, max(0.0, deadline - time.monotonic())))
            if not ok:
                self.stats.skipped_gates += 1
                self.h.add("chaos", f"round {number}: not safe for a fault on the master ({why}); "
                                    f"only faults on the replica or events this round")
            fault = self.pick(ok)
            self.stats.faults[fault.__name__] += 1
            fault(number)
            time.sleep(self.rng.uniform(0.3, 1.2))

    def pick(self, master_faults: bool) -> Callable[[int], None]:
        choices: List[Tuple[Callable[[int], None], float]] = [
            (self.kill_replica, 1.5), (self.pause_replica, 1.5), (self.pause_master_briefly, 1.0),
            (self.event_storm, 0.5),
        ]
        if master_faults:
            choices += [(self.kill_master, 2.0), (self.switchover, 2.0), (self.stop_replication, 2.0),
                        (self.long_write, 2.0)]
        faults, weights = zip(*choices)
        return self.rng.choices(faults, weights)[0]

    def _roles(self) -> Tuple[str, str]:
        with self.state_lock:
            master = self.holder or self.last_holder
        return master, self.lab.peer_of(master)

    @staticmethod
    def _sleep_until(t: float) -> None:
        time.sleep(max(0.0, t - time.monotonic()))

    # -- faults ------------------------------------------------------------------------------

    def kill_master(self, number: int) -> None:
        """kill -9 the master's mariadbd; keepalived moves the VIP (FAULT there, MASTER on the peer); restart later."""
        master, replica = self._roles()
        detect = self.rng.uniform(1.0, 2.0)
        down = self.rng.uniform(max(detect + 0.5, 2.0), 6.0)
        rise = self.rng.uniform(1.0, 2.0)
        self.h.add("chaos", f"round {number}: kill the master {master}; keepalived notices after {detect:.1f}s, "
                            f"restart after {down:.1f}s, check passes {rise:.1f}s later")
        t0 = time.monotonic()
        self.kill(master, "the master")
        self._sleep_until(t0 + detect)
        self.move_vip(master, replica, "FAULT", f"check on {master} fails: mariadbd is dead")
        self._sleep_until(t0 + down)
        self.restart(master)
        time.sleep(rise)
        self.keepalived_event(master, "BACKUP", f"check on {master} passes again; nopreempt keeps the VIP on {replica}")

    def kill_replica(self, number: int) -> None:
        master, replica = self._roles()
        detect = self.rng.uniform(1.0, 2.0)
        down = self.rng.uniform(max(detect + 0.3, 1.0), 6.0)
        rise = self.rng.uniform(1.0, 2.0)
        self.h.add("chaos", f"round {number}: kill the replica {replica}; restart after {down:.1f}s")
        t0 = time.monotonic()
        self.kill(replica, "the replica")
        self._sleep_until(t0 + detect)
        self.keepalived_event(replica, "FAULT", f"check on {replica} fails: mariadbd is dead")
        self._sleep_until(t0 + down)
        self.restart(replica)
        time.sleep(rise)
        self.keepalived_event(replica, "BACKUP", f"check on {replica} passes again")

    def _pause_for(self, name: str, seconds: float, rise: float) -> None:
        """SIGSTOP ``name`` for ``seconds``; keepalived calls it FAULT if that is long enough, BACKUP once it answers again."""
        t0 = time.monotonic()
        self.pause(name)
        faulted = False
        try:
            if seconds > PAUSE_DETECT:
                self._sleep_until(t0 + PAUSE_DETECT)
                self.keepalived_event(name, "FAULT", f"check on {name} times out: mariadbd does not answer")
                faulted = True
            self._sleep_until(t0 + seconds)
        finally:
            self.resume(name)
        if faulted:
            time.sleep(rise)
            self.keepalived_event(name, "BACKUP", f"check on {name} passes again")

    def pause_replica(self, number: int) -> None:
        master, replica = self._roles()
        seconds = self.rng.uniform(1.0, 6.0)
        rise = self.rng.uniform(1.0, 2.0)
        self.h.add("chaos", f"round {number}: SIGSTOP the replica {replica} for {seconds:.1f}s")
        self._pause_for(replica, seconds, rise)

    def pause_master_briefly(self, number: int) -> None:
        """Shorter than keepalived's detection: the VIP stays, writes stall, nothing may change roles."""
        master, _ = self._roles()
        seconds = self.rng.uniform(1.0, PAUSE_DETECT - 0.2)
        self.h.add("chaos", f"round {number}: SIGSTOP the master {master} for {seconds:.1f}s "
                            f"(below keepalived's detection: the VIP stays)")
        self._pause_for(master, seconds, 0.0)

    def stop_replication(self, number: int) -> None:
        """STOP SLAVE [IO_THREAD|SQL_THREAD] on the replica; sometimes a switchover to it meanwhile; START SLAVE after."""
        master, replica = self._roles()
        statement = self.rng.choice(["STOP SLAVE", "STOP SLAVE IO_THREAD", "STOP SLAVE SQL_THREAD"])
        seconds = self.rng.uniform(1.0, 6.0)
        switch_at = self.rng.uniform(0.3, max(0.4, seconds - 0.3)) if self.rng.random() < 0.4 else None
        self.h.add("chaos", f"round {number}: {statement} on the replica {replica} for {seconds:.1f}s"
                            + (f", switchover to it after {switch_at:.1f}s" if switch_at is not None else ""))
        t0 = time.monotonic()
        self.sql(replica, statement, "fault")
        if switch_at is not None:
            self._sleep_until(t0 + switch_at)
            self.move_vip(master, replica, "BACKUP", f"planned switchover: keepalived restarted on {master}")
        self._sleep_until(t0 + seconds)
        with self.state_lock:
            holder = self.holder
        if holder == replica:
            self.h.add("fault", f"{replica} holds the VIP now: its replication is orch's business, not restarted by the test")
        else:
            self.sql(replica, "START SLAVE", "heal")

    def long_write(self, number: int) -> None:
        """A multi-second write on the master through the VIP; sometimes a switchover meanwhile."""
        master, replica = self._roles()
        variant = self.rng.choice(["INSERT ... SELECT SLEEP", "transaction with SLEEP before COMMIT", "UPDATE ... AND SLEEP"])
        seconds = self.rng.uniform(1.0, 6.0)
        switch_at = self.rng.uniform(0.3, max(0.4, seconds - 0.2)) if self.rng.random() < 0.5 else None
        row_id = None if variant.startswith("UPDATE") else self._next_long_id
        if row_id is not None:
            self._next_long_id += 1
        write = LongWrite(variant, row_id, seconds)
        self.long_writes.append(write)
        self.h.add("chaos", f"round {number}: long write on the master {master} through the VIP: {variant}, "
                            f"{seconds:.1f}s" + (f" (id {row_id})" if row_id is not None else "")
                            + (f", switchover to {replica} after {switch_at:.1f}s" if switch_at is not None else ""))
        t0 = time.monotonic()
        thread = self._thread(lambda: self._long_write(write), "long-write")
        if switch_at is not None:
            self._sleep_until(t0 + switch_at)
            self.move_vip(master, replica, "BACKUP", f"planned switchover: keepalived restarted on {master}")
        thread.join(seconds + 10)
        if thread.is_alive():
            self.failures.append(f"[lab] the long write of round {number} still runs {seconds + 10:.0f}s later")

    def _long_write(self, write: LongWrite) -> None:
        schema, table = HOLD_TABLE
        started = time.monotonic()

        def go() -> None:
            conn = pymysql.connect(host=VIP, port=MYSQL_PORT, user=APP_CREDENTIALS.user, password=APP_CREDENTIALS.password,
                                   autocommit=True, connect_timeout=1, read_timeout=write.seconds + 4, write_timeout=2)
            with closing(conn), conn.cursor() as cur:
                if write.variant.startswith("INSERT"):
                    cur.execute("INSERT INTO test.drill (id) SELECT %s FROM DUAL WHERE SLEEP(%s) = 0", (write.row_id, write.seconds))
                elif write.variant.startswith("transaction"):
                    cur.execute("BEGIN")
                    cur.execute("INSERT INTO test.drill (id) VALUES (%s)", (write.row_id,))
                    cur.execute("SELECT SLEEP(%s)", (write.seconds,))
                    cur.execute("COMMIT")
                else:
                    cur.execute(f"UPDATE `{schema}`.`{table}` SET n = n + 1 WHERE id = 1 AND SLEEP(%s) = 0", (write.seconds,))

        try:
            in_netns(self.lab.client_ns, go, write.seconds + 8)
            write.acked = True
            self.h.add("writer", f"long write ({write.variant}) acknowledged after {time.monotonic() - started:.2f}s",
                       at=time.monotonic())
        except Exception as exc:
            write.error = str(exc.args[-1] if getattr(exc, "args", None) else exc)
            self.h.add("writer", f"long write ({write.variant}) failed after {time.monotonic() - started:.2f}s "
                                 f"(unacknowledged): {write.error}")

    def switchover(self, number: int) -> None:
        """A planned switchover (keepalived restarted on the master); the old master sometimes dies or hangs right after."""
        master, replica = self._roles()
        variant = self.rng.choice(["plain", "plain", "old master paused", "old master killed"])
        after = self.rng.uniform(0.3, 1.0)
        seconds = self.rng.uniform(1.0, 6.0)
        rise = self.rng.uniform(1.0, 2.0)
        self.h.add("chaos", f"round {number}: switchover {master} -> {replica} ({variant}"
                            + (f" {after:.1f}s after the VIP left it, for {seconds:.1f}s" if variant != "plain" else "") + ")")
        self.move_vip(master, replica, "BACKUP", f"planned switchover: keepalived restarted on {master}")
        if variant == "plain":
            time.sleep(self.rng.uniform(1.0, 3.0))
            return
        time.sleep(after)
        if variant == "old master paused":
            self._pause_for(master, seconds, rise)
            return
        t0 = time.monotonic()
        self.kill(master, "the old master, during the switchover")
        detect = min(seconds, self.rng.uniform(1.0, 2.0))
        self._sleep_until(t0 + detect)
        self.keepalived_event(master, "FAULT", f"check on {master} fails: mariadbd is dead")
        self._sleep_until(t0 + seconds)
        self.restart(master)
        time.sleep(rise)
        self.keepalived_event(master, "BACKUP", f"check on {master} passes again")

    def event_storm(self, number: int) -> None:
        """Several events on both hosts at once, most of them stale."""
        master, replica = self._roles()
        events = [(self.rng.choice([master, replica]), self.rng.choice(["MASTER", "BACKUP"])) for _ in range(self.rng.randint(3, 6))]
        self.h.add("chaos", f"round {number}: event storm, VIP on {master}: " + ", ".join(f"{s} on {n}" for n, s in events))
        for name, state in events:
            self.notify(name, state, self.rng.uniform(0.0, 0.3), why="storm")
        time.sleep(self.rng.uniform(1.0, 2.0))
