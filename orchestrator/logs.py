"""Logging set-up: stderr (and syslog when configured), run id on every line, secrets redacted."""

from __future__ import annotations

import logging
import os
from typing import Iterable

FORMAT = "%(asctime)s orch[%(process)d] %(levelname)s %(run_id)s %(name)s: %(message)s"


class RunContext(logging.Filter):
    """Adds the run id and masks every configured secret in the final message."""

    def __init__(self, run_id: str = "-", secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.run_id = run_id
        self.secrets = tuple(s for s in secrets if s and len(s) >= 3)

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = self.run_id
        if self.secrets:
            msg = record.getMessage()
            for s in self.secrets:
                msg = msg.replace(s, "***")
            record.msg, record.args = msg, None
        return True


_context = RunContext()


def setup(verbose: bool = False) -> None:
    root = logging.getLogger()
    if getattr(root, "_orch_configured", False):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_context)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root._orch_configured = True  # type: ignore[attr-defined]


def configure_run(run_id: str, secrets: Iterable[str], syslog: bool = False) -> None:
    _context.run_id = run_id
    _context.secrets = tuple(s for s in secrets if s and len(s) >= 3)
    if syslog and os.path.exists("/dev/log"):
        import logging.handlers  # deferred: pulls in pickle and socket, ~7 ms of hook start-up

        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("orch[%(process)d]: %(levelname)s %(run_id)s %(message)s"))
        handler.addFilter(_context)
        logging.getLogger().addHandler(handler)


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, "***")
    return text


def current_secrets() -> tuple:
    return _context.secrets
