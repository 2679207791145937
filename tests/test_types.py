"""The type checker runs over the package (its settings: [tool.mypy] in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_error_in_the_package():
    proc = subprocess.run([sys.executable, "-m", "mypy", "orchestrator/"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # no mypy: it is in the test extra (./dev setup)
