"""Read every configured Atlas's backend list (the observe half of the Atlas door)."""

from __future__ import annotations

import logging
from typing import Tuple

from ..config import AtlasInstance, Config
from ..errors import AtlasError
from ..model import AtlasState

log = logging.getLogger(__name__)


def admin_for(atlas: AtlasInstance):  # -> AtlasAdmin; typed loosely to keep pymysql off import paths
    from .client import AtlasAdmin

    return AtlasAdmin(atlas.host, atlas.port, atlas.user, atlas.password, timeout=atlas.timeout, name=atlas.name)


def read_atlas(admin, name: str) -> AtlasState:
    try:
        rows = admin.backends()
    except AtlasError as exc:
        admin.close()
        return AtlasState(name=name, reachable=False, error=str(exc))
    return AtlasState(name=name, reachable=True, backends=tuple(rows))


def observe_atlas(cfg: Config, admins=None) -> Tuple[AtlasState, ...]:
    """One state per configured Atlas; an unreachable one is marked, not raised."""
    out = []
    for atlas in cfg.atlas:
        admin = admins[atlas.name] if admins is not None else admin_for(atlas)
        try:
            out.append(read_atlas(admin, atlas.name))
        finally:
            if admins is None:
                admin.close()
    return tuple(out)
