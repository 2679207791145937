"""The sandbox behind ``orch lab``: the lab a directory holds, of either kind.

Kept apart from ``base.py``, which both labs import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from orchestrator.lab import LabError
from orchestrator.lab.base import STATE_FILE, Lab
from orchestrator.lab.hosts import Host
from orchestrator.lab.loopback import LoopbackLab
from orchestrator.lab.netns import NetnsLab


def load_lab(workdir: str) -> Optional[Lab]:
    """The lab recorded in ``workdir``, or None."""
    path = Path(workdir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"{path}: unreadable lab state: {exc}") from None
    hosts = [Host(**h) for h in state["hosts"]]
    if state["mode"] == "netns":
        lab: Lab = NetnsLab.from_state(state, hosts)
    else:
        lab = LoopbackLab.from_state(state, hosts)
    lab.adopt(state)
    return lab
