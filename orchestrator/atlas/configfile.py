"""Keep the read-only backend list in Atlas's config file in step with the runtime state.

Atlas reads its config file only at start, so after changing backends through the admin
port the orchestrator also rewrites `proxy-read-only-backend-addresses` here; an Atlas
restart then comes back with the same backends. Only that one line changes: every other
line, comment and blank line is kept byte for byte, unlike Atlas's own `SAVE CONFIG`
(which drops weights and respaces every key).

An empty list is written as an empty value (`proxy-read-only-backend-addresses = `), not
commented out. Atlas loads the file with GKeyFile (`chassis_keyfile_to_options`):
`g_key_file_get_string_list` turns an empty value into a zero-length list, and the proxy
plugin loops `for (i = 0; list && list[i]; i++)`, so an empty value means "no read-only
backends", exactly like a missing key. It is also what Atlas's own `SAVE CONFIG` writes
when there are none, and keeping the key in place keeps its position and spacing for the
next rewrite.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable

from orchestrator.atlas.client import parse_address
from orchestrator.errors import AtlasError

log = logging.getLogger(__name__)

GROUP = "mysql-proxy"
KEY = "proxy-read-only-backend-addresses"
BACKUP_SUFFIX = ".orch.bak"

_GROUP_HEADER = re.compile(r"\s*\[(?P<name>[^\]]*)\]\s*")
_KEY_LINE = re.compile(r"\s*(?P<key>[^#=\s][^=]*?)\s*=.*")
_RO_LINE = re.compile(
    r"(?P<prefix>\s*" + re.escape(KEY) + r"\s*=[ \t]*)(?P<value>.*?)(?P<suffix>\s*)"
)
_LINE_END = re.compile(rb"(\r\n|\n|\r)$")


class _Entry:
    """One element of the list as written in the file: `address[@weight]`."""

    def __init__(self, text: str, path: str):
        self.text = text
        self.weight: int | None = None
        address = text
        if "@" in text:
            address, _, weight = text.rpartition("@")
            if not re.fullmatch(r"[0-9]+", weight.strip()):
                raise AtlasError(f"atlas config {path}: {KEY}: bad weight in {text!r}")
            self.weight = int(weight)
        address = address.strip()
        try:
            self.address = parse_address(address)
        except ValueError:
            # Atlas may accept forms we never write (host names); keep them as written.
            self.address = address


class _Parsed:
    """The file split into lines, with the position of the key (or where it would go)."""

    def __init__(self, path: str, data: bytes):
        self.path = path
        self.lines = data.splitlines(keepends=True)
        self.key_index: int | None = None  # line holding the key
        self.insert_at: int | None = None  # where to add the key when absent
        self.spaced = True  # `key = value` (True) or `key=value` (False) in this group
        in_group = False
        seen_group = False
        key_lines: list[int] = []
        style_found = False
        for index, raw in enumerate(self.lines):
            text = _text(raw)
            header = _GROUP_HEADER.fullmatch(text)
            if header:
                in_group = header.group("name").strip() == GROUP
                if in_group:
                    seen_group = True
                    self.insert_at = index + 1
                continue
            if not in_group or text.lstrip().startswith("#"):
                continue
            match = _KEY_LINE.fullmatch(text)
            if not match:
                continue
            self.insert_at = index + 1
            if not style_found:
                self.spaced = " =" in text or "\t=" in text
                style_found = True
            if match.group("key") == KEY:
                key_lines.append(index)
        if not seen_group:
            raise AtlasError(f"atlas config {path}: no [{GROUP}] group")
        if len(key_lines) > 1:
            raise AtlasError(
                f"atlas config {path}: {KEY} appears {len(key_lines)} times in [{GROUP}]"
            )
        if key_lines:
            self.key_index = key_lines[0]

    def entries(self) -> list[_Entry]:
        if self.key_index is None:
            return []
        value = self._match().group("value")
        return [_Entry(part.strip(), self.path) for part in value.split(",") if part.strip()]

    def separator(self) -> str:
        """`, ` if the existing value puts a space after its commas, else `,`."""
        if self.key_index is not None and re.search(r",\s", self._match().group("value")):
            return ", "
        return ","

    def _match(self) -> re.Match:
        assert self.key_index is not None
        match = _RO_LINE.fullmatch(_text(self.lines[self.key_index]))
        assert match is not None
        return match

    def with_value(self, value: str) -> bytes:
        """The whole file with the key's value replaced (or the key added to the group)."""
        lines = list(self.lines)
        if self.key_index is not None:
            raw = lines[self.key_index]
            match = self._match()
            new_text = match.group("prefix") + value + match.group("suffix")
            lines[self.key_index] = new_text.encode("utf-8", "surrogateescape") + _ending(raw)
        else:
            assert self.insert_at is not None
            eol = _dominant_ending(lines)
            if self.insert_at > 0 and not _ending(lines[self.insert_at - 1]):
                # The group's last line ends the file without a newline: end it first.
                lines[self.insert_at - 1] += eol
            equals = " = " if self.spaced else "="
            lines.insert(self.insert_at, (KEY + equals + value).encode("utf-8") + eol)
        return b"".join(lines)


def _text(raw: bytes) -> str:
    return _LINE_END.sub(b"", raw).decode("utf-8", "surrogateescape")


def _ending(raw: bytes) -> bytes:
    match = _LINE_END.search(raw)
    return match.group(1) if match else b""


def _dominant_ending(lines: list[bytes]) -> bytes:
    crlf = sum(1 for line in lines if line.endswith(b"\r\n"))
    return b"\r\n" if crlf * 2 > len(lines) else b"\n"


def _load(path: str) -> _Parsed:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise AtlasError(f"atlas config {path}: cannot read: {exc.strerror or exc}") from exc
    return _Parsed(path, data)


def read_ro_backends(path: str) -> list[tuple[str, int | None]]:
    """The read-only backends configured in `path`, as (address, weight or None) in file
    order. A missing or empty key gives an empty list."""
    return [(entry.address, entry.weight) for entry in _load(path).entries()]


def rewrite_ro_backends(path: str, addresses: Iterable[str]) -> bool:
    """Make `proxy-read-only-backend-addresses` in `path` list exactly `addresses`.

    Entries that stay keep their text (weight included) and their place; new addresses
    are appended without a weight, in the order given. Returns False without touching
    the file when the set of addresses is already the one configured. Otherwise the file
    is replaced atomically (temp file in the same directory, fsync, rename, fsync of the
    directory) with its mode and owner kept, and the previous contents are kept as
    `path + ".orch.bak"` (one backup only). Raises ValueError for an invalid address and
    AtlasError when the file cannot be read, parsed or replaced.
    """
    wanted: list[str] = []
    for address in addresses:
        normalized = parse_address(address)
        if normalized not in wanted:
            wanted.append(normalized)

    parsed = _load(path)
    entries = parsed.entries()
    kept: list[_Entry] = []
    for entry in entries:
        if entry.address in wanted and entry.address not in (e.address for e in kept):
            kept.append(entry)
    added = [address for address in wanted if address not in (e.address for e in kept)]
    texts = [entry.text for entry in kept] + added
    new_data = parsed.with_value(parsed.separator().join(texts))

    old_data = b"".join(parsed.lines)
    # Nothing dropped and nothing added: leave the file as written, however it is spaced.
    if (len(kept) == len(entries) and not added) or new_data == old_data:
        log.debug("atlas config %s: %s already lists %s", path, KEY, ",".join(wanted))
        return False
    _replace_atomically(path, old_data, new_data)
    log.info("atlas config %s: %s set to %s", path, KEY, ",".join(texts) or "(none)")
    return True


def _replace_atomically(path: str, old_data: bytes, new_data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(path)
    except OSError as exc:
        raise AtlasError(f"atlas config {path}: cannot stat: {exc.strerror or exc}") from exc
    try:
        # Backup first: a crash after it leaves the old file and a copy of it.
        backup_tmp = _write_temp(directory, path, old_data, st)
        try:
            os.replace(backup_tmp, path + BACKUP_SUFFIX)
        except BaseException:
            _unlink_quietly(backup_tmp)
            raise
        new_tmp = _write_temp(directory, path, new_data, st)
        try:
            os.replace(new_tmp, path)
        except BaseException:
            _unlink_quietly(new_tmp)
            raise
        _fsync_directory(directory)
    except OSError as exc:
        raise AtlasError(
            f"atlas config {path}: cannot replace: {exc.strerror or exc}"
        ) from exc


def _write_temp(directory: str, path: str, data: bytes, st: os.stat_result) -> str:
    """Write `data` to a new temp file next to `path` with `path`'s mode and owner,
    fsynced; return its name. Removes it again on any failure."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".orch.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            # The config holds admin and user passwords: never more open than the original.
            os.fchmod(handle.fileno(), st.st_mode & 0o7777)
            created = os.fstat(handle.fileno())
            if (st.st_uid, st.st_gid) != (created.st_uid, created.st_gid):
                os.fchown(handle.fileno(), st.st_uid, st.st_gid)
            os.fsync(handle.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass
