"""Shared by the benchmark scripts: measure `orch` as production installs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def regular_install(base: Path) -> str:
    """A regular (non-editable) install of this tree into a throwaway venv; its `orch`.

    The development venv's editable install adds an import hook (~10 ms) that
    production installs do not have.
    """
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return str(venv / "bin" / "orch")
