"""Atlas's config file as Atlas reads it: the subset of glib's GKeyFile format it uses.

Used by the Atlas stand-in (orchestrator/atlas/standin.py) to load its config and to
rewrite it on SAVE CONFIG the way Atlas does.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

GROUP = "mysql-proxy"
_ASCII_WS = " \t\n\v\f\r"


class AtlasConfigError(ValueError):
    """The Atlas config file cannot be used (Atlas itself would refuse to start)."""


# --------------------------------------------------------------------------------------
# Config file: the subset of GKeyFile that Atlas reads and SAVE CONFIG writes.
# --------------------------------------------------------------------------------------


@dataclass
class _Line:
    key: Optional[str]  # None: a comment or blank line, kept verbatim in ``value``
    value: str


@dataclass
class _Group:
    name: Optional[str]  # None: the lines above the first group
    lines: List[_Line] = field(default_factory=list)


class KeyFile:
    """An INI file parsed and re-serialised the way GLib's GKeyFile does it.

    Comments and blank lines are kept, ``key = value`` comes back as ``key=value``, a
    repeated group header merges into the first one, the last of duplicate keys wins,
    keys added later go to the end of their group, and groups are separated by at
    least one empty line on output.
    """

    def __init__(self, groups: List[_Group]) -> None:
        self._groups = groups

    @classmethod
    def parse(cls, text: str) -> "KeyFile":
        """Parse ``text``; raises AtlasConfigError where GKeyFile reports an error."""
        top = _Group(None)
        groups = [top]
        current = top
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        for raw in lines:
            line = raw[:-1] if raw.endswith("\r") else raw
            stripped = line.lstrip(_ASCII_WS)
            if stripped == "" or stripped.startswith("#"):
                current.lines.append(_Line(None, line))
                continue
            group_match = re.fullmatch(r"\[([^\]]*)\][ \t]*", stripped)
            if group_match and _valid_group_name(group_match.group(1)):
                name = group_match.group(1)
                existing = next((g for g in groups if g.name == name), None)
                if existing is None:
                    existing = _Group(name)
                    groups.append(existing)
                current = existing
                continue
            if "=" in stripped and not stripped.startswith("="):
                if current.name is None:
                    raise AtlasConfigError("Key file does not start with a group")
                key, _, value = stripped.partition("=")
                key = key.rstrip(_ASCII_WS)
                if not _valid_key_name(key):
                    raise AtlasConfigError(f"Invalid key name: {key}")
                current.lines.append(_Line(key, value.lstrip(_ASCII_WS)))
                continue
            raise AtlasConfigError(
                f"Key file contains line '{line}' which is not a key-value pair,"
                " group, or comment"
            )
        return cls(groups)

    def has_group(self, group: str) -> bool:
        """Whether ``[group]`` appears in the file."""
        return self._group(group) is not None

    def get(self, group: str, key: str) -> Optional[str]:
        """The raw value of ``key`` (its last occurrence), or None."""
        line = self._lookup(group, key)
        return None if line is None else line.value

    def set(self, group: str, key: str, value: str) -> None:
        """Set a raw value in place, or add the key at the end of its group."""
        line = self._lookup(group, key)
        if line is not None:
            line.value = value
            return
        target = self._group(group)
        if target is None:
            target = _Group(group)
            self._groups.append(target)
        target.lines.append(_Line(key, value))

    def to_text(self) -> str:
        """Serialise like g_key_file_to_data()."""
        data = ""
        for group in self._groups:
            if len(data) >= 2 and data[-2] != "\n":
                data += "\n"
            if group.name is not None:
                data += f"[{group.name}]\n"
            for line in group.lines:
                data += line.value + "\n" if line.key is None else f"{line.key}={line.value}\n"
        return data

    def _group(self, name: str) -> Optional[_Group]:
        return next((g for g in self._groups if g.name == name), None)

    def _lookup(self, group: str, key: str) -> Optional[_Line]:
        target = self._group(group)
        if target is None:
            return None
        matches = [line for line in target.lines if line.key == key]
        return matches[-1] if matches else None


def _valid_group_name(name: str) -> bool:
    return bool(name) and not any(c in "[]" or ord(c) < 0x20 or c == "\x7f" for c in name)


def _valid_key_name(key: str) -> bool:
    # GKeyFile allows one trailing "[locale]"; any other bracket is an error.
    base = re.sub(r"\[[^\[\]]+\]$", "", key)
    return bool(base) and "[" not in base and "]" not in base and not base.endswith(" ")


_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _unescape(value: str) -> str:
    """GKeyFile string escapes; unknown escapes are kept as written."""
    return _split_escaped(value, separator=None)[0]


def _split_escaped(value: str, separator: Optional[str]) -> List[str]:
    # One pass like g_key_file_parse_value_as_string(): unescape, and split on
    # separators that are not escaped ("\," is a literal comma inside an item).
    pieces: List[str] = []
    current = ""
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt in _ESCAPES:
                current += _ESCAPES[nxt]
            elif separator is not None and nxt == separator:
                current += nxt
            else:
                current += char + nxt
            i += 2
            continue
        if separator is not None and char == separator:
            pieces.append(current)
            current = ""
        else:
            current += char
        i += 1
    pieces.append(current)
    return pieces


def _split_list(value: Optional[str]) -> List[str]:
    """A ``,``-separated list value; items are stripped and empty items dropped."""
    if value is None:
        return []
    items = (item.strip(_ASCII_WS) for item in _split_escaped(value, separator=","))
    return [item for item in items if item]


# --------------------------------------------------------------------------------------
# Atlas config values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtlasConfig:
    """The parts of an Atlas config file the admin interface uses."""

    admin_address: Optional[Tuple[str, int]]
    admin_username: str
    admin_password: str
    rw_backends: Tuple[str, ...]
    ro_backends: Tuple[str, ...]
    pwds: Tuple[str, ...]
    client_ips: Tuple[str, ...]
    wait_timeout: Optional[int]


def load_config(path: str) -> AtlasConfig:
    """Read the ``[mysql-proxy]`` group of an Atlas config file."""
    try:
        with open(path, encoding="utf-8") as handle:
            keyfile = KeyFile.parse(handle.read())
    except (OSError, UnicodeDecodeError) as exc:
        raise AtlasConfigError(f"cannot read {path}: {exc}") from exc
    if not keyfile.has_group(GROUP):
        raise AtlasConfigError(f"{path}: no [{GROUP}] group")

    def string(key: str) -> Optional[str]:
        raw = keyfile.get(GROUP, key)
        return None if raw is None else _unescape(raw)

    username = string("admin-username")
    password = string("admin-password")
    if username is None:
        raise AtlasConfigError("--admin-username needs to be set")
    if password is None:
        raise AtlasConfigError("--admin-password needs to be set")
    admin = string("admin-address")
    wait_raw = string("wait-timeout")
    wait_timeout = None
    if wait_raw is not None:
        match = re.fullmatch(r"[ \t]*([+-]?[0-9]+)[ \t]*", wait_raw)
        if not match:
            raise AtlasConfigError(f"wait-timeout: '{wait_raw}' is not a number")
        wait_timeout = int(match.group(1)) if int(match.group(1)) > 0 else None
    pwds = _split_list(keyfile.get(GROUP, "pwds"))
    for entry in pwds:
        if ":" not in entry:
            raise AtlasConfigError("incorrect password settings")
    return AtlasConfig(
        admin_address=None if admin is None else _parse_admin_address(admin),
        admin_username=username,
        admin_password=password,
        rw_backends=tuple(_split_list(keyfile.get(GROUP, "proxy-backend-addresses"))),
        ro_backends=tuple(
            _split_list(keyfile.get(GROUP, "proxy-read-only-backend-addresses"))
        ),
        pwds=tuple(pwds),
        client_ips=tuple(_split_list(keyfile.get(GROUP, "client-ips"))),
        wait_timeout=wait_timeout,
    )


def _parse_admin_address(address: str) -> Tuple[str, int]:
    # mysql-proxy rules: "host:port", ":port" means every address, no port means 3306.
    if address.startswith(("/", "[")):
        raise AtlasConfigError(f"admin-address {address}: only IPv4 host:port is supported")
    host, sep, port_text = address.partition(":")
    if not sep:
        return host or "0.0.0.0", 3306
    if not _is_decimal(port_text) or int(port_text) > 65535:
        raise AtlasConfigError(f"admin-address {address}: invalid port")
    return host or "0.0.0.0", int(port_text)


def _is_decimal(text: str) -> bool:
    return re.fullmatch(r"[0-9]+", text) is not None


def normalize_backend_address(address: str) -> Optional[str]:
    """``ip:port`` as Atlas prints a backend (inet_aton, decimal port), or None if invalid.

    Like mysql-proxy, an empty host or 0.0.0.0 means INADDR_ANY and octets follow
    inet_aton (so a leading 0 is octal). Host names are resolved, as Atlas does.
    """
    host, sep, port_text = address.partition(":")
    if not sep or not _is_decimal(port_text) or int(port_text) > 65535:
        return None
    if host in ("", "0.0.0.0"):
        ip = "0.0.0.0"
    else:
        try:
            ip = socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            if re.fullmatch(r"[0-9.]+", host):
                return None
            try:
                ip = socket.gethostbyname(host)
            except OSError:
                return None
    return f"{ip}:{int(port_text)}"
