"""Files shipped beside the code: the keepalived hooks and the example configs.

In the source tree they are hooks/ and conf/ (the source of truth); a built wheel
carries copies under orchestrator/_shipped/ (setup.py copies them at build time).
The console scripts orch-keepalived-notify and orch-check-mysql exec those hooks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

_PACKAGE = Path(__file__).resolve().parent
_SOURCE_TREE = _PACKAGE.parent


def _shipped(name: str) -> Path:
    # The source tree (a checkout, an editable install) first: edits there take effect.
    tree = _SOURCE_TREE / name
    if (_SOURCE_TREE / "pyproject.toml").is_file() and tree.is_dir():
        return tree
    return _PACKAGE / "_shipped" / name


HOOKS_DIR = _shipped("hooks")
CONF_DIR = _shipped("conf")


def _exec_hook(script: str, argv: Optional[List[str]]) -> int:
    path = HOOKS_DIR / script
    if not path.is_file():
        print(f"orch-{script}: {path} is missing: a broken install of atlas-orchestrator", file=sys.stderr)
        return 2
    # The notify hook looks for orch in fixed places; the orch next to this script is the right one.
    here = Path(sys.argv[0]).resolve().parent / "orch" if sys.argv and sys.argv[0] else None
    if here is not None and here.is_file() and "ORCH_BIN" not in os.environ:
        os.environ["ORCH_BIN"] = str(here)
    args = sys.argv[1:] if argv is None else argv
    os.execv("/bin/sh", ["/bin/sh", str(path), *args])
    return 127  # not reached


def _event_args(args: List[str]) -> List[str]:
    """What follows the hook's own options (as hooks/keepalived-notify reads them)."""
    i = 0
    while i < len(args) and args[i] in ("-c", "--config", "--node", "--log", "--orch"):
        i += 2
    rest = args[i:]
    return [] if rest[:1] in (["-h"], ["--help"]) else rest


def keepalived_notify(argv: Optional[List[str]] = None) -> int:
    """Console script orch-keepalived-notify: hooks/keepalived-notify."""
    args = sys.argv[1:] if argv is None else argv
    # keepalived always appends TYPE NAME STATE PRIORITY; without them the hook would only
    # write orch's usage error into the notify log, where nobody running it by hand looks.
    if len(_event_args(args)) < 4:
        print("usage: orch-keepalived-notify [-c CONFIG] [--node NODE] [--log FILE] [--orch ORCH] TYPE NAME STATE PRIORITY"
              " (keepalived's notify arguments; output goes to the log, default /var/log/orch/notify.log)", file=sys.stderr)
        return 2
    return _exec_hook("keepalived-notify", args)


def check_mysql(argv: Optional[List[str]] = None) -> int:
    """Console script orch-check-mysql: hooks/check-mysql."""
    return _exec_hook("check-mysql", argv)
