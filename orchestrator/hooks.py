"""Site hooks: configured commands run around a promotion or a switchover.

Each hook is an argv list run without a shell, in its own session (process group), with
stdin from /dev/null and a minimal environment: PATH, LANG and the ORCH_* context, never
anything inherited that could be a secret. Past ``hooks.timeout`` the whole group is
killed. A pre hook that fails or times out aborts what it guards; a post hook is best
effort. The promotion's hooks run as plan steps (RunHook, journaled with the other
steps); ``run_hooks`` serves commands that run them outside a plan (orch switchover).

Nothing here is imported unless a hook runs: no hooks configured costs nothing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TAIL_BYTES = 2000  # how much of a hook's output (stdout and stderr together) is kept
KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL of a timed-out hook's process group
CONTEXT_KEYS = ("ORCH_EVENT", "ORCH_CLUSTER", "ORCH_NODE", "ORCH_OLD_MASTER", "ORCH_NEW_MASTER", "ORCH_RUN_ID", "ORCH_REASON")


@dataclass(frozen=True)
class HookRun:
    """How one hook ran: its exit code (None when it could not start or was killed), milliseconds,
    the tail of its output (known secrets redacted), and what went wrong ("" when it exited 0)."""

    argv: Tuple[str, ...]
    exit_code: Optional[int]
    ms: int
    output: str = ""
    error: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.error

    def summary(self) -> str:
        head = self.error or f"exit {self.exit_code}"
        tail = " ".join(self.output.split())
        tail = tail[-300:] if len(tail) > 300 else tail
        return f"{head} in {self.ms} ms" + (f"; output: {tail}" if tail else "")


@dataclass(frozen=True)
class HookResult:
    """Every hook of a phase, in order; a pre phase stops at the first failure."""

    phase: str
    runs: Tuple[HookRun, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    def summary(self) -> str:
        if not self.runs:
            return f"no {self.phase} hooks"
        return "; ".join(f"{r.argv[0]}: {r.summary()}" for r in self.runs)


def environment(context: Mapping[str, str], phase: str) -> Dict[str, str]:
    """The whole environment a hook gets: PATH, LANG and the ORCH_* context (only those keys)."""
    env = {"PATH": SAFE_PATH, "LANG": os.environ.get("LANG") or "C.UTF-8"}
    for key in CONTEXT_KEYS:
        value = context.get(key)
        if value is not None:
            env[key] = str(value).replace("\0", "")
    env["ORCH_EVENT"] = str(context.get("ORCH_EVENT") or phase)
    return env


def run_hook(argv: Sequence[str], env: Mapping[str, str], timeout: float, secrets: Sequence[str] = ()) -> HookRun:
    """Run one hook to completion or to ``timeout`` seconds, then kill its process group.

    The output goes to an unlinked temporary file, not a pipe: a child the hook left in the
    background holding its output cannot make this wait.
    """
    import signal
    import subprocess
    import tempfile

    argv = tuple(argv)
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=dict(env),
                                    cwd="/", close_fds=True, start_new_session=True)
        except OSError as exc:
            return HookRun(argv, None, _ms(started), error=f"cannot run {argv[0]}: {exc.strerror or exc}")
        timed_out = False
        try:
            code: Optional[int] = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc.pid, signal.SIGKILL)  # whatever is left of the group, leader or not
            proc.wait()
            code = None
        output = _tail(out, secrets)
    ms = _ms(started)
    if timed_out:
        return HookRun(argv, code, ms, output, f"timed out after {timeout:g}s: killed with its process group", True)
    if code != 0:
        what = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        return HookRun(argv, code, ms, output, f"failed: {what}")
    return HookRun(argv, code, ms, output)


def run_hooks(cfg: Any, phase: str, context: Mapping[str, str]) -> HookResult:
    """Run every hook of ``phase`` (hooks.<phase> in the config) in order, each journaled by
    the caller from the result. A pre_* phase stops at the first failure (``ok`` False: abort
    what it guards); a post_* phase runs them all. ``context``: ORCH_* values (ORCH_EVENT
    defaults to the phase). No hooks: an empty, ok result, and nothing imported."""
    hooks = cfg.hooks.of(phase)
    runs: List[HookRun] = []
    env = environment(context, phase)
    for argv in hooks:
        run = run_hook(argv, env, cfg.hooks.timeout, cfg.secrets)
        (log.info if run.ok else log.error)("%s hook %s: %s", phase, argv[0], run.summary())
        runs.append(run)
        if not run.ok and phase.startswith("pre_"):
            break
    return HookResult(phase, tuple(runs))


def _kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(out: Any, secrets: Sequence[str]) -> str:
    from .logs import redact

    try:
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - TAIL_BYTES))
        text = out.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return redact(text, secrets).strip()


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
