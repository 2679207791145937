"""orch notify-fifo FIFO: keepalived's events in order, from its ``notify_fifo``.

keepalived runs ``notify`` scripts fire-and-forget: two of them may run at once and
finish out of order. With ``notify_fifo`` it writes one line per state change, in the
order the changes happened, into a FIFO (``INSTANCE "VI_1" MASTER 100``, ``GROUP "G1"
BACKUP``). This reader handles them one at a time with the code of ``orch notify``.

Only the newest state of an instance matters: lines queued while a run was busy are
coalesced, and for each instance only its last state is handled. A writer that closes
the FIFO (keepalived stopping or restarting) is waited for again; SIGTERM lets the event
in progress finish, then the reader exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import stat
from collections import OrderedDict
from typing import List, Optional, TextIO, Tuple

from ..errors import EXIT_OK, OrchError, UsageError
from ..keepalived.events import Event, parse_line

log = logging.getLogger("orchestrator.fifo")

MAX_LINE = 4096  # bytes: a longer "line" is not keepalived's
CHECK_PATH_EVERY = 5.0  # seconds: notice a FIFO replaced or removed under us


class Queue:
    """Events waiting, the newest state per instance only, in the order of their last line."""

    def __init__(self) -> None:
        self._events: "OrderedDict[Tuple[str, str], Event]" = OrderedDict()
        self.dropped: List[Tuple[Event, Event]] = []  # (stale, replaced by)

    def add(self, event: Event) -> None:
        stale = self._events.pop(event.key, None)
        if stale is not None:
            self.dropped.append((stale, event))
        self._events[event.key] = event

    def pop(self) -> Optional[Event]:
        if not self._events:
            return None
        return self._events.popitem(last=False)[1]

    def __len__(self) -> int:
        return len(self._events)

    def pending(self) -> List[Event]:
        return list(self._events.values())


def ensure_fifo(path: str) -> None:
    """Create the FIFO (mode 0600) if missing; refuse a path that is something else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise UsageError(f"orch notify-fifo: directory {directory} does not exist") from None
        old = os.umask(0o077)
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            pass  # keepalived made it meanwhile
        except OSError as exc:
            raise OrchError(f"orch notify-fifo: cannot create FIFO {path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        log.info("created FIFO %s (mode 0600)", path)
        st = os.lstat(path)
    if not stat.S_ISFIFO(st.st_mode):
        raise UsageError(f"orch notify-fifo: {path} exists and is not a FIFO")


class Reader:
    """The FIFO's read end, re-opened when the writer goes away or the FIFO is replaced."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None
        self.buffer = b""

    def open(self) -> None:
        self.close()
        ensure_fifo(self.path)
        # Non-blocking: opening waits for no writer, and a signal is seen while none writes.
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        st = os.fstat(self.fd)
        if not stat.S_ISFIFO(st.st_mode):
            self.close()
            raise UsageError(f"orch notify-fifo: {self.path} is not a FIFO")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def replaced(self) -> bool:
        """Whether the path no longer names the FIFO we hold open (removed or recreated)."""
        if self.fd is None:
            return True
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        mine = os.fstat(self.fd)
        return (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino)

    def read_lines(self) -> Tuple[List[str], bool]:
        """Every complete line available now, and whether the writer closed its end (EOF)."""
        assert self.fd is not None
        eof = False
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > MAX_LINE:
            log.warning("notify-fifo: skipped %d bytes without a newline (not keepalived's)", len(self.buffer))
            self.buffer = b""
        if eof and self.buffer:
            lines.append(self.buffer)  # the writer's last line, closed without a newline
            self.buffer = b""
        return [raw.decode("utf-8", "replace").strip() for raw in lines if raw.strip()], eof


class Stop:
    """SIGTERM/SIGINT: finish the event in progress, then exit. A self-pipe wakes the wait."""

    def __init__(self) -> None:
        self.requested = 0
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        self.requested = signum
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass


def notify_fifo(args: argparse.Namespace, out: TextIO) -> int:
    """Read keepalived's notify_fifo until SIGTERM; each event as ``orch notify`` handles it."""
    from .common import load_config

    load_config(args)  # a bad config is an error now, not at the first event
    path = args.fifo
    stop = Stop()
    stop.install()
    reader = Reader(path)
    reader.open()
    queue = Queue()
    log.info("notify-fifo: reading keepalived events from %s", path)
    try:
        while not stop.requested:
            event = queue.pop()
            if event is None:
                _wait(reader, stop)
                if stop.requested:
                    break
            else:
                _handle(args, event, out)
            _drain(reader, queue)
    finally:
        reader.close()
    left = queue.pending()
    if left:
        log.warning("notify-fifo: stopping with %d event(s) not handled: %s (the maintainer keeps the invariants)",
                    len(left), ", ".join(str(e) for e in left))
    log.info("notify-fifo: stopped (signal %d)", stop.requested)
    return EXIT_OK


def _wait(reader: Reader, stop: Stop) -> None:
    """Until the FIFO has something to read (or its writer closed it), or a stop is requested."""
    while not stop.requested:
        assert reader.fd is not None
        try:
            ready, _, _ = select.select([reader.fd, stop.wake_r], [], [], CHECK_PATH_EVERY)
        except InterruptedError:
            continue
        if reader.fd in ready:
            return
        if not ready and reader.replaced():
            log.warning("notify-fifo: %s was removed or replaced; opening it again", reader.path)
            reader.open()


def _drain(reader: Reader, queue: Queue) -> None:
    """Read every line available now into the queue; re-open after the writer closed."""
    lines, eof = reader.read_lines()
    for line in lines:
        event, why = parse_line(line)
        if event is None:
            level = logging.INFO if why.startswith("ignored") else logging.WARNING
            log.log(level, "notify-fifo: line %r %s", line[:200], why)
            continue
        queue.add(event)
    for stale, newer in queue.dropped:
        log.info("notify-fifo: %s skipped: superseded by %s", stale, newer)
    queue.dropped.clear()
    if eof:
        # keepalived stopped or restarts: wait for the next writer without spinning on EOF.
        log.info("notify-fifo: the writer closed %s; waiting for it again", reader.path)
        reader.open()


def _handle(args: argparse.Namespace, event: Event, out: TextIO) -> None:
    """One event, as orch notify handles it; a failure is logged and the reader goes on."""
    from .. import logs
    from .roles import notify_event

    log.info("notify-fifo: handling %s", event)
    try:
        code = notify_event(args, event.type, event.name, event.state, out)
    except OrchError as exc:
        log.error("notify-fifo: %s failed: %s", event, logs.redact(str(exc), logs.current_secrets()))
        return
    except Exception:  # a bug must not stop the next event from being handled
        log.exception("notify-fifo: %s: unexpected error (a bug: please report it with this traceback)", event)
        return
    finally:
        logs.configure_run("-", logs.current_secrets())  # the reader's own lines carry no run id
    log.info("notify-fifo: %s done (exit %d)", event, code)
