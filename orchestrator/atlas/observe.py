"""Read every configured Atlas's backend list (the observe half of the Atlas door)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Mapping, Optional, Tuple

from ..config import AtlasInstance, Config
from ..errors import AtlasError
from ..model import AtlasState

if TYPE_CHECKING:  # the Atlas client is imported only where an Atlas is configured
    from .client import AtlasAdmin

log = logging.getLogger(__name__)


def admin_for(atlas: AtlasInstance) -> AtlasAdmin:
    # The client (and pymysql with it) is imported only when an Atlas is configured.
    from .client import AtlasAdmin

    return AtlasAdmin(atlas.host, atlas.port, atlas.user, atlas.password, timeout=atlas.timeout, name=atlas.name)


def read_atlas(admin: AtlasAdmin, name: str) -> AtlasState:
    try:
        rows = admin.backends()
    except AtlasError as exc:
        admin.close()
        return AtlasState(name=name, reachable=False, error=str(exc))
    return AtlasState(name=name, reachable=True, backends=tuple(rows))


def read_config_file(state: AtlasState, atlas: AtlasInstance) -> AtlasState:
    """Add what Atlas's config file lists as read-only backends (persist: rewrite only),
    so that a rewrite that failed after an earlier change is noticed and done again."""
    if not state.reachable or atlas.persist != "rewrite" or not atlas.config_file:
        return state
    from .configfile import read_ro_backends

    try:
        listed = tuple(address for address, _ in read_ro_backends(atlas.config_file))
    except AtlasError as exc:
        return replace(state, config_file=atlas.config_file, config_error=str(exc))
    return replace(state, config_file=atlas.config_file, config_ro=listed)


def observe_atlas(cfg: Config, admins: Optional[Mapping[str, AtlasAdmin]] = None) -> Tuple[AtlasState, ...]:
    """One state per configured Atlas; an unreachable one is marked, not raised."""
    out = []
    for atlas in cfg.atlas:
        admin = admins[atlas.name] if admins is not None else admin_for(atlas)
        try:
            out.append(read_config_file(read_atlas(admin, atlas.name), atlas))
        finally:
            if admins is None:
                admin.close()
    return tuple(out)
