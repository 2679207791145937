"""The health check keepalived runs: a tracked vrrp_script running hooks/check-mysql with a
client defaults file (check.cnf). orch doctor runs it exactly as keepalived does, then asks
that account which server it reached and what it may do (commands/doctor.py checks those
facts against orch.yaml and the servers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from . import conf


@dataclass(frozen=True)
class HealthCheckFacts:
    """The health check keepalived runs (a tracked vrrp_script running hooks/check-mysql), and
    what running it with its client defaults file showed. Never the password."""

    script: str  # the vrrp_script's name
    defaults_file: str
    mode: int = -1  # the file's permission bits (-1: cannot stat)
    options: Mapping[str, str] = field(default_factory=dict)  # [client] host, port, socket, user
    login_error: Optional[str] = None  # None: not run; "": check-mysql passed; else why it failed
    server_id: str = ""  # the server the file's account reaches
    grants: Tuple[str, ...] = ()
    grants_error: str = ""


def _mysql_client() -> str:
    """The client hooks/check-mysql runs (ORCH_MYSQL_CLIENT, else the first it finds)."""
    if os.environ.get("ORCH_MYSQL_CLIENT"):
        return os.environ["ORCH_MYSQL_CLIENT"]
    for candidate in ("/usr/bin/mariadb", "/usr/bin/mysql", "/usr/local/bin/mariadb", "/usr/local/bin/mysql"):
        if os.access(candidate, os.X_OK):
            return candidate
    return "mariadb"


def run_health_check(root: conf.Block, inst: conf.Block) -> Tuple[Optional[HealthCheckFacts], Tuple[str, ...], str]:
    """Run the tracked check-mysql exactly as keepalived does (the package's copy of the hook,
    with the conf's defaults file), then ask that account which server it reached and its
    grants. Returns (facts, how each other tracked script checks the server, the file's password
    for redaction)."""
    from ..clientfile import client_options_of, run_client
    from ..errors import CommandError
    from ..flavors.common import parse_grants
    from ..shipped import HOOKS_DIR

    found, others = conf.health_check(root, inst)
    if found is None:
        return None, others, ""
    script, defaults = found
    try:
        mode = os.stat(defaults).st_mode & 0o777
    except OSError:
        mode = -1
    try:
        with open(defaults, encoding="utf-8", errors="replace") as fh:
            options = client_options_of(fh.read())
    except OSError:
        options = {}
    password = options.pop("password", "")
    try:
        run_client(["/bin/sh", str(HOOKS_DIR / "check-mysql"), defaults], "check-mysql", timeout=10)
    except CommandError as exc:
        return HealthCheckFacts(script, defaults, mode, options, login_error=str(exc).split(": ", 1)[-1]), others, password
    server_id, grants_error = "", ""
    grants: Tuple[str, ...] = ()
    try:
        done = run_client([_mysql_client(), f"--defaults-file={defaults}", "--batch", "--skip-column-names",
                           "--execute", "SELECT @@server_id; SHOW GRANTS"], "the health check's account", timeout=10)
        lines = done.stdout.decode("utf-8", "replace").splitlines()
        server_id = lines[0].strip() if lines else ""
        grants, _ = parse_grants(lines[1:])  # privilege names only: the lines hold a password hash
    except CommandError as exc:
        grants_error = str(exc).split(": ", 1)[-1]
    return (HealthCheckFacts(script, defaults, mode, options, "", server_id, grants, grants_error), others, password)
