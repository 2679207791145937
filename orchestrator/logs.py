"""Logging set-up: stderr (and syslog when configured), run id on every line, secrets redacted."""

from __future__ import annotations

import logging
import os
from typing import Iterable, Optional

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
_syslog: Optional[logging.Handler] = None
SYSLOG_ADDRESS = "/dev/log"
# Set by hooks/keepalived-notify when its log file cannot be opened: log to syslog too.
SYSLOG_ENV = "ORCH_SYSLOG"
UNOPENED_LOG_ENV = "ORCH_NOTIFY_LOG_UNOPENED"


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
    if os.environ.get(SYSLOG_ENV) == "1":
        _add_syslog()
    unopened = os.environ.get(UNOPENED_LOG_ENV)
    if unopened:
        logging.getLogger("orchestrator").warning(
            "keepalived-notify could not open its log %s: orch logs to syslog and stderr instead", unopened)


def _add_syslog() -> None:
    global _syslog
    if _syslog is not None or not os.path.exists(SYSLOG_ADDRESS):
        return
    import logging.handlers  # deferred: pulls in pickle and socket, ~7 ms of hook start-up

    try:
        handler = logging.handlers.SysLogHandler(address=SYSLOG_ADDRESS)
    except OSError as exc:  # no syslog daemon listening: stderr is all there is
        logging.getLogger("orchestrator").warning("syslog %s unusable: %s", SYSLOG_ADDRESS, exc.strerror or exc)
        return
    handler.setFormatter(logging.Formatter("orch[%(process)d]: %(levelname)s %(run_id)s %(message)s"))
    handler.addFilter(_context)
    logging.getLogger().addHandler(handler)
    _syslog = handler


def configure_run(run_id: str, secrets: Iterable[str], syslog: bool = False) -> None:
    _context.run_id = run_id
    _context.secrets = tuple(s for s in secrets if s and len(s) >= 3)
    if syslog or os.environ.get(SYSLOG_ENV) == "1":
        _add_syslog()


def to_syslog(level: int, message: str) -> None:
    """Send one message to syslog only (when it is on): for what the CLI prints to stderr itself."""
    if _syslog is None:
        return
    _syslog.handle(logging.LogRecord("orchestrator", level, __file__, 0, message, None, None))  # its filter adds the run id


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, "***")
    return text


def current_secrets() -> tuple:
    return _context.secrets
