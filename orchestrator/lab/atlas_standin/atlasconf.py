"""Atlas's config file as Atlas reads it: the subset of glib's GKeyFile format it uses.

Used by the Atlas stand-in (standin.py beside it) to load its config and to rewrite it
on SAVE CONFIG the way Atlas does.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple, TypeVar

GROUP = "mysql-proxy"
T = TypeVar("T")
# g_ascii_isspace(): space, \t, \n, \f and \r, but not \v.
_ASCII_WS = " \t\n\f\r"


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


class _InvalidValue(ValueError):
    """A value g_key_file_get_string() / _get_string_list() refuses to interpret."""


def _unescape(value: str) -> str:
    """GKeyFile string escapes (\\s \\n \\t \\r \\\\); any other escape is an error."""
    return _split_escaped(value, separator=None)[0]


def _split_escaped(value: str, separator: Optional[str]) -> List[str]:
    # One pass like g_key_file_parse_value_as_string(): unescape, and split on
    # separators that are not escaped ("\," is a literal comma inside an item). An
    # unknown escape or a backslash at the end makes GKeyFile report the whole value
    # as one "that cannot be interpreted", and Atlas then refuses to start.
    pieces: List[str] = []
    current = ""
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\":
            if i + 1 == len(value):
                raise _InvalidValue("escape character at end of line")
            nxt = value[i + 1]
            if nxt in _ESCAPES:
                current += _ESCAPES[nxt]
            elif separator is not None and nxt == separator:
                current += nxt
            else:
                raise _InvalidValue(f"invalid escape sequence \\{nxt}")
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


def escape_value(value: str) -> str:
    """``value`` written as a GKeyFile string value, the way g_key_file_set_string() does.

    For hand-written Atlas configs: ``admin-password = <escape_value(password)>`` makes
    Atlas read back exactly ``password`` (a backslash becomes ``\\\\``, leading blanks
    ``\\s``/``\\t``). Atlas strips trailing whitespace from every string option after
    unescaping (g_strchomp), so a value ending in whitespace cannot be configured at all:
    ValueError.
    """
    if value != value.rstrip(_ASCII_WS):
        raise ValueError("Atlas strips trailing whitespace from string options: "
                         "such a value cannot be configured")
    if "\0" in value:
        raise ValueError("a GKeyFile value cannot hold a NUL character")
    out = []
    leading = True
    for char in value:
        if char == " " and leading:
            out.append("\\s")
        elif char == "\t" and leading:
            out.append("\\t")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\\":
            out.append("\\\\")
            leading = False
        else:
            out.append(char)
            leading = False
    return "".join(out)


def read_keyfile(path: str) -> KeyFile:
    """Parse the file at ``path``; bytes that are not UTF-8 survive as surrogate escapes.

    GKeyFile parses bytes: comments and values that nobody reads may be in any encoding.
    Write the text back with ``encoding="utf-8", errors="surrogateescape"``.
    """
    with open(path, "rb") as handle:
        return KeyFile.parse(handle.read().decode("utf-8", "surrogateescape"))


def _is_utf8(text: str) -> bool:
    return not any("\udc80" <= char <= "\udcff" for char in text)


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
        keyfile = read_keyfile(path)
    except OSError as exc:
        raise AtlasConfigError(f"cannot read {path}: {exc}") from exc
    if not keyfile.has_group(GROUP):
        raise AtlasConfigError(f"{path}: no [{GROUP}] group")

    def interpreted(key: str, parse: Callable[[str], T]) -> Optional[T]:
        raw = keyfile.get(GROUP, key)
        if raw is None:
            return None
        if not _is_utf8(raw):
            # GKeyFile checks the encoding of a value only when it is read as a string.
            shown = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise AtlasConfigError(
                f"Key file contains key \u201c{key}\u201d with value \u201c{shown}\u201d which is not UTF-8"
            )
        try:
            return parse(raw)
        except _InvalidValue:
            # Atlas logs this GKeyFile message and exits.
            raise AtlasConfigError(
                f"Key file contains key \u201c{key}\u201d which has a value that cannot be interpreted."
            ) from None

    def string(key: str) -> Optional[str]:
        # chassis_keyfile_to_options(): g_key_file_get_string(), then g_strchomp().
        return interpreted(key, lambda raw: _unescape(raw).rstrip(_ASCII_WS))

    def string_list(key: str) -> List[str]:
        return interpreted(key, _split_list) or []

    username = string("admin-username")
    password = string("admin-password")
    if username is None:
        raise AtlasConfigError("--admin-username needs to be set")
    if password is None:
        raise AtlasConfigError("--admin-password needs to be set")
    admin = string("admin-address")
    # An integer option: g_key_file_get_integer() reads the raw value, no unescaping.
    wait_raw = keyfile.get(GROUP, "wait-timeout")
    wait_timeout = None
    if wait_raw is not None:
        match = re.fullmatch(r"[ \t]*([+-]?[0-9]+)[ \t]*", wait_raw)
        if not match:
            raise AtlasConfigError(f"wait-timeout: '{wait_raw}' is not a number")
        wait_timeout = int(match.group(1)) if int(match.group(1)) > 0 else None
    pwds = string_list("pwds")
    for entry in pwds:
        if ":" not in entry:
            raise AtlasConfigError("incorrect password settings")
    return AtlasConfig(
        admin_address=None if admin is None else _parse_admin_address(admin),
        admin_username=username,
        admin_password=password,
        rw_backends=tuple(string_list("proxy-backend-addresses")),
        ro_backends=tuple(string_list("proxy-read-only-backend-addresses")),
        pwds=tuple(pwds),
        client_ips=tuple(string_list("client-ips")),
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
