"""What both local labs share: files, daemons, client traffic and the "healed" check.

A lab is two hosts, ``server1`` and ``server2``, each running mariadbd, an Atlas
stand-in and ``orch maintain`` with its own orch config and state dir. ``netns.py``
puts each host in a network namespace with keepalived; ``loopback.py`` runs both on
127.0.0.1 and delivers keepalived's events itself. Everything a later process needs
(``orch lab status``/``failover``/``down``) is recorded in ``<lab dir>/lab.json``.

Daemons are started detached with ``setsid -f`` and remembered by PID *and* start
time, so a PID reused by an unrelated process is never signalled.

``python -m orchestrator.lab.sandbox writer ...`` is the client the drills, the
benchmark and ``orch lab failover`` run: it inserts numbered rows and appends each
acknowledged id with its CLOCK_MONOTONIC time to a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from orchestrator.errors import CommandError, OrchError
from orchestrator.lab import mariadb

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
HOOKS_DIR = REPO / "hooks"
CONF_DIR = REPO / "conf"
NAMES = ("server1", "server2")
CLUSTER = "orchlab"
VRRP_INSTANCE = "VI_1"
ATLAS_ADMIN = mariadb.Credentials("admin", "atlas-admin-pw")  # lab-only dummy credentials
# The application's account. It must not hold READ ONLY ADMIN (GRANT ALL includes it in
# MariaDB >= 10.11): read_only does not stop such an account, so the orch account, which
# has ALL, wrote into a fenced replica through the VIP when the drills used it.
APP_CREDENTIALS = mariadb.Credentials("app", "app-secret-pw")
DRILL_TABLE = ("test", "drill")
STATE_FILE = "lab.json"
POLL = 0.02

# Lossless semi-synchronous replication on both servers. A commit is acknowledged to the
# client only once the replica has it in its relay log (AFTER_SYNC), so a failover that
# applies the relay log loses no acknowledged row; with plain asynchronous replication a
# kill -9 of the master lost acknowledged rows in the lab. init_rpl_role=SLAVE makes a
# crashed server drop, during crash recovery, the binlog tail no replica acknowledged
# (MariaDB >= 10.6.19/10.11.9), so an old master does not come back with errant GTIDs.
# With no replica connected the master does not wait (wait_no_slave off).
SEMISYNC = {
    "rpl_semi_sync_master_enabled": "ON",
    "rpl_semi_sync_slave_enabled": "ON",
    "rpl_semi_sync_master_wait_point": "AFTER_SYNC",
    "rpl_semi_sync_master_wait_no_slave": "OFF",
    "rpl_semi_sync_master_timeout": "2000",
    "init_rpl_role": "SLAVE",
}


class LabError(OrchError):
    """The lab could not be built, or is not in the state a caller waited for."""


# --------------------------------------------------------------------------- commands


def run(argv: Sequence[str], timeout: float = 20, check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a command (argv list, never a shell string); CommandError with its output on failure."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CommandError(f"{' '.join(argv)}: timed out after {timeout:g}s") from None
    except OSError as exc:
        raise CommandError(f"{' '.join(argv)}: {exc.strerror}") from None
    if check and proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip().replace("\n", " | ")
        raise CommandError(f"{' '.join(argv)}: exit code {proc.returncode}: {output}")
    return proc


def orch_bin() -> str:
    """$ORCH_LAB_ORCH, else the `orch` next to this interpreter (the venv), else the one on PATH."""
    chosen = os.environ.get("ORCH_LAB_ORCH")
    if chosen:
        return chosen
    beside = Path(sys.executable).parent / "orch"
    if beside.exists():
        return str(beside)
    found = shutil.which("orch")
    if not found:
        raise LabError("cannot find the orch command next to the Python running the lab, nor on PATH")
    return found


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Proc:
    """A process we started: its PID and kernel start time (tells it from a reused PID)."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Optional["Proc"]:
        start = _start_time(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start

    def send(self, signum: int) -> bool:
        """Signal it if it is still ours; False when it is gone."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 5.0, signum: int = signal.SIGTERM) -> None:
        """``signum``, wait up to ``timeout``, then SIGKILL and wait again."""
        if self.send(signum) and not self.wait_exit(timeout):
            self.send(signal.SIGKILL)
            if not self.wait_exit(5):
                raise LabError(f"pid {self.pid} survived SIGKILL")

    def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)
        return True


def _start_time(pid: int) -> Optional[int]:
    """Field 22 of /proc/PID/stat, or None if the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


# The wrapper records its own PID, then execs the daemon: the PID stays the daemon's.
_PIDFILE_WRAPPER = 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"'


def spawn(argv: Sequence[str], log_path: Path, pid_path: Path, netns: Optional[str] = None, timeout: float = 10) -> Proc:
    """Start a daemon detached (``setsid -f``), optionally inside ``netns``; return it once it runs."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    full = ["setsid", "-f", *prefix, "sh", "-c", _PIDFILE_WRAPPER, str(pid_path), *argv]
    pid_path.unlink(missing_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.run(full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(full)}: exit code {proc.returncode} (see {log_path})")
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid = int(pid_path.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        started = Proc.of(pid) if pid else None
        if started is not None:
            return started
        if time.monotonic() > deadline:
            raise LabError(f"{argv[0]} did not start within {timeout:g}s: {tail(log_path)}")
        time.sleep(POLL)


def tail(path: Path, lines: int = 8, since: int = 0) -> str:
    """The last lines of a log file (from byte ``since``), joined with ' | '."""
    try:
        with open(path, "rb") as fh:
            fh.seek(since)
            text = fh.read().decode(errors="replace")
    except OSError:
        return f"(no {path})"
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or f"(nothing in {path})"


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.05, detail: Optional[Callable[[], str]] = None) -> Any:
    """Poll ``predicate`` until it returns something true; LabError naming ``what`` on timeout.

    A LabError raised by the predicate stops the wait at once (it knows waiting is futile).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except LabError:
            raise
        except Exception as exc:  # a server or Atlas restarting: keep polling until the deadline
            value, last = None, exc
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            why = detail() if detail is not None else (f"last error: {last}" if last else "")
            raise LabError(f"timed out after {timeout:g}s waiting for {what}" + (f": {why}" if why else ""))
        time.sleep(interval)


# --------------------------------------------------------------------------- hosts


@dataclass
class Host:
    """One lab host: where its server listens and where its files live."""

    name: str
    index: int
    dir: str
    address: str
    port: int
    atlas_port: int
    netns: Optional[str] = None
    atlas_host: str = "127.0.0.1"

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def backend(self) -> str:
        """This server as Atlas lists it."""
        return f"{self.address}:{self.port}"

    def file(self, name: str) -> Path:
        return self.path / name

    def db(self) -> mariadb.MariaDBInstance:
        # read_only in my.cnf: a server that restarts comes back fenced; orch decides who writes.
        options = {"read_only": "ON", "slave_net_timeout": "5", **SEMISYNC}
        if self.netns:
            options["bind_address"] = "0.0.0.0"  # its namespace has only its own address and, at times, the VIP
        return mariadb.MariaDBInstance(
            self.name, str(self.path / "db"), self.port, self.index,
            host=self.address, netns=self.netns, extra_options=options,
        )


def write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def write_host_files(host: Host, peer: Host, vip: str = "", rw_backend: str = "", ro_backends: Iterable[str] = ()) -> None:
    """orch.yaml, password files, the Atlas config and the health check's client defaults.

    Atlas's read-write backend is the VIP (``rw_backend`` where there is none); orch
    manages only the read-only backends, so the lab starts with none and lets
    ``orch maintain`` add the replica.
    """
    import yaml

    host.path.mkdir(parents=True, exist_ok=True)
    write_secret(host.file("mysql.pass"), mariadb.ORCH_CREDENTIALS.password)
    write_secret(host.file("repl.pass"), mariadb.REPL_CREDENTIALS.password)
    write_secret(host.file("atlas.pass"), ATLAS_ADMIN.password)
    write_secret(host.file("app.pass"), APP_CREDENTIALS.password)
    cfg: Dict[str, Any] = {
        "cluster": CLUSTER,
        "flavor": "auto",
        "self": host.name,
        "nodes": {h.name: {"host": h.address, "port": h.port} for h in sorted((host, peer), key=lambda h: h.index)},
        "mysql": {"user": mariadb.ORCH_CREDENTIALS.user, "password_file": "mysql.pass", "connect_timeout": 1},
        "replication": {"user": mariadb.REPL_CREDENTIALS.user, "password_file": "repl.pass"},
        "failover": {"catchup_timeout": 10, "lock_timeout": 30},
        "state_dir": str(host.file("state")),
        # the loopback lab has no VIP: nothing to tell stale events by
        "keepalived": {"instance": VRRP_INSTANCE, **({"vip": vip} if vip else {"vip_check": False})},
        "atlas": [{
            "name": f"atlas-{host.name}",
            "admin": {"host": host.atlas_host, "port": host.atlas_port, "user": ATLAS_ADMIN.user, "password_file": "atlas.pass"},
            "config_file": str(host.file("atlas.cnf")),
        }],
        "maintainer": {"interval": 1, "max_lag": 10},
    }
    config = host.file("orch.yaml")
    config.write_text(f"# {host.name} in the orch lab (written by orchestrator.lab)\n" + yaml.safe_dump(cfg, sort_keys=False))
    os.chmod(config, 0o600)
    rw = f"{vip}:{host.port}" if vip else (rw_backend or host.backend)
    lines = [
        "[mysql-proxy]",
        f"admin-address = {host.atlas_host}:{host.atlas_port}",
        f"admin-username = {ATLAS_ADMIN.user}",
        f"admin-password = {ATLAS_ADMIN.password}",
        f"proxy-backend-addresses = {rw}",
    ]
    ro = list(ro_backends)
    if ro:
        lines.append(f"proxy-read-only-backend-addresses = {','.join(ro)}")
    atlas = host.file("atlas.cnf")
    atlas.write_text("\n".join(lines) + "\n")
    os.chmod(atlas, 0o600)
    # The health check's credentials: a client defaults file, never argv.
    check = host.file("check.cnf")
    check.write_text(
        "[client]\n"
        f"host={host.address}\nport={host.port}\n"
        f"user={mariadb.ORCH_CREDENTIALS.user}\npassword={mariadb.option_value(mariadb.ORCH_CREDENTIALS.password)}\n"
        "connect_timeout=1\n"
    )
    os.chmod(check, 0o600)


# --------------------------------------------------------------------------- observation


@dataclass(frozen=True)
class ServerState:
    """One server seen over its unix socket (works from any network namespace)."""

    name: str
    up: bool
    read_only: Optional[bool] = None
    source: Optional[str] = None  # "host:port" it replicates from
    io: str = ""
    sql: str = ""
    sql_error: str = ""
    io_error: str = ""
    gtid_binlog_state: str = ""
    gtid_current_pos: str = ""
    error: str = ""

    @property
    def replicating(self) -> bool:
        return self.io == "Yes" and self.sql == "Yes"

    def describe(self) -> str:
        if not self.up:
            return f"{self.name}: down ({self.error})"
        role = "read-only" if self.read_only else "writable"
        repl = f"replicates from {self.source} (IO {self.io}, SQL {self.sql})" if self.source else "no replication"
        errors = "".join(f"; {k}: {v}" for k, v in (("IO error", self.io_error), ("SQL error", self.sql_error)) if v)
        return f"{self.name}: {role}, {repl}{errors}, gtid_binlog_state {self.gtid_binlog_state or '(empty)'}"


def server_state(db: mariadb.MariaDBInstance) -> ServerState:
    import pymysql

    try:
        with closing(db.connect(connect_timeout=1, read_timeout=2, cursorclass=pymysql.cursors.DictCursor)) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT @@global.read_only AS ro, @@global.gtid_binlog_state AS bs, @@global.gtid_current_pos AS cp")
                head = cur.fetchone()
                cur.execute("SHOW SLAVE STATUS")
                st = cur.fetchone()
    except (pymysql.MySQLError, OSError) as exc:
        return ServerState(db.name, False, error=str(exc.args[-1] if exc.args else exc))
    source = f"{st['Master_Host']}:{st['Master_Port']}" if st and st.get("Master_Host") else None
    return ServerState(
        db.name, True, bool(int(head["ro"])), source,
        io=(st or {}).get("Slave_IO_Running", ""), sql=(st or {}).get("Slave_SQL_Running", ""),
        sql_error=(st or {}).get("Last_SQL_Error", ""), io_error=(st or {}).get("Last_IO_Error", ""),
        gtid_binlog_state=str(head["bs"] or ""), gtid_current_pos=str(head["cp"] or ""),
    )


def gtids_beyond(state: str, other: str) -> List[str]:
    """GTIDs (domain-server-seq, from gtid_binlog_state) in ``state`` that ``other`` does not reach."""
    def parse(text: str) -> Dict[Tuple[str, str], int]:
        out = {}
        for item in filter(None, (t.strip() for t in text.split(","))):
            domain, server, seq = item.split("-")
            out[(domain, server)] = int(seq)
        return out

    mine, theirs = parse(state), parse(other)
    return [f"{d}-{s}-{theirs.get((d, s), 0) + 1}..{n}" for (d, s), n in sorted(mine.items()) if n > theirs.get((d, s), 0)]


class Sampler:
    """Reads read_only on every server every ``interval`` seconds (unix sockets) and keeps the samples."""

    def __init__(self, dbs: Dict[str, mariadb.MariaDBInstance], interval: float = 0.05) -> None:
        self.dbs = dbs
        self.interval = interval
        self.samples: List[Tuple[float, Dict[str, Optional[int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read-only-sampler", daemon=True)

    def _run(self) -> None:
        import pymysql

        conns: Dict[str, Any] = {}
        while not self._stop.is_set():
            started = time.monotonic()
            row: Dict[str, Optional[int]] = {}
            for name, db in self.dbs.items():
                try:
                    if name not in conns:
                        conns[name] = db.connect(connect_timeout=0.5, read_timeout=0.5, write_timeout=0.5)
                    with conns[name].cursor() as cur:
                        cur.execute("SELECT @@global.read_only")
                        row[name] = int(cur.fetchone()[0])
                except (pymysql.MySQLError, OSError):
                    conn = conns.pop(name, None)
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:
                            pass
                    row[name] = None
            self.samples.append((started, row))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        for conn in conns.values():
            try:
                conn.close()
            except Exception:
                pass

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def both_writable(self) -> List[Tuple[float, Dict[str, Optional[int]]]]:
        return [(t, row) for t, row in self.samples if len(row) > 1 and all(v == 0 for v in row.values())]


# --------------------------------------------------------------------------- client traffic


class Writer:
    """The writer process (see :func:`writer_main`): started in a namespace or locally."""

    def __init__(self, host: str, port: int, workdir: Path, password_file: Path, netns: Optional[str] = None,
                 pause: float = 0.002, name: str = "writer", select: bool = False, connect_timeout: float = 0.25) -> None:
        self.acked_path = workdir / f"{name}.acked"
        self.log_path = workdir / f"{name}.log"
        self.acked_path.unlink(missing_ok=True)
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.argv = [
            *prefix, sys.executable, "-m", "orchestrator.lab.sandbox", "writer",
            "--host", host, "--port", str(port), "--user", APP_CREDENTIALS.user,
            "--password-file", str(password_file), "--acked", str(self.acked_path), "--pause", str(pause),
            "--connect-timeout", str(connect_timeout), *(["--select"] if select else []),
        ]
        self._proc: Optional[subprocess.Popen] = None

    def start(self, wait_first_ack: float = 15.0) -> "Writer":
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if wait_first_ack:
            wait_for("the writer's first acknowledged insert", lambda: self.acked(), wait_first_ack,
                     detail=lambda: tail(self.log_path, 3))
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> "Writer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def acked(self) -> List[Tuple[int, float]]:
        """(id, CLOCK_MONOTONIC time) of every acknowledged insert so far."""
        out = []
        try:
            text = self.acked_path.read_text()
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:  # a line being written is skipped until complete
                out.append((int(parts[0]), float(parts[1])))
        return out

    def acked_since(self, t: float) -> List[Tuple[int, float]]:
        return [a for a in self.acked() if a[1] >= t]


def create_app_schema(db: mariadb.MariaDBInstance) -> None:
    """On the master (it replicates): the application account and the table the writer fills."""
    schema, table = DRILL_TABLE
    app = APP_CREDENTIALS
    db.sql(f"CREATE TABLE IF NOT EXISTS `{schema}`.`{table}` (id BIGINT PRIMARY KEY, at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))")
    db.sql("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (app.user, app.password))
    db.sql(f"GRANT SELECT, INSERT ON `{schema}`.* TO %s@'%%'", (app.user,))


def row_ids(db: mariadb.MariaDBInstance) -> set:
    schema, table = DRILL_TABLE
    return {int(r["id"]) for r in db.sql(f"SELECT id FROM `{schema}`.`{table}`")}


def writer_main(argv: Sequence[str]) -> int:
    """Insert numbered rows through host:port until SIGTERM; append 'id monotonic-time' per ack."""
    import pymysql

    p = argparse.ArgumentParser(prog="python -m orchestrator.lab.sandbox writer")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=3306)
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--acked", required=True, help="file to append acknowledged ids to")
    p.add_argument("--pause", type=float, default=0.002, help="seconds between inserts")
    p.add_argument("--select", action="store_true", help="only SELECT @@server_id (reachability), append 'server_id time'")
    p.add_argument("--connect-timeout", type=float, default=0.25,
                   help="seconds; short, so the outage measured is the cluster's, not a stuck connect's")
    args = p.parse_args(argv)
    password = Path(args.password_file).read_text().rstrip("\r\n")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    schema, table = DRILL_TABLE
    statement = f"INSERT INTO `{schema}`.`{table}` (id) VALUES (%s)"
    # Ids are unique per time, so a restarted writer never reuses one (ms since epoch * 1000).
    next_id = int(time.time() * 1000) * 1000
    fd = os.open(args.acked, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    conn = None
    last_error = ""
    while not stop.is_set():
        next_id += 1
        try:
            if conn is None:
                conn = pymysql.connect(host=args.host, port=args.port, user=args.user.encode("utf-8"), password=password.encode("utf-8"), autocommit=True,
                                       connect_timeout=args.connect_timeout, read_timeout=1, write_timeout=1)
            with conn.cursor() as cur:
                if args.select:
                    cur.execute("SELECT @@server_id")
                    answer = int(cur.fetchone()[0])
                else:
                    cur.execute(statement, (next_id,))
                    answer = next_id
            os.write(fd, f"{answer} {time.monotonic():.6f}\n".encode())
            if last_error:
                print(f"{time.monotonic():.3f} ok again", flush=True)
                last_error = ""
        except (pymysql.MySQLError, OSError) as exc:
            text = str(exc.args[-1] if exc.args else exc)
            if text != last_error:
                print(f"{time.monotonic():.3f} error: {text}", flush=True)
                last_error = text
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
            stop.wait(0.01)
            continue
        if args.pause:
            stop.wait(args.pause)
    os.close(fd)
    return 0


# --------------------------------------------------------------------------- the lab


class Lab:
    """Common part of the two labs. Subclasses: ``NetnsLab`` and ``LoopbackLab``."""

    mode = ""

    def __init__(self, workdir: str, hosts: List[Host], lab_id: str, persistent: bool = False) -> None:
        self.workdir = Path(workdir).absolute()
        self.hosts = {h.name: h for h in hosts}
        self.lab_id = lab_id
        self.persistent = persistent
        self.procs: Dict[str, Proc] = {}
        self.owner = os.getpid()
        self.dbs = {h.name: h.db() for h in hosts}
        self.progress: Callable[[str], None] = lambda text: log.info("%s", text)

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
        argv = [sys.executable, "-m", "orchestrator.atlas.standin", "--config", str(host.file("atlas.cnf"))]
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
        if m.up and r.up and m.gtid_binlog_state != r.gtid_binlog_state:
            problems.append(f"[gtid] GTID sets differ: {master} {m.gtid_binlog_state!r}, {replica} {r.gtid_binlog_state!r}")
        acked = set(acked)
        if acked and m.up:
            missing = acked - row_ids(self.dbs[master])
            if missing:
                problems.append(f"[acked rows] {len(missing)} of {len(acked)} acknowledged rows are missing on the master {master}: "
                                f"{sorted(missing)[:5]}")
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


def who_repointed(host: "Host") -> str:
    """Which orch run last pointed this host's server at its peer, from its journal."""
    from ..journal import Journal

    for record in reversed(Journal(str(host.file("state"))).tail(50)):
        steps = record.get("steps") or []
        if record.get("phase") == "end" and any(s.get("step") == "ChangeSource" and s.get("result") == "ok" for s in steps):
            if record.get("event") == "REJOIN":
                return "orch maintain pointed it there, completing a rejoin its BACKUP event could not finish yet"
            return f"orch notify {record.get('event')} pointed it there"
    return "it already replicated from there"


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def load_lab(workdir: str) -> Optional[Lab]:
    """The lab recorded in ``workdir``, or None."""
    path = Path(workdir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"{path}: unreadable lab state: {exc}") from None
    hosts = [Host(**h) for h in state["hosts"]]
    if state["mode"] == "netns":
        from .netns import NetnsLab

        lab: Lab = NetnsLab.from_state(state, hosts)
    else:
        from .loopback import LoopbackLab

        lab = LoopbackLab.from_state(state, hosts)
    lab.adopt(state)
    return lab


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["writer"]:
        return writer_main(argv[1:])
    print("usage: python -m orchestrator.lab.sandbox writer --host H --port P --user U --password-file F --acked FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
