"""The configuration schema's machinery: keys as dataclass fields, one reader, the reference.

A section of the config file is a frozen dataclass whose fields are made by ``setting()``:
the YAML key, its default, bounds or choices and one line of help live in the field's
metadata, nowhere else. ``read()`` walks a section's mapping against those fields
(unknown keys, types, bounds, choices), collecting every problem with its path; then the
section's own check (``@checks(cls)``), if it has one, says what no single field can.
``paths()`` lists every key and ``tables()`` renders them as Markdown. Nothing here reads
a file; orchestrator/config.py holds the sections themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .errors import ConfigError

_SPEC = frozenset(("key", "lo", "hi", "choices", "check", "read", "section", "keys", "each", "under", "custom", "either",
                   "shown_type", "shown_default"))


def setting(default: Any = MISSING, help: str = "", *, required: bool = False, positional: bool = False,
            repr: bool = True, **spec: Any) -> Any:
    """A key of the config file: a dataclass field whose metadata read() and tables() use.

    ``default``: the value when the key is absent (none: the key is required). In ``spec``:
    ``key``, the YAML name when it is not the attribute's; ``lo``/``hi`` bounds and
    ``choices`` the values allowed. The annotation gives the type (str, int, float, bool)
    unless ``check(value, meta)`` reads the value (ValueError: the problem), ``read(value,
    path, reading)`` reads a structure (``each``: (its element's class, path suffix) for
    paths()), or ``section`` (implied by a dataclass default) is a nested section read by its
    own fields (``keys``: only these). ``under``: the key sits in that sub-mapping (``log:``).
    ``custom``: the section's check reads it. ``either``: required unless that key is given.
    ``shown_type``/``shown_default``: what tables() says where it cannot derive it.
    ``required``/``positional`` split the YAML default from the class's: a key required in
    YAML whose class has a default; a YAML default the class cannot have (a field before
    required ones)."""
    if spec.keys() - _SPEC:
        raise TypeError(f"setting(): unknown {', '.join(sorted(spec.keys() - _SPEC))}")
    if "section" not in spec and is_dataclass(default) and not isinstance(default, type):
        spec["section"] = type(default)
    spec["help"] = help
    spec["default"] = MISSING if required else default
    return field(default=MISSING if positional else default, repr=repr, metadata=spec)


_CHECKS: Dict[Any, Any] = {}


def checks(cls: Any) -> Any:
    """Register ``check(cls, values, raw, path, reading) -> instance``: what a section says
    beyond its fields, run after they are read (a subclass inherits it)."""
    def register(check: Any) -> Any:
        _CHECKS[cls] = check
        return check
    return register


class Reading:
    """The problems found so far, and what relative paths in the file are relative to."""

    def __init__(self, base_dir: str = "", self_override: Optional[str] = None) -> None:
        self.items: List[str] = []
        self.base_dir = base_dir or os.getcwd()
        self.self_override = self_override

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


_ABSENT = object()
_ZERO = {"str": "", "int": 0, "float": 0.0, "bool": False}


def join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def mapping(raw: Any, path: str, reading: Reading) -> Mapping[str, Any]:
    """``raw`` as a mapping: None is an empty one, anything else a problem."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        reading.add(path, "expected a mapping")
        return {}
    return raw


def as_mapping(raw: Any) -> Mapping[str, Any]:
    return raw if isinstance(raw, Mapping) else {}


def _unknown_keys(m: Mapping[str, Any], path: str, known: Any, reading: Reading) -> None:
    """A misspelt key must not silently fall back to its default."""
    for key in m:
        if key not in known:
            reading.add(join(path, key), "unknown key")


def key(f: Any) -> str:
    return f.metadata.get("key") or f.name


_SETTINGS: Dict[Any, Any] = {}


def settings(cls: Any, keys: Tuple[str, ...] = ()) -> List[Any]:
    """cls's fields that are keys of the file (all, or those named in ``keys``)."""
    found = _SETTINGS.get((cls, keys))
    if found is None:
        found = _SETTINGS[cls, keys] = [f for f in fields(cls) if "help" in f.metadata and (not keys or key(f) in keys)]
    return found


class _Plan:
    """How read() walks one section, worked out once per class (the notify hook parses the
    config on every event)."""

    def __init__(self, cls: Any, keys: Tuple[str, ...]) -> None:
        found = settings(cls, keys)
        self.known = frozenset(f.metadata.get("under") or key(f) for f in found)
        # (field, its YAML key, the group it is under or "")
        self.steps = [(f, key(f), f.metadata.get("under", "")) for f in found]
        self.groups: Dict[str, Any] = {}  # group -> (its keys, holds a required key)
        for f, name, under in self.steps:
            if under:
                names, required = self.groups.get(under, ((), False))
                self.groups[under] = (names + (name,), required or (f.metadata["default"] is MISSING and not f.metadata.get("custom")))
        self.check = next((_CHECKS[k] for k in cls.__mro__ if k in _CHECKS), None)


_PLANS: Dict[Any, _Plan] = {}


def read(cls: Any, raw: Any, path: str, reading: Reading, keys: Tuple[str, ...] = (),
         given: Optional[Dict[str, Any]] = None, defaults: Optional[Dict[str, Any]] = None) -> Any:
    """One section: its mapping against cls's settings, then the section's check; problems
    go to ``reading``. ``given``: values that are not keys (a node's name); ``defaults``:
    ones known only here (an Atlas instance's name by its position)."""
    plan = _PLANS.get((cls, keys))
    if plan is None:
        plan = _PLANS[cls, keys] = _Plan(cls, keys)
    m = mapping(raw, path, reading)
    _unknown_keys(m, path, plan.known, reading)
    values = dict(given or {})
    groups: Dict[str, Any] = {}
    for f, name, under in plan.steps:
        meta = f.metadata
        default = defaults.get(f.name, meta["default"]) if defaults else meta["default"]
        source, where = m, path
        if under:
            where = join(path, under)
            if under not in groups:
                groups[under] = _group(m, under, where, plan.groups[under], reading)
            source = groups[under]
        if meta.get("custom"):
            continue
        if source is None:  # a group left out: its keys are not read
            values[f.name] = _ZERO.get(f.type) if default is MISSING else default
            continue
        values[f.name] = _value(f, source.get(name, _ABSENT), default, join(where, name), reading)
    return plan.check(cls, values, raw, path, reading) if plan.check else cls(**values)


def _group(m: Mapping[str, Any], under: str, path: str, spec: Any, reading: Reading) -> Any:
    """The sub-mapping ``under`` (atlas's ``admin``, ``log``), or None when it is absent or
    empty (then its keys are not read; absent and holding a required key: missing)."""
    names, required = spec
    raw = m.get(under)
    if raw is None and required:
        reading.add(path, "missing")
    g = mapping(raw, path, reading)
    _unknown_keys(g, path, names, reading)
    return g or None


def _value(f: Any, value: Any, default: Any, path: str, reading: Reading) -> Any:
    meta = f.metadata
    section = meta.get("section")
    if section is not None:
        if value is _ABSENT or value is None:
            if default is None:
                return None
            if default is MISSING:
                reading.add(path, "missing")
                return read(section, {}, path, Reading(reading.base_dir), keys=meta.get("keys", ()))
            value = None
        return read(section, value, path, reading, keys=meta.get("keys", ()))
    if "read" in meta:
        if value is _ABSENT and default is not MISSING:
            return default
        return meta["read"](None if value is _ABSENT else value, path, reading)
    fallback = _ZERO.get(f.type) if default is MISSING else default
    if value is _ABSENT:
        if default is MISSING:
            reading.add(path, "missing")
        return fallback
    check: Callable[[Any, Any], Any] = meta.get("check") or (_choice if "choices" in meta else _KINDS[f.type])
    try:
        return check(value, meta)
    except ValueError as exc:
        reading.add(path, str(exc))
        return fallback


def read_section(cls: Any, raw: Any, path: str = "", base_dir: str = "", given: Optional[Dict[str, Any]] = None) -> Any:
    """Read one section's mapping against cls's schema (no file is read); raise ConfigError
    listing every problem, each with its path under ``path``. ``given``: fields that are
    not keys (Config's path)."""
    reading = Reading(base_dir)
    section = read(cls, raw, path, reading, given=given)
    if reading.items:
        raise ConfigError(reading.items)
    return section


# Value checks: (value, meta) -> the value to keep, or ValueError(the problem). The first
# line of the docstring names the type in tables().


def text(value: Any, meta: Any = None) -> str:
    """string"""
    if value is None:
        raise ValueError("missing")
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _integer(value: Any, meta: Any) -> int:
    """integer"""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    if not meta["lo"] <= value <= meta["hi"]:
        raise ValueError(f"expected an integer from {meta['lo']} to {meta['hi']}")
    return value


def _number(value: Any, meta: Any) -> float:
    """number"""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    if not meta["lo"] <= value <= meta["hi"]:
        raise ValueError(f"expected a number from {meta['lo']:g} to {meta['hi']:g}")
    return float(value)


def _boolean(value: Any, meta: Any) -> bool:
    """true or false"""
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _choice(value: Any, meta: Any) -> str:
    """string"""
    if value not in meta["choices"]:
        raise ValueError(f"expected one of {', '.join(meta['choices'])}")
    return str(value)


_KINDS: Dict[str, Callable[[Any, Any], Any]] = {"str": text, "int": _integer, "float": _number, "bool": _boolean}


# --- the schema as key lists and as a reference -------------------------------------------


def paths(cls: Any, prefix: str = "", keys: Tuple[str, ...] = ()) -> Iterator[Tuple[str, Any]]:
    """Every key of the file: (dotted path, its field), sections before their keys; an
    element of a map or list under its ``each`` suffix (``nodes.<name>``, ``atlas[]``)."""
    for f in settings(cls, keys):
        meta = f.metadata
        path = join(join(prefix, meta["under"]) if "under" in meta else prefix, key(f))
        yield path, f
        if "section" in meta:
            yield from paths(meta["section"], path, meta.get("keys", ()))
        elif "each" in meta:
            yield from paths(meta["each"][0], path + meta["each"][1])


def keys_of(cls: Any, under: str = "", keys: Tuple[str, ...] = ()) -> Tuple[str, ...]:
    """The YAML keys of one section (or of its sub-mapping ``under``), groups included."""
    out: List[str] = []
    for f in settings(cls, keys):
        name = key(f) if f.metadata.get("under", "") == under else (f.metadata["under"] if not under else "")
        if name and name not in out:
            out.append(name)
    return tuple(out)


def _shown(value: Any) -> str:
    if value is True or value is False:
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if value in ("", (), None):
        return "none"
    return f"`{value}`"


def _bound(value: Any) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def describe(f: Any) -> Tuple[str, str, str]:
    """(type, default, allowed) of one key, as tables() shows them."""
    meta = f.metadata
    if "shown_type" in meta:
        kind = meta["shown_type"]
    elif "section" in meta:
        kind = "section"
    else:  # what reads the value names its type in its docstring's first line
        reader = meta.get("read") or meta.get("check") or (_choice if "choices" in meta else _KINDS.get(f.type))
        kind = (getattr(reader, "__doc__", None) or str(f.type)).splitlines()[0]
    if meta.get("shown_default"):
        default = meta["shown_default"]
    elif meta["default"] is MISSING:
        default = f"required (or {meta['either']})" if "either" in meta else "required"
    elif "section" in meta:
        default = "" if meta["default"] is not None else "none"
    elif "either" in meta:
        default = f"none (or {meta['either']})"
    else:
        default = _shown(meta["default"])
    if "choices" in meta:
        allowed = ", ".join(f"`{c}`" for c in meta["choices"])
    elif "lo" in meta:
        allowed = f"{_bound(meta['lo'])} to {_bound(meta['hi'])}"
    else:
        allowed = ""
    return kind, default, allowed


def tables(cls: Any) -> List[str]:
    """Markdown lines: a table of the top-level keys, then one per section (its help first)."""
    rows: Dict[str, List[str]] = {"": []}
    intro: Dict[str, str] = {}
    for path, f in paths(cls):
        meta = f.metadata
        top = path.split(".")[0].split("[")[0]
        if path == top and ("section" in meta or "each" in meta):
            rows[top], intro[top] = [], meta["help"]
            continue
        if path != top and top not in rows:  # a group (log:)
            rows[top] = []
        kind, default, allowed = describe(f)
        rows[top if path != top else ""].append(f"| `{path}` | {kind} | {default} | {allowed} | {meta['help']} |")
    lines = []
    for section, body in rows.items():
        lines += [f"## `{section}`" if section else "## Top level", ""]
        if intro.get(section):
            lines += [intro[section][0].upper() + intro[section][1:] + ".", ""]
        lines += ["| Key | Type | Default | Allowed | Meaning |", "|---|---|---|---|---|", *body, ""]
    return lines
