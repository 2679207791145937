"""check-config (validation alone) and check (keepalived's vrrp_script health check)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ..config import load
from ..errors import ConfigError


def check_config(args: argparse.Namespace, out: TextIO) -> int:
    try:
        cfg = load(args.config, args.node)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"orch: config error: {problem}", file=sys.stderr)
        return 1
    for w in cfg.warnings:
        out.write(f"warning: {w}\n")
    nodes = ", ".join(f"{n.name}={n.host}:{n.port}" for n in cfg.nodes)
    out.write(f"config OK: {cfg.path}: cluster {cfg.cluster}, self {cfg.self_name}, nodes {nodes}, flavor {cfg.flavor}, {len(cfg.atlas)} Atlas\n")
    return 0


def health_check(args: argparse.Namespace, out: TextIO) -> int:
    """Exit 0 when this node's server accepts a login and answers SELECT 1."""
    cfg = load(args.config, args.node)
    from dataclasses import replace

    from ..db import Server
    from ..errors import DatabaseError

    account = replace(cfg.mysql, connect_timeout=min(cfg.mysql.connect_timeout, args.timeout))
    server = Server(cfg.me, account, read_timeout=args.timeout)
    try:
        server.value("SELECT 1")
    except DatabaseError as exc:
        print(f"orch check: {exc}", file=sys.stderr)
        return 1
    finally:
        server.close()
    return 0
