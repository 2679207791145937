"""Compile once the methods ``dataclasses`` generates, for the notify hook's start-up.

Each frozen dataclass costs about six ``exec`` calls of generated source when its module
is imported (__init__, __repr__, __eq__, __hash__, __setattr__, __delattr__), about a
tenth of a millisecond each: some 20 ms of keepalived's notify path, before anything is
observed. ``install()`` makes ``dataclasses`` execute code objects compiled once from
exactly that source text and kept beside this module's bytecode in ``__pycache__``
(keyed by the whole text, for this interpreter build only), so the classes are exactly
what dataclasses makes; a text not in the copy is compiled as usual and ``save()`` adds
it. The copy is trusted like the ``.pyc`` files next to it, and only when its owner is
this user or root and nobody else can write it.
"""

from __future__ import annotations

import builtins
import marshal
import os
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

FORMAT = 1
MAX_ENTRIES = 1500  # past this, a save keeps only what this process used (stale source is dropped)

_compiled: Dict[str, Any] = {}
_used: Dict[str, Any] = {}
_added: Dict[str, Any] = {}


def cache_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__",
                        f"dataclass-methods.{sys.implementation.cache_tag}.marshal")


def _exec(source: Any, globals: Optional[Dict[str, Any]] = None, locals: Optional[Dict[str, Any]] = None) -> None:
    if type(source) is str:
        code = _compiled.get(source)
        if code is None:
            # dont_inherit: exec() in dataclasses compiles with its own (no) __future__ flags, not this module's.
            code = compile(source, "<string>", "exec", dont_inherit=True)
            _added[source] = code
        _used[source] = code
        source = code
    builtins.exec(source, globals, locals)


def install() -> None:
    """Make ``dataclasses`` use the compiled copy from now on (idempotent)."""
    dataclasses = _import_dataclasses()
    if getattr(dataclasses, "exec", None) is _exec:
        return
    _compiled.update(_load(cache_path()))
    # dataclasses calls exec(source, globals, namespace) for every method it makes; a
    # module global of that name is looked up before the builtin.
    dataclasses.exec = _exec  # type: ignore[attr-defined]


def _import_dataclasses() -> Any:
    """``import dataclasses``, with the inspect module it imports (and ast and dis with it,
    ~7 ms) and copy put off until used: dataclasses uses inspect only to write a signature
    into a class that has no docstring (every class on the notify path has one), and copy
    only in asdict() and astuple()."""
    from .lazy import deferred

    with deferred("inspect", "copy"):
        import dataclasses
    return dataclasses


def _load(path: str) -> Dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            return {}
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = marshal.loads(fh.read())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("python") != sys.version:
        return {}
    code = data.get("code")
    if not isinstance(code, dict):
        return {}
    return {k: v for k, v in code.items() if isinstance(k, str) and isinstance(v, types.CodeType)}


def save() -> None:
    """Add what was compiled in this process to the copy; quietly nothing when it cannot be written."""
    if not _added or sys.dont_write_bytecode:
        return
    path = cache_path()
    entries = {**_load(path), **_added}
    if len(entries) > MAX_ENTRIES:
        entries = {**_used, **_added}
    from .statefile import replace_bytes

    try:
        # Readable by all, as the bytecode beside it; written only by its owner.
        replace_bytes(path, marshal.dumps({"format": FORMAT, "python": sys.version, "code": entries}), mode=0o644)
    except (OSError, ValueError):
        return
    _compiled.update(_added)
    _added.clear()
