"""Alerts: a JSON webhook and/or a mail after every run that matters to an operator.

Pure: which finished runs alert (``classify``), the alert itself (``alert_for``), whether an
identical one was sent within ``alerts.dedup_seconds`` (``dedup``), the webhook body and the
mail text. Effects: the dedup state (``state_dir/alerts.json``, replaced atomically) and the
sending, each transport in a daemon thread of its own so that nothing waits for it but the
process's exit, which waits at most the transport's timeout (``wait``, registered with atexit).

Only runs with ``alerts`` configured import this module; urllib and smtplib are imported in
the sending threads. A failure to send is a warning in the log, never an exception.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .config import Config, Smtp, Webhook

log = logging.getLogger("orchestrator.alerts")

STATE = "alerts.json"  # in state_dir: the dedup state shared by every orch process on this host
STATE_FORMAT = 1

# What an alert is about (the webhook's "event").
PROMOTION = "promotion"
REFUSAL = "refusal"
ANTI_FLAPPING = "anti-flapping"
SPLIT_BRAIN = "split-brain"
REJOIN = "rejoin"
REWIND = "rewind"
MAINTAINER = "maintainer"
FAILURE = "failure"
PAUSE = "pause"  # orch pause: automatic actions stop (maintenance mode)
RESUME = "resume"  # orch resume
WITHHELD = "withheld"  # a keepalived event's plan withheld in maintenance mode


@dataclass(frozen=True)
class Alert:
    """One alert, secrets already redacted from every text in it."""

    event: str  # one of the kinds above
    cluster: str
    node: str
    outcome: str  # the run's result: act, refused, failed, partial, incomplete (noop: an unresolved split brain)
    reason: str  # the plan's reason, then the error that stopped it (if one did)
    run_id: str
    time: str  # UTC, ISO 8601
    trigger: str  # the orch event: MASTER, BACKUP, REJOIN, MAINTAIN, SPLIT-BRAIN...
    by: str = ""  # the command that ran it, when not the event's own ("maintain")
    steps: Tuple[str, ...] = ()  # "[ok] fence server1: ..." as the executor reported them
    suppressed: Tuple[Tuple[str, int], ...] = ()  # (which alert, how many times) not sent since the last one

    @property
    def key(self) -> str:
        """What makes two alerts the same for deduplication: kind, node, outcome and reason,
        the reason's numbers masked (a repeated refusal says "promoted 12s ago", then "17s ago")."""
        import re

        return "\x1f".join((self.event, self.node, self.outcome, re.sub(r"\d+(?:\.\d+)?", "#", self.reason)))

    @property
    def title(self) -> str:
        titles = {
            PROMOTION: f"{self.node} promoted to master",
            REFUSAL: f"{self.node}: {self.trigger} refused",
            ANTI_FLAPPING: f"{self.node}: promotion blocked by anti-flapping",
            SPLIT_BRAIN: (f"SPLIT BRAIN: both servers writable, {self.node} cannot resolve it" if self.outcome == "noop"
                          else f"SPLIT BRAIN: second writer fenced ({self.node})"),
            REJOIN: f"{self.node} rejoined as a replica",
            REWIND: f"{self.node} rewound its divergent tail",
            MAINTAINER: f"{self.node}: maintainer {self.trigger} change",
            FAILURE: f"{self.node}: {self.trigger} FAILED",
            PAUSE: f"maintenance mode: automatic actions paused (orch pause on {self.node})",
            RESUME: f"maintenance mode ended: automatic actions resumed (orch resume on {self.node})",
            WITHHELD: f"{self.node}: {self.trigger} withheld (maintenance mode)",
        }
        title = titles.get(self.event, f"{self.node}: {self.event}")
        return title if self.outcome in ("act", "noop", "refused", "failed", "paused") else f"{title} ({self.outcome})"


def _steps_ok(record: Mapping[str, Any], name: str) -> bool:
    return any(isinstance(s, dict) and s.get("step") == name and s.get("result") == "ok" for s in record.get("steps") or ())


def classify(record: Mapping[str, Any]) -> Optional[str]:
    """The kind of alert a finished run's record calls for, or None (nothing an operator needs).

    ``record``: the journal's end record plus the plan's ``reason`` (what execute_plan has).
    """
    result = record.get("result")
    text = f"{record.get('reason', '')} {record.get('error', '')}".lower()
    if result == "refused":
        return ANTI_FLAPPING if "anti-flapping" in text else REFUSAL
    if result == "failed":
        return FAILURE
    if record.get("event") in ("PAUSE", "RESUME"):
        return PAUSE if record.get("event") == "PAUSE" else RESUME
    if result == "paused":
        return WITHHELD
    if record.get("event") == "SPLIT-BRAIN" or text.startswith("both servers are writable"):
        return SPLIT_BRAIN
    if _steps_ok(record, "Rewind"):
        return REWIND
    if _steps_ok(record, "SetWritable"):
        return PROMOTION
    if record.get("event") == "REJOIN" or _steps_ok(record, "ChangeSource"):
        return REJOIN
    if record.get("by") == "maintain" and any(isinstance(s, dict) and s.get("result") == "ok" for s in record.get("steps") or ()):
        return MAINTAINER
    return None


def utc_now(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def alert_for(cfg: Config, record: Mapping[str, Any], now: float) -> Optional[Alert]:
    """The alert for a finished run (None when it calls for none), secrets redacted."""
    from .logs import redact

    kind = classify(record)
    if kind is None:
        return None
    secrets = cfg.secrets
    reason = str(record.get("reason") or "")
    error = str(record.get("error") or "")
    if error and error not in reason:
        reason = f"{reason}; {error}" if reason else error
    steps = tuple(
        redact(f"[{s.get('result')}] {s.get('description')}" + (f": {s['detail']}" if s.get("detail") else ""), secrets)
        for s in record.get("steps") or () if isinstance(s, dict)
    )
    return Alert(event=kind, cluster=cfg.cluster, node=str(record.get("node") or cfg.self_name),
                 outcome=str(record.get("result") or ""), reason=redact(reason, secrets), run_id=str(record.get("id") or ""),
                 time=utc_now(now), trigger=str(record.get("event") or ""), by=str(record.get("by") or ""), steps=steps)


def _summary(alert: Alert) -> str:
    return f"{alert.event} on {alert.node}: {alert.reason[:120]}"


def dedup(state: Mapping[str, Any], alert: Alert, now: float, window: float) -> Tuple[bool, Dict[str, Any], Tuple[Tuple[str, int], ...]]:
    """(send?, the new state, what was suppressed since the last alert sent).

    An alert with the key of one sent less than ``window`` seconds ago is suppressed and
    counted; the next alert sent (any key) carries every count, which then restart at 0.
    Keys neither recent nor counted are dropped, so the state stays small.
    """
    keys: Dict[str, Dict[str, Any]] = {}
    raw = state.get("keys")
    for k, v in (raw.items() if isinstance(raw, dict) else ()):
        if isinstance(v, dict) and isinstance(v.get("last"), (int, float)) and isinstance(v.get("suppressed"), int):
            keys[k] = dict(v)
    if window <= 0:
        return True, {"format": STATE_FORMAT, "keys": keys}, ()
    entry = keys.get(alert.key)
    if entry is not None and 0 <= now - entry["last"] < window:  # a clock stepped back does not mute alerts
        entry["suppressed"] += 1
        return False, {"format": STATE_FORMAT, "keys": keys}, ()
    suppressed = tuple((str(v.get("what", "?")), v["suppressed"]) for v in keys.values() if v["suppressed"] > 0)
    kept = {k: {**v, "suppressed": 0} for k, v in keys.items() if 0 <= now - v["last"] < window}
    kept[alert.key] = {"last": now, "suppressed": 0, "what": _summary(alert)}
    return True, {"format": STATE_FORMAT, "keys": kept}, suppressed


def webhook_body(alert: Alert) -> Dict[str, Any]:
    """The JSON the webhook receives."""
    return {
        "event": alert.event, "cluster": alert.cluster, "node": alert.node, "outcome": alert.outcome,
        "reason": alert.reason, "run_id": alert.run_id, "time": alert.time, "trigger": alert.trigger,
        "by": alert.by, "summary": f"[{alert.cluster}] {alert.title}", "steps": list(alert.steps),
        "suppressed": sum(n for _, n in alert.suppressed),
        "suppressed_alerts": [{"alert": what, "count": n} for what, n in alert.suppressed],
    }


def mail_text(alert: Alert) -> Tuple[str, str]:
    """(subject, body) of the mail: a summary a person reads."""
    subject = f"[orch {alert.cluster}] {alert.title}"
    lines = [
        alert.title,
        "",
        f"cluster:  {alert.cluster}",
        f"node:     {alert.node}",
        f"event:    {alert.event} (orch event {alert.trigger}{', run by ' + alert.by if alert.by else ''})",
        f"outcome:  {alert.outcome}",
        f"reason:   {alert.reason}",
        f"run id:   {alert.run_id}",
        f"time:     {alert.time}",
    ]
    if alert.steps:
        lines += ["", "steps:"] + [f"  {s}" for s in alert.steps]
    if alert.suppressed:
        total = sum(n for _, n in alert.suppressed)
        lines += ["", f"suppressed since the last alert (identical within alerts.dedup_seconds): {total}"]
        lines += [f"  {n} x {what}" for what, n in alert.suppressed]
    lines += ["", f"The journal on {alert.node} has every step of run {alert.run_id}: orch status, or journal.jsonl in state_dir."]
    return subject, "\n".join(lines) + "\n"


# --- effects ---------------------------------------------------------------------------


def load_state(path: str) -> Dict[str, Any]:
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("alerts: dedup state %s unreadable (%s): starting afresh", path, getattr(exc, "strerror", None) or exc)
        return {}
    return data if isinstance(data, dict) else {}


def save_state(path: str, state: Mapping[str, Any]) -> None:
    """Replace the state file atomically (a reader sees the old or the new one, whole)."""
    from .statefile import replace_json

    replace_json(path, dict(state))


class _StateLock:
    """flock of ``alerts.json.lock`` around read-decide-write: most runs already hold the run
    lock, but the maintainer's split-brain alert does not. Waits LOCK_WAIT at most, then goes
    on unlocked (at worst one count is lost or one alert sent twice)."""

    LOCK_WAIT = 0.2

    def __init__(self, path: str) -> None:
        self.path = path + ".lock"
        self.fd = -1

    def __enter__(self) -> "_StateLock":
        import fcntl

        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return self
        deadline = time.monotonic() + self.LOCK_WAIT
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return self
                time.sleep(0.005)
            except OSError:
                return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock


def after_run(cfg: Config, record: Mapping[str, Any]) -> None:
    """Alert on a finished run when it calls for one and no identical alert went out recently.

    Called after the journal's end record. Never raises, never waits for the sending.
    """
    try:
        _after_run(cfg, record)
    except Exception as exc:  # an alert never breaks a run
        log.warning("alerts: not sent: %s: %s", type(exc).__name__, exc)


def _after_run(cfg: Config, record: Mapping[str, Any]) -> None:
    alerts = cfg.alerts
    if alerts is None:
        return
    now = time.time()
    alert = alert_for(cfg, record, now)
    if alert is None:
        return
    if alerts.dedup_seconds > 0:
        path = os.path.join(cfg.state_dir, STATE)
        with _StateLock(path):
            send, state, suppressed = dedup(load_state(path), alert, now, alerts.dedup_seconds)
            try:
                save_state(path, state)
            except OSError as exc:
                log.warning("alerts: cannot save the dedup state %s (%s): identical alerts are not held back", path, exc.strerror or exc)
        if not send:
            log.info("alert %s on %s suppressed: sent less than %gs ago (counted, reported with the next alert)",
                     alert.event, alert.node, alerts.dedup_seconds)
            return
        alert = replace(alert, suppressed=suppressed)
    send_alert(cfg, alert)


def send_alert(cfg: Config, alert: Alert) -> None:
    """Start sending ``alert`` through every configured transport, each in a daemon thread."""
    alerts = cfg.alerts
    if alerts is None:
        return
    log.info("alert: %s (%s)", alert.title, ", ".join(n for n, t in (("webhook", alerts.webhook), ("mail", alerts.smtp)) if t))
    if alerts.webhook is not None:
        _start(post_webhook, (alerts.webhook, alert), f"webhook to {_where(alerts.webhook.url)}", alerts.webhook.timeout)
    if alerts.smtp is not None:
        _start(send_mail, (alerts.smtp, alert), f"mail via {alerts.smtp.host}:{alerts.smtp.port}", alerts.smtp.timeout)


def _where(url: str) -> str:
    from urllib.parse import urlsplit  # light; urllib.request is imported in the thread

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"  # never the path or query: they often carry the token


def post_webhook(webhook: Webhook, alert: Alert) -> None:
    """POST the alert as JSON; a redirect is an error (it would carry the headers elsewhere)."""
    import json
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None

    body = json.dumps(webhook_body(alert)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "atlas-orchestrator", **dict(webhook.headers)}
    request = urllib.request.Request(webhook.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=webhook.timeout) as response:
            response.read(65536)
    except urllib.error.HTTPError as exc:
        raise SendError(f"HTTP {exc.code} {exc.reason}" + (" (redirects are not followed)" if 300 <= exc.code < 400 else "")) from None
    except urllib.error.URLError as exc:
        raise SendError(str(exc.reason)) from None


def send_mail(smtp: Smtp, alert: Alert) -> None:
    """Send the alert's summary by mail (STARTTLS and login when configured)."""
    import smtplib
    import socket
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    subject, text = mail_text(alert)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(smtp.to)
    msg["Date"] = formatdate(usegmt=True)
    # Given a domain, make_msgid does not resolve this host's name (a DNS wait).
    msg["Message-ID"] = make_msgid("orch", domain=smtp.sender.rsplit("@", 1)[-1].strip("> ") or "localhost")
    msg.set_content(text)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, local_hostname=socket.gethostname() or "localhost", timeout=smtp.timeout) as server:
            if smtp.starttls:
                import ssl

                server.starttls(context=ssl.create_default_context())
            if smtp.user:
                server.login(smtp.user, smtp.password)
            server.send_message(msg)
    except smtplib.SMTPException as exc:
        raise SendError(f"{type(exc).__name__}: {exc}") from None


class SendError(Exception):
    """A transport said no; the message is for the log."""


_sending: List[Tuple[threading.Thread, float, str, float]] = []  # (thread, deadline, what, timeout)
_lock = threading.Lock()
_registered = False


def _start(send: Callable[..., None], args: Sequence[Any], what: str, timeout: float) -> None:
    global _registered

    def run() -> None:
        started = time.monotonic()
        try:
            send(*args)
            log.info("alert sent: %s (%d ms)", what, (time.monotonic() - started) * 1000)
        except Exception as exc:  # a failure to send is a warning, never an error of the run
            detail = f"{exc}" if isinstance(exc, SendError) else f"{type(exc).__name__}: {exc}"
            log.warning("alert not sent: %s failed: %s", what, detail)

    thread = threading.Thread(target=run, name=f"alert {what}", daemon=True)
    with _lock:
        _sending[:] = [s for s in _sending if s[0].is_alive()]
        _sending.append((thread, time.monotonic() + timeout, what, timeout))
        if not _registered:
            import atexit

            atexit.register(wait)
            _registered = True
    thread.start()


def wait() -> None:
    """Let the sending threads finish, each until its own deadline (its transport's timeout
    after it started); at exit, so that the run itself never waits for an alert."""
    with _lock:
        sending = list(_sending)
    for thread, deadline, what, timeout in sending:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("alert not sent: %s: no answer within its timeout (%gs); given up", what, timeout)
