"""orch watch-mysqld: tell keepalived the instant the database server process exits.

For the fast keepalived profile (conf/keepalived-fast-server{1,2}.conf): the server's
pid file names the process; the watcher waits on it through a pidfd (the kernel wakes
it the moment the process exits: no polling) and writes 1 to a keepalived track file
(weight 0: FAULT, so the VIP leaves at once); while a live server runs it writes 0
(the health check, rise 2, still decides when a restarted server is ready). It works in
any network namespace, which keepalived's own vrrp_track_process does not (the kernel's
process-event connector answers only in the initial one).
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import time
from typing import Optional, TextIO

from ..errors import EXIT_OK, UsageError

log = logging.getLogger("orchestrator.watch")

PID_POLL = 0.05  # seconds between looks at the pid file while no live server is known


def live_pid(pid_file: str) -> Optional[int]:
    """The pid in ``pid_file`` when that process exists, else None."""
    try:
        with open(pid_file, encoding="ascii") as fh:
            pid = int(fh.read(32).strip())
    except (OSError, ValueError):
        return None
    if pid <= 1:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists
    return pid


def write_state(track_file: str, down: bool, why: str) -> None:
    fd = os.open(track_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, b"1\n" if down else b"0\n")
    finally:
        os.close(fd)
    (log.warning if down else log.info)("%s: wrote %d to %s", why, int(down), track_file)


def watch(pid_file: str, track_file: str, stop: "list[bool]") -> None:
    state: Optional[bool] = None  # True: down written
    while not stop[0]:
        pid = live_pid(pid_file)
        if pid is None:
            if state is not True:
                write_state(track_file, True, f"no live server process ({pid_file})")
                state = True
            time.sleep(PID_POLL)
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if state is not False:
                write_state(track_file, False, f"server process {pid} runs")
                state = False
            while not stop[0]:
                ready, _, _ = select.select([pidfd], [], [], 0.5)
                if ready:
                    break
        finally:
            os.close(pidfd)
        if not stop[0]:
            write_state(track_file, True, f"server process {pid} exited")
            state = True


def watch_mysqld(args: argparse.Namespace, out: TextIO) -> int:
    for name, path in (("--pid-file", args.pid_file), ("--track-file", args.track_file)):
        if not os.path.isabs(path):
            raise UsageError(f"orch watch-mysqld: {name} must be an absolute path, got {path!r}")
    if not os.path.isdir(os.path.dirname(args.track_file)):
        raise UsageError(f"orch watch-mysqld: --track-file {args.track_file!r}: its directory does not exist")
    if not hasattr(os, "pidfd_open"):
        raise UsageError("orch watch-mysqld: needs Linux 5.3+ and Python 3.9+ (pidfd_open)")
    stop = [False]

    def on_signal(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("watching %s for keepalived's %s", args.pid_file, args.track_file)
    watch(args.pid_file, args.track_file, stop)
    return EXIT_OK
