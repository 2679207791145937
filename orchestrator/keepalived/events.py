"""keepalived's events: the states a VRRP instance or sync group reports, and the line its
``notify_fifo`` writes for each change.

keepalived tells orch of a state change two ways: a ``notify`` script called with
``TYPE NAME STATE PRIORITY`` (orch notify, read by cli.py), or one line per change in its
notify FIFO (``INSTANCE "VI_1" MASTER 100``, ``GROUP "G1" BACKUP``; orch notify-fifo).
Both say the same four things; this module names them. It is on the notify hook's path:
it imports nothing new, and compiles its pattern only when a FIFO line is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from typing import Optional, Tuple

# The states orch acts on (decide.py plans one for each).
MASTER = "MASTER"
BACKUP = "BACKUP"
FAULT = "FAULT"
STOP = "STOP"
DELETED = "DELETED"
STATES = (MASTER, BACKUP, FAULT, STOP, DELETED)
# What reports the state: one VRRP instance, or a sync group of them.
TYPES = ("INSTANCE", "GROUP")

# keepalived quotes the name; older versions and hand-written tests may not.
LINE = r'^(?P<type>[A-Z_]+)\s+(?:"(?P<quoted>[^"]*)"|(?P<bare>\S+))\s+(?P<state>[A-Z_]+)(?:\s+(?P<priority>-?\d+))?\s*$'
_line: Optional[re.Pattern[str]] = None


@dataclass(frozen=True)
class Event:
    """One state change: what reports it (INSTANCE or GROUP), its name and its new state."""

    type: str
    name: str
    state: str

    @property
    def key(self) -> Tuple[str, str]:
        return (self.type, self.name)

    def __str__(self) -> str:
        return f'{self.type} "{self.name}" {self.state}'


def parse_line(line: str) -> Tuple[Optional[Event], str]:
    """(event, "") for a state change orch acts on; (None, why) for anything else.

    ``why`` starts with "ignored" for well-formed lines orch has no business with (other
    keepalived notifications such as MASTER_RX_LOWER_PRI), else it says what is wrong.
    """
    global _line
    if _line is None:
        _line = re.compile(LINE)
    m = _line.match(line)
    if not m:
        return None, "malformed: expected TYPE \"NAME\" STATE [PRIORITY]"
    name = m.group("quoted") if m.group("quoted") is not None else m.group("bare")
    if m.group("type") not in TYPES:
        return None, f"ignored: type {m.group('type')} is not INSTANCE or GROUP"
    if not name:
        return None, "malformed: empty name"
    if m.group("state") not in STATES:
        return None, f"ignored: state {m.group('state')} is not one orch acts on"
    return Event(m.group("type"), name, m.group("state")), ""


def notify_call_error(type_: str, state: str, priority: Optional[str]) -> str:
    """What is wrong with a notify script's ``TYPE ... STATE [PRIORITY]`` ("" when nothing)."""
    if type_ not in TYPES:
        return f"TYPE must be INSTANCE or GROUP, got {type_!r}"
    if state not in STATES:
        return f"STATE must be one of {', '.join(STATES)}, got {state!r}"
    if priority is not None and not priority.lstrip("-").isdigit():
        return f"PRIORITY must be an integer, got {priority!r}"
    return ""
