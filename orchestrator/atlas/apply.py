"""Perform Atlas steps (add/remove read-only backends, set the read/write backend offline
or online) and persist the read-only backends to Atlas's config.

Best effort by design: Atlas being down must never block or fail a database failover.
Failures are returned as failed step results (journaled by the caller) and the
maintainer re-applies what is missing on its next pass; a config file left stale by a
failed rewrite is rewritten by the maintainer's PersistBackends step.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, List, Mapping, Optional, Sequence

from ..config import AtlasInstance, Config
from ..errors import AtlasError, OrchError
from ..plan import ATLAS_FIRST, AddBackend, AtlasStep, PersistBackends, RemoveBackend, SetRwOffline, SetRwOnline, StepResult

if TYPE_CHECKING:  # the Atlas client is imported only where an Atlas is configured
    from .client import AtlasAdmin

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3  # Atlas restarting: a few quick tries, bounded so a hook never hangs on it
CONNECT_WAIT = 0.2


def _connect(admin: AtlasAdmin, attempts: int = CONNECT_ATTEMPTS) -> None:
    try:
        admin.connect()
        return
    except AtlasError:
        if attempts <= 1:
            raise
    # Atlas restarting: the other attempts, CONNECT_WAIT apart. tenacity (typing, inspect,
    # asyncio: ~30 ms) is imported only now, never on the hook's usual path.
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

    time.sleep(CONNECT_WAIT)
    retry(
        stop=stop_after_attempt(attempts - 1),
        wait=wait_fixed(CONNECT_WAIT),
        retry=retry_if_exception_type(AtlasError),
        reraise=True,
    )(admin.connect)()


def persist(admin: AtlasAdmin, atlas: AtlasInstance) -> str:
    """Make Atlas's next start come back with the runtime read-only backends."""
    if atlas.persist == "none":
        return ""
    if atlas.persist == "save_config":
        admin.save_config()
        return "SAVE CONFIG"
    from .configfile import rewrite_ro_backends

    ro = [b.address for b in admin.backends() if b.type == "ro"]
    changed = rewrite_ro_backends(atlas.config_file, ro)
    if changed:
        log.info("atlas %s: %s now lists read-only backends %s", atlas.name, atlas.config_file, ",".join(ro) or "(none)")
    return f"{atlas.config_file} rewritten" if changed else f"{atlas.config_file} already right"


def _rw_addresses(admin: AtlasAdmin, address: str, state: str = "") -> list[str]:
    """The read/write backends a step names: its address, or every rw entry (in ``state``)."""
    if address:
        return [address]
    return [b.address for b in admin.backends() if b.type == "rw" and (not state or b.state == state)]


def _set_rw(admin: AtlasAdmin, step: SetRwOffline | SetRwOnline) -> str:
    offline = isinstance(step, SetRwOffline)
    addresses = _rw_addresses(admin, step.address, "" if offline else "offline")
    if not addresses:
        return "no read/write backend listed" if offline else "no read/write backend is offline"
    done = []
    for address in addresses:
        changed = admin.set_offline(address) if offline else admin.set_online(address)
        word = "offline" if offline else "online"
        done.append(f"{address} set {word}" if changed else f"{address} {'offline already' if offline else 'not offline'}")
    return "; ".join(done)


def _remove_after_rw_up(admin: AtlasAdmin, step: RemoveBackend) -> tuple[bool, str]:
    """(removed, detail) for a new master's own entry: only once a read/write backend is up."""
    rw = [b for b in admin.backends() if b.type == "rw"]
    if not any(b.state == "up" for b in rw):
        states = ", ".join(f"{b.address} {b.state}" for b in rw) or "none listed"
        return False, (f"kept: Atlas's read/write backend is not up ({states}), so {step.address} is the only server "
                       f"it can send reads to; the maintainer removes it once the read/write backend is up")
    done = admin.remove_backend(step.address, "ro")
    return done, "removed" if done else "was not a backend"


def run_atlas_steps(
    cfg: Config, steps: Sequence[AtlasStep], admins: Optional[Mapping[str, AtlasAdmin]] = None,
) -> List[StepResult]:
    """Apply steps grouped by Atlas, one connection each; never raises for Atlas failures."""
    from .observe import admin_for

    results: List[StepResult] = []
    by_name = {a.name: a for a in cfg.atlas}
    for name in dict.fromkeys(s.atlas for s in steps):
        atlas = by_name[name]
        mine = [s for s in steps if s.atlas == name]
        admin = admins[name] if admins is not None else admin_for(atlas)
        changed = False
        rewrite = [s for s in mine if isinstance(s, PersistBackends)]
        mine = [s for s in mine if not isinstance(s, PersistBackends)]
        try:
            # Before the database steps (SET OFFLINE) a single try: a dead Atlas must not delay the failover.
            _connect(admin, 1 if all(s.phase is ATLAS_FIRST for s in mine + rewrite) else CONNECT_ATTEMPTS)
            for step in mine:
                try:
                    outcome = "ok"
                    admin.last_incidents = []
                    if isinstance(step, RemoveBackend) and step.after_rw_up:
                        done, detail = _remove_after_rw_up(admin, step)
                        outcome = "ok" if not detail.startswith("kept") else "skipped"
                    elif isinstance(step, RemoveBackend):
                        done = admin.remove_backend(step.address, "ro")
                        detail = "removed" if done else "was not a backend"
                    elif isinstance(step, AddBackend):
                        done = admin.add_slave(step.address)
                        detail = "added" if done else "already a backend"
                    elif isinstance(step, (SetRwOffline, SetRwOnline)):
                        detail = _set_rw(admin, step)
                        done = False  # the backends' state is not in the config file
                    else:
                        raise OrchError(f"not an Atlas step: {step!r}")
                    if admin.last_incidents:
                        detail += "; " + "; ".join(admin.last_incidents)
                    changed = changed or done
                    log.info("atlas %s: %s: %s", name, step.describe(), detail)
                    results.append(StepResult(type(step).__name__, step.describe(), outcome, detail))
                except (AtlasError, ValueError) as exc:
                    log.error("atlas %s: %s failed: %s (the maintainer retries)", name, step.describe(), exc)
                    results.append(StepResult(type(step).__name__, step.describe(), "failed", str(exc)))
            if changed or rewrite:
                kind, what = (type(rewrite[0]).__name__, rewrite[0].describe()) if rewrite else (
                    "Persist", f"persist Atlas {name}'s read-only backends")
                try:
                    detail = persist(admin, atlas)
                    if detail or rewrite:
                        results.append(StepResult(kind, what, "ok", detail or "nothing to persist (persist: none)"))
                except (AtlasError, OSError, ValueError) as exc:
                    retry = " (the maintainer rewrites it on its next pass)" if atlas.persist == "rewrite" else ""
                    log.error("atlas %s: persisting the backends failed: %s%s", name, exc, retry)
                    results.append(StepResult(kind, what, "failed", str(exc)))
        except AtlasError as exc:
            log.error("atlas %s: %s (its steps are left to the maintainer)", name, exc)
            results += [StepResult(type(s).__name__, s.describe(), "failed", str(exc)) for s in mine + rewrite]
        finally:
            if admins is None:
                admin.close()
    return results
