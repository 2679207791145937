"""What both local labs share: their daemons, the state file and the "healed" check.

Each lab host runs mariadbd, an Atlas stand-in and ``orch maintain`` with its own orch
config and state dir. Everything a later process needs (``orch lab status``/``failover``/
``down``) is recorded in ``<lab dir>/lab.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

from orchestrator.errors import OrchError
from orchestrator.lab import LabError
from orchestrator.lab.hosts import LAB_OVERRIDES, Host, Override, shipped_config
from orchestrator.lab.probes import Sampler, ServerState, gtids_beyond, row_ids, server_state
from orchestrator.lab.proc import Proc, orch_bin, spawn, tail, wait_for
from orchestrator.lab.traffic import Writer

if TYPE_CHECKING:
    from orchestrator.lab.report import Recording

log = logging.getLogger(__name__)

STATE_FILE = "lab.json"


@functools.lru_cache(maxsize=None)
def _shipped_semi_sync() -> bool:
    return bool(shipped_config()["failover"]["semi_sync"])


class Lab:
    """Common part of the two labs. Subclasses: ``NetnsLab`` and ``LoopbackLab``."""

    mode = ""
    # Its departures from conf/orch.yaml (hosts.lab_config applies those whose labs include
    # ``mode``); a subclass that takes others sets its own.
    overrides: Mapping[str, Override] = LAB_OVERRIDES

    def __init__(self, workdir: str, hosts: List[Host], lab_id: str, persistent: bool = False) -> None:
        self.workdir = Path(workdir).absolute()
        self.hosts = {h.name: h for h in hosts}
        self.lab_id = lab_id
        self.persistent = persistent
        self.procs: Dict[str, Proc] = {}
        self.owner = os.getpid()
        self.dbs = {h.name: h.db() for h in hosts}
        self.progress: Callable[[str], None] = lambda text: log.info("%s", text)
        self.recording: Optional["Recording"] = None  # what the last failover() saw, for its timeline page

    # -- state file ---------------------------------------------------------------

    def state(self) -> Dict[str, Any]:
        return {
            "mode": self.mode, "id": self.lab_id, "persistent": self.persistent, "owner": self.owner,
            "workdir": str(self.workdir), "hosts": [asdict(h) for h in self.hosts.values()],
            "procs": {k: asdict(p) for k, p in self.procs.items()},
            "mariadbd": {n: asdict(p) for n, p in ((n, Proc.of(db.pid)) for n, db in self.dbs.items() if db.pid) if p},
            **self.extra_state(),
        }

    def extra_state(self) -> Dict[str, Any]:
        return {}

    def save(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.workdir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
        tmp.replace(self.workdir / STATE_FILE)

    def adopt(self, state: Dict[str, Any]) -> None:
        """Take over the processes a previous process recorded."""
        self.owner = state.get("owner", self.owner)
        self.procs = {k: Proc(**v) for k, v in state.get("procs", {}).items()}
        for name, p in state.get("mariadbd", {}).items():
            proc = Proc(**p)
            if name in self.dbs and proc.alive():
                self.dbs[name].pid = proc.pid

    # -- daemons shared by both modes ---------------------------------------------

    def start_atlas(self, host: Host) -> None:
        argv = [sys.executable, "-m", "orchestrator.lab.atlas_standin.standin", "--config", str(host.file("atlas.cnf"))]
        self.procs[f"{host.name}.atlas"] = spawn(argv, host.file("atlas.log"), host.file("atlas.pid"), host.netns)
        self.save()
        wait_for(f"Atlas stand-in on {host.name}", lambda: self.atlas_backends(host) is not None, 10,
                 detail=lambda: tail(host.file("atlas.log"), 3))

    def start_maintainer(self, host: Host) -> None:
        argv = [orch_bin(), "-c", str(host.file("orch.yaml")), "maintain"]
        self.procs[f"{host.name}.maintain"] = spawn(argv, host.file("maintain.log"), host.file("maintain.pid"), host.netns)
        self.save()

    def start_mysqld(self, name: str) -> None:
        db = self.dbs[name]
        db.start()
        self.save()

    def kill_mysqld(self, name: str) -> int:
        db = self.dbs[name]
        pid = db.pid or 0
        db.kill()
        return pid

    def stop_processes(self, prefixes: Sequence[str] = ("",)) -> None:
        """Stop recorded daemons (keepalived first: its STOP events must not start orch runs)."""
        order = sorted(self.procs, key=lambda k: (not k.endswith(".keepalived"), k))
        for key in order:
            if any(key.startswith(p) for p in prefixes):
                proc = self.procs[key]
                proc.stop(5, signal.SIGKILL if key.endswith(".keepalived") else signal.SIGTERM)
        for db in self.dbs.values():
            try:
                db.kill()
            except OrchError as exc:
                log.warning("%s", exc)

    # -- what subclasses provide ---------------------------------------------------

    def up(self, timeout: float = 60) -> None:
        """Build everything; on any failure, tear down what was built and re-raise."""
        started = time.monotonic()
        try:
            self._up(timeout)
        except BaseException:
            self.down()
            raise
        self.progress(f"lab ready in {time.monotonic() - started:.1f}s")

    def _up(self, timeout: float) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def failover(self, out: Any, timeout: float = 30) -> bool:
        """Kill the master's mysqld and narrate the failover; whether it ended healthy."""
        raise NotImplementedError

    def atlas_backends(self, host: Host) -> Optional[List[Tuple[int, str, str, str]]]:
        """(ndx, address, state, type) of every backend in this host's Atlas; None if unreachable."""
        raise NotImplementedError

    def vip_holders(self) -> List[str]:
        """Hosts holding the VIP; the loopback lab has none and answers with the writable ones."""
        raise NotImplementedError

    def writer(self, name: str = "writer", pause: float = 0.002, select: bool = False, connect_timeout: float = 0.25) -> Writer:
        raise NotImplementedError

    # -- common observation ------------------------------------------------------

    def servers(self) -> Dict[str, ServerState]:
        return {n: server_state(db) for n, db in self.dbs.items()}

    def peer_of(self, name: str) -> str:
        return next(n for n in self.hosts if n != name)

    def master(self) -> Optional[str]:
        """The host clients write to now (the VIP holder), if exactly one."""
        holders = self.vip_holders()
        return holders[0] if len(holders) == 1 else None

    def semisync_on(self, name: str) -> bool:
        """Whether ``name``'s semi-sync master is on: only then is a failover lossless."""
        rows = self.dbs[name].sql("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
        return bool(rows) and rows[0]["Value"] == "ON"

    def expects_semisync(self) -> bool:
        """Whether this lab's orch.yaml has failover.semi_sync on (as shipped, unless a test opted out)."""
        override = self.overrides.get("failover.semi_sync")
        return bool(override.value) if override is not None and self.mode in override.labs else _shipped_semi_sync()

    def daemon_problems(self) -> List[str]:
        return [f"{key} (pid {p.pid}) is not running" for key, p in sorted(self.procs.items()) if not p.alive()]

    def health(self, acked: Iterable[int] = (), sampler: Optional[Sampler] = None) -> List[str]:
        """Every property of a healed cluster that does not hold now, one line each, named."""
        problems: List[str] = []
        if sampler is not None:
            both = sampler.both_writable()
            if both:
                t0 = sampler.samples[0][0]
                problems.append(f"[two writers] both servers had read_only=0 in {len(both)} of {len(sampler.samples)} samples, "
                                f"first at +{both[0][0] - t0:.2f}s")
        holders = self.vip_holders()
        if len(holders) != 1:
            problems.append(f"[vip] VIP held by {', '.join(holders) or 'no host'}")
            return problems + self.daemon_problems()
        master = holders[0]
        replica = self.peer_of(master)
        states = self.servers()
        m, r = states[master], states[replica]
        if not m.up or m.read_only:
            problems.append(f"[master] {master} holds the VIP but is not a writable server: {m.describe()}")
        if not r.up:
            problems.append(f"[rejoin] {replica} is not back: {r.describe()}")
        else:
            host = self.hosts[master]
            if not r.read_only or not r.replicating or r.source != host.backend:
                problems.append(f"[rejoin] {replica} is not a read-only replica of {master} ({host.backend}): {r.describe()}")
                extra = gtids_beyond(r.gtid_binlog_state, m.gtid_binlog_state) if m.up else []
                if extra:
                    only = row_ids(self.dbs[replica]) - row_ids(self.dbs[master])
                    acked_only = only & set(acked)
                    problems.append(f"[rejoin] {replica} has transactions {master} never got ({', '.join(extra)}): errant GTIDs, so orch "
                                    f"rightly refuses to replicate; {len(only)} row(s) exist only on {replica}, "
                                    f"{len(acked_only)} of them acknowledged to the writer")
        if m.up and not m.read_only and self.expects_semisync() and not self.semisync_on(master):
            problems.append(f"[semisync] {master}'s semi-sync wait is off: the maintainer has not switched it back on")
        # As sets: MariaDB lists gtid_binlog_state in no fixed order (a rewind's SET GLOBAL
        # gtid_binlog_state can give '0-1-9,0-2-8' where the peer says '0-2-8,0-1-9').
        if m.up and r.up and gtid_entries(m.gtid_binlog_state) != gtid_entries(r.gtid_binlog_state):
            problems.append(f"[gtid] GTID sets differ: {master} {m.gtid_binlog_state!r}, {replica} {r.gtid_binlog_state!r}")
        acked = set(acked)
        # Only against a writable master: a read-only VIP holder may still be replicating
        # what its peer acknowledged before it opens (orch's "follow the peer that is ahead").
        if acked and m.up and not m.read_only:
            missing = acked - row_ids(self.dbs[master])
            elsewhere = missing & row_ids(self.dbs[replica]) if missing and r.up else set()
            lost = missing - elsewhere
            if lost:
                problems.append(f"[acked rows] {len(lost)} of {len(acked)} acknowledged rows are missing on the master {master}"
                                f"{'' if r.up else f' ({replica} is down)'}: {sorted(lost)[:5]}")
            elif elsewhere:
                # Not lost: the writable master is a stale writer that has yet to yield to the
                # newer history (orch's STALE rule, within one maintainer interval).
                problems.append(f"[newer history] {len(elsewhere)} acknowledged rows are on {replica}, not on the writable "
                                f"{master}: {master} must yield to it")
        for host in self.hosts.values():
            backends = self.atlas_backends(host)
            if backends is None:
                problems.append(f"[atlas] Atlas on {host.name} does not answer")
                continue
            ro = {b[1] for b in backends if b[3] == "ro"}
            if self.hosts[replica].backend not in ro:
                problems.append(f"[atlas] Atlas on {host.name} lacks the replica {replica} ({self.hosts[replica].backend}) "
                                f"as read-only backend: {backends}")
            if self.hosts[master].backend in ro:
                problems.append(f"[atlas] Atlas on {host.name} still lists the master {master} as read-only backend")
        return problems + self.daemon_problems()

    def wait_healthy(self, timeout: float = 30, acked: Iterable[int] = (), sampler: Optional[Sampler] = None) -> float:
        """Wait until :meth:`health` finds nothing wrong; LabError listing what is still wrong."""
        acked = list(acked)
        started = time.monotonic()
        deadline = started + timeout
        while True:
            problems = self.health(acked, sampler)
            if not problems:
                return time.monotonic() - started
            # A second writer or a lost row never heals by waiting.
            fatal = [p for p in problems if p.startswith(("[two writers]", "[acked rows]"))]
            if fatal or time.monotonic() > deadline:
                raise LabError(f"not healed after {time.monotonic() - started:.1f}s:\n  " + "\n  ".join(problems) + self.logs_hint())
            time.sleep(0.2)

    def logs_hint(self) -> str:
        lines = []
        for h in self.hosts.values():
            lines.append(f"\n--- {h.name} notify.log: {tail(h.file('notify.log'), 12)}")
            lines.append(f"\n--- {h.name} maintain.log: {tail(h.file('maintain.log'), 4)}")
        return "".join(lines)

    # -- status -------------------------------------------------------------------

    def status_lines(self) -> List[str]:
        lines = [f"lab {self.lab_id} ({self.mode}) in {self.workdir}"]
        holders = self.vip_holders()
        for name, st in self.servers().items():
            host = self.hosts[name]
            where = f"{host.backend}" + (f" in netns {host.netns}" if host.netns else "")
            tags = []
            if name in holders and self.mode == "netns":
                tags.append("holds VIP")
            tags += self.host_tags(host)
            lines.append(f"  {st.describe()}")
            lines.append(f"      at {where}" + (f"; {', '.join(tags)}" if tags else ""))
            backends = self.atlas_backends(host)
            shown = "not answering" if backends is None else ", ".join(f"{b[1]} {b[3]} {b[2]}" for b in backends) or "(none)"
            lines.append(f"      Atlas on {name} ({host.atlas_host}:{host.atlas_port}): {shown}")
        for problem in self.daemon_problems():
            lines.append(f"  problem: {problem}")
        return lines

    def host_tags(self, host: Host) -> List[str]:
        return []


class Narrator:
    """Prints '+1.23s  what happened' lines, timed from the fault."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.t0 = time.monotonic()

    def start(self) -> float:
        self.t0 = time.monotonic()
        return self.t0

    def say(self, text: str, at: Optional[float] = None) -> None:
        at = time.monotonic() if at is None else at
        self.out.write(f"  {at - self.t0:+6.2f}s  {text}\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.out.write(f"           {text}\n")
        self.out.flush()


def gtid_entries(state: str) -> FrozenSet[str]:
    """A gtid_binlog_state as the set of its domain-server-sequence entries (order and blanks ignored)."""
    return frozenset(e.strip() for e in state.replace("\n", ",").split(",") if e.strip())


def orch_outcomes(log: Path, offset: int) -> List[str]:
    """orch's decision and result lines logged after ``offset``, without the log prefix."""
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        m = re.search(r"orchestrator: (decision \(.*|\w+ (act|noop|refused|incomplete|failed) in \d+ ms.*|waited .*)$", line)
        if m:
            out.append(line[11:23] + " " + m.group(1))
    return out


def who_promoted(host: "Host") -> str:
    """Which orch run last opened this host's server for writes, from its journal."""
    from orchestrator.journal import Journal

    # The begin record: when the server turns writable the run may not have ended yet.
    for record in reversed(Journal(str(host.file("state"))).tail(50)):
        if record.get("phase") == "begin" and any("writable (read_only off)" in step for step in record.get("plan") or []):
            if record.get("by") == "maintain":
                return f"orch maintain (the VIP holder must be the writable master; it ran the {record.get('event')} plan first)"
            return f"orch notify {record.get('event')}"
    return "orch"


def who_repointed(host: "Host") -> str:
    """Which orch run last pointed this host's server at its peer, from its journal."""
    from orchestrator.journal import Journal

    for record in reversed(Journal(str(host.file("state"))).tail(50)):
        steps = record.get("steps") or []
        if record.get("phase") == "end" and any(s.get("step") == "ChangeSource" and s.get("result") == "ok" for s in steps):
            if record.get("event") == "REJOIN":
                return "orch maintain pointed it there, completing a rejoin its BACKUP event could not finish yet"
            return f"orch notify {record.get('event')} pointed it there"
    return "it already replicated from there"
