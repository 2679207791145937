"""orch lab up|status|failover|switchover|down: a local sandbox cluster that shows a failover heal.

``up`` builds the namespace lab (root, keepalived installed, network namespaces
allowed) or else the loopback lab, leaves it running in the background and records it
in ``<dir>/lab.json``; the other actions find it there.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any, List, TextIO, Tuple

from ..errors import EXIT_FAILED, EXIT_OK, OrchError, UsageError

DEFAULT_DIR = "/tmp/orch-lab"


def lab(args: argparse.Namespace, out: TextIO) -> int:
    from ..lab import LabError
    from ..lab.sandbox import load_lab

    if not getattr(args, "verbose", False):
        logging.getLogger("orchestrator.lab").setLevel(logging.WARNING)
    workdir = os.path.abspath(args.dir or DEFAULT_DIR)
    hint = "" if workdir == DEFAULT_DIR else f" --dir {workdir}"
    try:
        if args.action == "up":
            return _up(workdir, args.mode, hint, out, getattr(args, "haproxy", False), etcd=getattr(args, "etcd", False),
                       etcd_tls=getattr(args, "etcd_tls", False))
        current = load_lab(workdir)
        if current is None:
            if args.action == "down":
                out.write(f"no lab in {workdir}: nothing to stop\n")
                return EXIT_OK
            raise OrchError(f"no lab in {workdir}: start one with `orch lab up{hint}`")
        if args.action == "status":
            for line in current.status_lines():
                out.write(line + "\n")
            problems = current.health()
            out.write("health: ok\n" if not problems else "health: " + "\n        ".join(problems) + "\n")
            return EXIT_OK if not problems else EXIT_FAILED
        if args.action == "failover":
            return _failover(current, workdir, out)
        if args.action == "switchover":
            from ..lab.switchover import narrate

            out.write(f"orch lab switchover ({current.mode} lab in {workdir})\n")
            return EXIT_OK if narrate(current, out) else EXIT_FAILED
        if args.action == "down":
            current.down()
            out.write(f"lab {current.lab_id} stopped: every process it started is gone"
                      + (" and its network namespaces are deleted" if current.mode == "netns" else "")
                      + f"; logs stay in {workdir}\n")
            return EXIT_OK
    except LabError as exc:
        raise OrchError(str(exc)) from None
    raise UsageError(f"orch lab: unknown action {args.action!r}")


class Tee:
    """Writes to ``out`` and keeps a copy (the narration saved next to the timeline)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.parts: List[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()

    def text(self) -> str:
        return "".join(self.parts)


def _failover(current: Any, workdir: str, out: TextIO) -> int:
    """Narrate the failover, then save the narration and its timeline page next to each other:
    ``<dir>/failover-<UTC time>.txt`` and ``.html``."""
    from pathlib import Path

    from ..lab.report import write_failover_page

    tee = Tee(out)
    tee.write(f"orch lab failover ({current.mode} lab in {workdir})\n")
    healed = current.failover(tee)
    base = Path(workdir) / time.strftime("failover-%Y%m%dT%H%M%SZ", time.gmtime())
    narration = base.with_suffix(".txt")
    try:
        narration.write_text(tee.text())
        if current.recording is not None:
            page = write_failover_page(current, current.recording, tee.text(), base.with_suffix(".html"))
            out.write(f"timeline: {page}\nnarration: {narration}\n")
    except OSError as exc:  # the failover's verdict stands without its files
        out.write(f"orch lab failover: cannot save the narration or its timeline in {workdir}: {exc.strerror or exc}\n")
    return EXIT_OK if healed else EXIT_FAILED


def choose_mode(requested: str) -> Tuple[str, str]:
    """(mode, why) for ``--mode auto|netns|loopback``."""
    from ..lab import netns

    if requested == "loopback":
        return "loopback", "--mode loopback"
    reason = netns.unavailable_reason()
    if requested == "netns":
        if reason:
            raise OrchError(f"orch lab up --mode netns: {reason}")
        return "netns", "--mode netns"
    if reason is None:
        return "netns", "root with keepalived: two hosts in network namespaces, real keepalived and VRRP"
    return "loopback", f"{reason}; using the loopback variant (no keepalived: the lab delivers its events)"


def _up(workdir: str, requested: str, hint: str, out: TextIO, haproxy: bool = False, etcd: bool = False,
        etcd_tls: bool = False) -> int:
    from ..lab import netns
    from ..lab.base import Lab
    from ..lab.loopback import LoopbackLab
    from ..lab.sandbox import load_lab

    existing = load_lab(workdir)
    if existing is not None:
        if not existing.daemon_problems() and all(db.is_running() for db in existing.dbs.values()):
            out.write(f"a {existing.mode} lab is already running in {workdir}:\n")
            for line in existing.status_lines():
                out.write(line + "\n")
            return EXIT_OK
        out.write(f"removing the remains of lab {existing.lab_id} in {workdir}\n")
        existing.down()
    mode, why = choose_mode(requested)
    if haproxy:
        from ..lab.haproxy import unavailable_reason

        if mode != "netns":
            raise OrchError(f"orch lab up --haproxy: HAProxy runs in the namespace lab only ({why})")
        missing = unavailable_reason()
        if missing:
            raise OrchError(f"orch lab up --haproxy: {missing}")
    etcd = etcd or etcd_tls
    if etcd and mode != "netns":
        raise UsageError("orch lab up --etcd: needs the namespace lab (one etcd member in each host's namespace)")
    if mode == "netns":
        for text in netns.cleanup_stale():
            out.write(f"removed stale lab {text}\n")
    out.write(f"orch lab up: {mode} lab in {workdir} ({why})\n")
    started = time.monotonic()
    new: Lab = (netns.NetnsLab(workdir, persistent=True, haproxy=haproxy, etcd=etcd, etcd_tls=etcd_tls) if mode == "netns"
                else LoopbackLab(workdir, persistent=True))

    def progress(text: str) -> None:
        out.write(f"  [{time.monotonic() - started:5.1f}s] {text}\n")
        out.flush()

    new.progress = progress
    new.up()
    out.write(
        "next:\n"
        f"  orch lab status{hint}      both servers, {'the VIP, keepalived, ' if mode == 'netns' else ''}both Atlas stand-ins\n"
        f"  orch lab failover{hint}    kill -9 the master's mysqld and watch the cluster heal, step by step\n"
        + (f"  orch lab switchover{hint}  a planned switchover through keepalived under a writer, timed\n" if mode == "netns" else "")
        + f"  orch -c {workdir}/server1/orch.yaml status\n"
        f"  orch lab down{hint}        stop everything"
        + (" and delete the namespaces" if mode == "netns" else "") + "\n"
    )
    return EXIT_OK
