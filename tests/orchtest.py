"""Helpers for tests that drive the real `orch` command against real servers."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import pytest
import yaml

from orchestrator.lab import mariadb as lab

ORCH = os.path.join(os.path.dirname(sys.executable), "orch")
SECRETS = (lab.ORCH_CREDENTIALS.password, lab.REPL_CREDENTIALS.password)


@dataclass
class Result:
    argv: List[str]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def config_dict(server1: lab.MariaDBInstance, server2: lab.MariaDBInstance, state_dir: str, **extra: Any) -> Dict[str, Any]:
    """A minimal config for a test of one behaviour on a pair sharing this host (no Atlas, no
    semi-sync, no VIP unless the test adds them). The lab, the drills and the randomized fault
    test run conf/orch.yaml instead (orchestrator.lab.hosts.lab_config)."""
    cfg: Dict[str, Any] = {
        "cluster": "test",
        "flavor": "auto",
        "self": "server1",
        "nodes": {
            "server1": {"host": server1.host, "port": server1.port},
            "server2": {"host": server2.host, "port": server2.port},
        },
        "mysql": {"user": lab.ORCH_CREDENTIALS.user, "password": lab.ORCH_CREDENTIALS.password, "connect_timeout": 1},
        "replication": {"user": lab.REPL_CREDENTIALS.user, "password": lab.REPL_CREDENTIALS.password},
        # anti-flapping off: most tests promote back and forth within seconds (tests/test_antiflap.py turns it on)
        "failover": {"catchup_timeout": 5, "block_seconds": 0},
        "state_dir": state_dir,
        # both servers share this host: there is no VIP to tell stale events by
        "keepalived": {"vip_check": False},
    }
    if isinstance(extra.get("keepalived"), dict) and "vip" not in extra["keepalived"]:
        extra = {**extra, "keepalived": {**cfg["keepalived"], **extra["keepalived"]}}
    cfg.update(extra)
    return cfg


def write_config(path: Path, cfg: Dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.chmod(path, 0o600)
    return str(path)


def orch(config: str, node: Optional[str], *args: str, timeout: float = 60, stdin: str = "", env: Optional[Dict[str, str]] = None) -> Result:
    argv = [ORCH, "-c", config] + (["--node", node] if node else []) + list(args)
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def journal(state_dir: str) -> List[Dict[str, Any]]:
    path = Path(state_dir) / "journal.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_only(server: lab.MariaDBInstance) -> bool:
    return bool(int(server.query_value("SELECT @@global.read_only")))


def wait_running(server: lab.MariaDBInstance, start: str, timeout: float = 15) -> None:
    """Until a statement whose text begins with ``start`` runs on ``server`` (a thread's
    statement waited for, not slept on: a slow thread start would have it begin too late)."""
    import time

    deadline = time.monotonic() + timeout
    while not server.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE %s", (start.replace("%", "\\%") + "%",)):
        assert time.monotonic() < deadline, f"{start!r} never ran on {server.name}"
        time.sleep(0.02)


def slave_status(server: lab.MariaDBInstance) -> Optional[Dict[str, Any]]:
    rows = server.sql("SHOW SLAVE STATUS")
    return rows[0] if rows else None


def gtid(server: lab.MariaDBInstance, var: str = "gtid_current_pos") -> str:
    return str(server.query_value(f"SELECT @@global.{var}"))


def snapshot(*servers: lab.MariaDBInstance) -> List[Any]:
    """Everything a 'no change' test compares: role, replication config and data position."""
    out = []
    for s in servers:
        st = slave_status(s)
        out.append((
            read_only(s), gtid(s, "gtid_binlog_pos"),
            None if st is None else (st["Master_Host"], st["Master_Port"], st["Slave_IO_Running"], st["Slave_SQL_Running"]),
        ))
    return out


def assert_no_secrets(*texts: str, extra: Sequence[str] = ()) -> None:
    for text in texts:
        for secret in SECRETS + tuple(extra):
            assert secret not in text, f"secret leaked: {secret!r}"


def write_report(request: Any, title: str, lines: Sequence[str]) -> None:
    """Print a module's timing lines after its tests, past pytest's output capture."""
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or capture is None or not lines:
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line("")
        terminal.write_line(title)
        for line in lines:
            terminal.write_line("  " + line)


@functools.lru_cache(maxsize=None)
def netns_skip_reason() -> Optional[str]:
    """Why the namespace labs cannot run here (None: they can)."""
    from orchestrator.lab import netns

    return netns.unavailable_reason()


@contextlib.contextmanager
def held_lab(make: Callable[[], Any], skip: Optional[str] = None) -> Iterator[Any]:
    """The body of a module fixture holding a namespace lab: skipped with ``skip`` (or when
    namespaces are unavailable), earlier runs' stale labs removed, ``make()`` yielded, and
    taken down afterwards, pass or fail."""
    from orchestrator.lab import netns

    reason = skip or netns_skip_reason()
    if reason:
        pytest.skip(reason)
    netns.cleanup_stale()
    held = make()
    try:
        yield held
    finally:
        held.down()


class LabHolder:
    """The module's lab; rebuilt when a drill leaves it unhealthy."""

    def __init__(self, root: Any, template: str, profile: str = "default", overrides: Optional[Dict[str, Any]] = None,
                 **options: Any) -> None:
        self.root = root
        self.template = template
        self.profile = profile
        self.overrides = overrides  # None: orchestrator.lab.hosts.LAB_OVERRIDES
        self.options = options  # NetnsLab's: etcd, etcd_tls, haproxy
        self.lab: Optional[Any] = None
        self.builds = 0

    def build(self) -> Any:
        from orchestrator.lab import netns

        self.builds += 1
        lab = netns.NetnsLab(str(self.root / f"lab{self.builds}"), template=self.template, profile=self.profile,
                             overrides=self.overrides, **self.options)
        lab.up()
        self.lab = lab
        return lab

    def healthy(self) -> Any:
        from orchestrator.lab import LabError

        if self.lab is None:
            return self.build()
        try:
            self.lab.wait_healthy(20)
        except LabError:
            self.lab.down()
            return self.build()
        return self.lab

    def down(self) -> None:
        if self.lab is not None:
            self.lab.down()
            self.lab = None
