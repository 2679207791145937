"""Client traffic through the VIP (or a server): the writer the drills, the benchmark and
``orch lab failover`` run.

``python -m orchestrator.lab.traffic writer ...`` inserts numbered rows and appends each
acknowledged id with its CLOCK_MONOTONIC time to a file.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from orchestrator.lab import mariadb
from orchestrator.lab.hosts import APP_CREDENTIALS, DRILL_TABLE
from orchestrator.lab.proc import background, tail, wait_for


class Writer:
    """The writer process (see :func:`writer_main`): started in a namespace or locally."""

    def __init__(self, host: str, port: int, workdir: Path, password_file: Path, netns: Optional[str] = None,
                 pause: float = 0.002, name: str = "writer", select: bool = False, connect_timeout: float = 0.25) -> None:
        self.acked_path = workdir / f"{name}.acked"
        self.log_path = workdir / f"{name}.log"
        self.errors_path = workdir / f"{name}.errors"
        self.acked_path.unlink(missing_ok=True)
        self.errors_path.unlink(missing_ok=True)
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.argv = [
            *prefix, sys.executable, "-m", "orchestrator.lab.traffic", "writer",
            "--host", host, "--port", str(port), "--user", APP_CREDENTIALS.user,
            "--password-file", str(password_file), "--acked", str(self.acked_path), "--pause", str(pause),
            "--connect-timeout", str(connect_timeout), "--errors", str(self.errors_path), *(["--select"] if select else []),
        ]
        self._proc: Optional[subprocess.Popen] = None

    def start(self, wait_first_ack: float = 15.0) -> "Writer":
        self._proc = background(self.argv, self.log_path)
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

    def errors(self) -> List[Tuple[float, int]]:
        """(CLOCK_MONOTONIC time, MySQL error code or 0) of every failed attempt so far."""
        out = []
        try:
            text = self.errors_path.read_text()
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append((float(parts[0]), int(parts[1])))
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


def writer_main(argv: Sequence[str]) -> int:
    """Insert numbered rows through host:port until SIGTERM; append 'id monotonic-time' per ack."""
    import pymysql

    p = argparse.ArgumentParser(prog="python -m orchestrator.lab.traffic writer")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=3306)
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--acked", required=True, help="file to append acknowledged ids to")
    p.add_argument("--pause", type=float, default=0.002, help="seconds between inserts")
    p.add_argument("--select", action="store_true", help="only SELECT @@server_id (reachability), append 'server_id time'")
    p.add_argument("--errors", default="", help="file to append 'monotonic-time error-code' to per failed attempt")
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
    errors_fd = os.open(args.errors, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if args.errors else -1
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
            if errors_fd >= 0:
                code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
                os.write(errors_fd, f"{time.monotonic():.6f} {code}\n".encode())
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
    if errors_fd >= 0:
        os.close(errors_fd)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["writer"]:
        return writer_main(argv[1:])
    print("usage: python -m orchestrator.lab.traffic writer --host H --port P --user U --password-file F --acked FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
