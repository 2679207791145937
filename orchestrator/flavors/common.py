"""What both flavor modules use: the statement shape, the source heartbeat, version numbers.

Kept apart from the package's registry, which imports the flavor modules.
"""

from __future__ import annotations

from typing import Any, Tuple

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
