"""What both flavor modules use: the statement shape, the source heartbeat, version numbers.

Kept apart from the package's registry, which imports the flavor modules.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

Statement = Tuple[str, Tuple[Any, ...]]  # SQL with %s placeholders, parameters


# Seconds between the source's heartbeats to an idle replica (set by change_source): the
# replica's heartbeat count then proves within a second or two that its source is alive.
HEARTBEAT_PERIOD = 1.0


def version_tuple(version: str) -> Tuple[int, ...]:
    head = version.split("-")[0]
    out = []
    for part in head.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    while len(out) < 3:
        out.append(0)
    return tuple(out)


# --- what orch needs of a server, as orch doctor checks it (each flavor module adds its own) --

ON = ("ON", "1", "YES", "TRUE", "FORCE", "FORCE_PLUS_PERMANENT")  # a switch's values that mean on

# The server variables orch doctor reads on either flavor. One query reads these and both
# flavor modules' VARIABLES: a server answers only those it has.
VARIABLES = (
    "log_bin", "binlog_format", "binlog_row_image", "log_slave_updates", "server_id", "read_only",
    "auto_increment_increment", "auto_increment_offset",
    "extra_port",  # MariaDB's (and Percona's) port beyond max_connections
    # Semi-sync under MariaDB's names, which MySQL used before 8.0.26.
    "rpl_semi_sync_master_enabled", "rpl_semi_sync_slave_enabled", "rpl_semi_sync_master_timeout",
    "rpl_semi_sync_master_wait_point",
)

# A semi-sync setting's names: MySQL 8.0.26+'s, then MariaDB's (and older MySQL's).
SEMI_SYNC_NAMES = {
    "master_enabled": ("rpl_semi_sync_source_enabled", "rpl_semi_sync_master_enabled"),
    "slave_enabled": ("rpl_semi_sync_replica_enabled", "rpl_semi_sync_slave_enabled"),
    "timeout": ("rpl_semi_sync_source_timeout", "rpl_semi_sync_master_timeout"),
    "wait_point": ("rpl_semi_sync_source_wait_point", "rpl_semi_sync_master_wait_point"),
}


class Required:
    """Server settings orch needs: each variable's accepted values (upper case), how bad a
    difference is ("fail" or "warn"), and what orch doctor says (``failed`` may name a
    variable in braces, replaced by its value or "?")."""

    __slots__ = ("values", "status", "passed", "failed", "fix")

    def __init__(self, values: Dict[str, Tuple[str, ...]], status: str, passed: str, failed: str, fix: str) -> None:
        self.values, self.status, self.passed, self.failed, self.fix = values, status, passed, failed, fix

    def met(self, variables: Mapping[str, str]) -> bool:
        return all(str(variables.get(name) or "").upper() in accepted for name, accepted in self.values.items())

    def seen(self, variables: Mapping[str, str]) -> str:
        return self.failed.format(**{name: variables.get(name) or "?" for name in self.values})


def parse_grants(lines: Sequence[str]) -> Tuple[Tuple[str, ...], bool]:
    """Privilege names granted ON *.* (SHOW GRANTS) and whether any role is granted; never
    keeps a line (they hold password hashes)."""
    import re

    privileges: List[str] = []
    roles = False
    for line in lines:
        m = re.match(r"GRANT (.+?) ON \*\.\* TO ", line)
        if m:
            privileges += [p.strip().upper() for p in m.group(1).split(",") if p.strip()]
        elif re.match(r"GRANT [`'\"][^`'\"]+[`'\"](@[`'\"][^`'\"]*[`'\"])? TO ", line):
            roles = True
    return tuple(privileges), roles
