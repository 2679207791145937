"""Build hook: copy hooks/ and conf/ (the source of truth) into the wheel as package data.

Everything else is in pyproject.toml. orchestrator/shipped.py finds the copies
(orchestrator/_shipped/) when the package runs outside the source tree.
"""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("hooks", "conf")


class BuildWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        for name in SHIPPED:
            source = os.path.join(here, name)
            target = os.path.join(self.build_lib, "orchestrator", "_shipped", name)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)  # keeps the hooks' mode 0755


setup(cmdclass={"build_py": BuildWithShippedFiles})
