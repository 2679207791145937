"""Every subprocess the lab starts goes through here.

``run`` runs a command to its end, ``background`` starts a child whose ``Popen`` the
caller keeps (mariadbd, the writer), ``spawn`` starts a daemon detached from us. Argv
lists only, never a shell string with values substituted into it.

Daemons are started detached with ``setsid -f`` and remembered by PID *and* start time,
so a PID reused by an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Optional, Sequence, Union

from orchestrator.errors import CommandError
from orchestrator.lab import LabError

POLL = 0.02
OUTPUT_LINES = 15  # of a failed command's output, in its error


class CommandTimeout(CommandError):
    """A command still ran after its timeout (it was killed)."""


def run(argv: Sequence[str], timeout: float = 20, check: bool = True, input: Optional[str] = None,
        capture: bool = True, log: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run a command to its end, its stdin closed unless ``input`` is given.

    Its output is captured (``capture=False``: it goes where ours goes; ``log``: appended to
    that file). With ``check`` a non-zero exit is a CommandError with argv, the exit code
    and the output's last lines; a command still running after ``timeout`` is killed and
    raises CommandTimeout.
    """
    shown = " ".join(argv)
    stdout: Union[int, IO[Any], None] = subprocess.PIPE if capture else None
    stderr: Union[int, IO[Any], None] = stdout
    with contextlib.ExitStack() as files:
        if log is not None:
            stdout, stderr = files.enter_context(open(log, "ab")), subprocess.STDOUT
        try:
            proc = subprocess.run(list(argv), input=input, stdin=subprocess.DEVNULL if input is None else None,
                                  stdout=stdout, stderr=stderr, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"{shown}: timed out after {timeout:g}s") from None
        except OSError as exc:
            raise CommandError(f"{shown}: {exc.strerror}") from None
    if check and proc.returncode != 0:
        lines = f"{proc.stdout or ''}\n{proc.stderr or ''}".splitlines()
        output = " | ".join([line.strip() for line in lines if line.strip()][-OUTPUT_LINES:])
        if log is not None:
            output = f"see {log}"
        raise CommandError(f"{shown}: exit code {proc.returncode}" + (f": {output}" if output else ""))
    return proc


def background(argv: Sequence[str], log_path: Path) -> subprocess.Popen:
    """Start a child in its own session, stdin closed, output appended to ``log_path``."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


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
        # A child of ours stays a zombie until reaped, and its pid stays taken: keepalived,
        # started again, would find its old pid "running" in its pid file and refuse to start.
        try:
            os.waitpid(self.pid, os.WNOHANG)
        except (ChildProcessError, OSError):
            pass
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
    proc = run(full, timeout=timeout, check=False, log=log_path)
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


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.05, detail: Optional[Callable[[], str]] = None) -> Any:
    """Poll ``predicate`` until it returns something true; LabError naming ``what`` on timeout.

    A LabError raised by the predicate stops the wait at once (it knows waiting is futile).
    """
    deadline = time.monotonic() + timeout
    last: Optional[Exception] = None
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
