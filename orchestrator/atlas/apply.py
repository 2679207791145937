"""Perform Atlas steps (add/remove read-only backends) and persist them to Atlas's config.

Best effort by design: Atlas being down must never block or fail a database failover.
Failures are returned as failed step results (journaled by the caller) and the
maintainer re-applies what is missing on its next pass; a config file left stale by a
failed rewrite is rewritten by the maintainer's PersistBackends step.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, List, Mapping, Optional, Sequence

from ..config import AtlasInstance, Config
from ..errors import AtlasError, OrchError
from ..plan import AddBackend, AtlasStep, PersistBackends, RemoveBackend, StepResult

if TYPE_CHECKING:
    from .client import AtlasAdmin

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3  # Atlas restarting: a few quick tries, bounded so a hook never hangs on it
CONNECT_WAIT = 0.2


def _connect(admin: AtlasAdmin) -> None:
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

    retry(
        stop=stop_after_attempt(CONNECT_ATTEMPTS),
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
            _connect(admin)
            for step in mine:
                try:
                    if isinstance(step, RemoveBackend):
                        done = admin.remove_backend(step.address, "ro")
                        detail = "removed" if done else "was not a backend"
                        if admin.last_incidents:
                            detail += "; " + "; ".join(admin.last_incidents)
                    elif isinstance(step, AddBackend):
                        done = admin.add_slave(step.address)
                        detail = "added" if done else "already a backend"
                    else:
                        raise OrchError(f"not an Atlas step: {step!r}")
                    changed = changed or done
                    log.info("atlas %s: %s: %s", name, step.describe(), detail)
                    results.append(StepResult(type(step).__name__, step.describe(), "ok", detail))
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
