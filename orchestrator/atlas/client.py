"""The one door to Atlas's admin port.

The admin port speaks the MySQL protocol but understands nothing except its own admin
commands (see /work/shared/atlas-admin.md): `SET NAMES`, autocommit statements, COM_PING,
COM_INIT_DB and even COM_QUIT are answered with errors, an empty query closes the
connection, and values must not be quoted. A stock `pymysql.connect()` therefore fails
(PyMySQL >= 1.1 always sends `SET NAMES` after login; 1.0 sends `SET AUTOCOMMIT = 0`
unless told otherwise). `_AdminConnection` keeps PyMySQL's handshake and authentication
but sends nothing after them, and refuses to send anything that is not one of the admin
commands built here.

Backend numbers shift on every REMOVE and ADD MASTER, so every operation on one backend
looks its number up by address right before the command and re-reads the list after it.
Another admin (a person, or orch on the other host) can still shift them in between:
a REMOVE BACKEND n then removes the wrong backend. `remove_backend` therefore puts back
at once anything else that vanished, says so at ERROR level, and tries again.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import pymysql
import pymysql.connections
from pymysql.charset import charset_by_name
from pymysql.constants import COMMAND

from orchestrator.db import tcp_connect
from orchestrator.errors import AtlasError
from orchestrator.model import Backend  # one row of `SELECT * FROM backends`; ndx is only a position

log = logging.getLogger(__name__)

BACKEND_TYPES = ("rw", "ro")

# Every command this module may send, exactly as built below. Anything else (a statement
# a PyMySQL version sends on its own, a ping, COM_INIT_DB) is refused before it is sent.
_ADMIN_COMMAND = re.compile(
    r"SELECT \* FROM backends"
    r"|ADD (SLAVE|MASTER) [0-9]{1,3}(\.[0-9]{1,3}){3}:[0-9]{1,5}"
    r"|REMOVE BACKEND [1-9][0-9]*"
    r"|SET (OFFLINE|ONLINE) [1-9][0-9]*"
    r"|SAVE CONFIG",
    re.ASCII,
)
# Commands that can be sent again after a lost connection: reads, SAVE CONFIG (rewrites
# the file from the runtime state) and ADD SLAVE/MASTER (Atlas ignores a known address of
# the same type). Never REMOVE BACKEND n or SET OFFLINE/ONLINE n: the number may mean
# another backend by then.
_RETRYABLE = re.compile(r"SELECT .*|SAVE CONFIG|ADD (SLAVE|MASTER) .*")

REMOVE_ATTEMPTS = 3  # a REMOVE (or SET OFFLINE/ONLINE) that hit another backend (numbers shifted) is tried again
_ADD_COMMAND = {"ro": "ADD SLAVE", "rw": "ADD MASTER"}

_ADDRESS = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+):([0-9]+)", re.ASCII)


def parse_address(text: str) -> str:
    """Validate a backend address `a.b.c.d:port` (dotted IPv4, octets 0-255 without
    leading zeros, port 1-65535) and return it normalized. Raises ValueError with a
    one-line reason for anything Atlas's ADD would not take: host names, a missing port,
    quotes, `@weight`, lists."""
    if not isinstance(text, str):
        raise ValueError(f"invalid backend address {text!r}: expected a string")
    shown = repr(text) if len(text) <= 80 else repr(text[:77] + "...")
    candidate = text.strip()

    def bad(reason: str) -> ValueError:
        return ValueError(f"invalid backend address {shown}: {reason}")

    if not candidate:
        raise bad("empty")
    if "@" in candidate:
        raise bad("no @weight allowed here (Atlas adds backends with weight 1)")
    if any(quote in candidate for quote in "'\"`"):
        raise bad("must not be quoted")
    if "," in candidate or any(ch.isspace() for ch in candidate):
        raise bad("one address only, as a.b.c.d:port")
    if ":" not in candidate:
        raise bad("missing :port")
    match = _ADDRESS.fullmatch(candidate)
    if not match:
        host = candidate.rsplit(":", 1)[0]
        if not re.fullmatch(r"[0-9.]+", host, re.ASCII):
            raise bad("not a dotted IPv4 address (host names and IPv6 are not accepted)")
        raise bad("expected a.b.c.d:port")
    *octets, port = match.groups()
    for octet in octets:
        if len(octet) > 1 and octet.startswith("0"):
            raise bad(f"octet {octet} has a leading zero (ambiguous: octal for inet_aton)")
        if int(octet) > 255:
            raise bad(f"octet {octet} out of range 0-255")
    if len(port) > 5 or not 1 <= int(port) <= 65535:
        raise bad(f"port {port} out of range 1-65535")
    return f"{'.'.join(octets)}:{int(port)}"


def _backend_type(type: str) -> str:
    if type not in BACKEND_TYPES:
        raise ValueError(f"invalid backend type {type!r}: expected 'rw' or 'ro'")
    return type


class _NotAnAdminCommand(Exception):
    """Something other than an admin command was about to be sent."""

    def __init__(self, command: int, text: str):
        self.command = command
        self.text = text
        super().__init__(command, text)


class _AdminConnection(pymysql.connections.Connection):
    """A PyMySQL connection that sends nothing after authentication but admin commands.

    Works with PyMySQL 1.0-1.2: construct it with autocommit=None, no sql_mode and no
    init_command, which covers everything 1.0 sends after login; `set_character_set`
    covers the `SET NAMES` of 1.1+; `_execute_command` is the last line of defence for
    whatever a PyMySQL version adds later; `close` skips COM_QUIT.
    """

    def set_character_set(self, charset, collation=None):
        # PyMySQL >= 1.1 calls this from connect() to send SET NAMES, which the admin
        # port rejects. Only the client side matters here (how replies are decoded).
        self.charset = charset
        self.collation = collation
        self.encoding = charset_by_name(charset).encoding

    def _execute_command(self, command, sql):
        text = sql.decode("latin1") if isinstance(sql, (bytes, bytearray)) else str(sql)
        if command != COMMAND.COM_QUERY or not _ADMIN_COMMAND.fullmatch(text):
            raise _NotAnAdminCommand(command, text)
        super()._execute_command(command, sql)

    def close(self):
        # The admin port answers COM_QUIT with an error packet: just drop the socket.
        self._closed = True
        self._force_close()


class AtlasAdmin:
    """A connection to one Atlas admin port.

    Connects on first use (or `connect()`, or `with`). Every error is an AtlasError naming
    the Atlas (`atlas <name> at host:port: ...`); the password never appears in messages
    or logs.
    """

    def __init__(self, host: str, port: int, user: str, password: str,
                 timeout: float = 2.0, name: str = "atlas"):
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"invalid atlas admin port {port!r}: expected 1-65535")
        if not timeout > 0:
            raise ValueError(f"invalid atlas admin timeout {timeout!r}: expected > 0")
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self.timeout = timeout
        self.name = name
        self._conn: _AdminConnection | None = None
        self.last_incidents: list[str] = []  # what the last remove_backend logged as ERROR

    def __repr__(self) -> str:
        return f"AtlasAdmin(name={self.name!r}, host={self.host!r}, port={self.port})"

    @property
    def _where(self) -> str:
        return f"atlas {self.name} at {self.host}:{self.port}"

    # -- connection -------------------------------------------------------------------

    def connect(self) -> None:
        """Open the admin connection (handshake and authentication only)."""
        if self._conn is not None:
            return
        conn = _AdminConnection(
            host=self.host,
            port=self.port,
            user=self.user.encode("utf-8"),
            password=self._password.encode("utf-8"),
            # latin1 decodes any byte; the admin port's own charset is latin1 anyway.
            charset="latin1",
            autocommit=None,
            sql_mode=None,
            init_command=None,
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            write_timeout=self.timeout,
            ssl_disabled=True,
            defer_connect=True,
        )
        try:
            conn.connect(tcp_connect(self.host, self.port, self.timeout))
        except _NotAnAdminCommand as exc:
            conn.close()
            raise self._refused(exc) from None
        except pymysql.MySQLError as exc:
            conn.close()
            code, message = self._describe(exc)
            if code == 1045:
                raise AtlasError(
                    f"{self._where}: authentication failed for admin user {self.user!r}: "
                    f"{message}"
                ) from None
            if code is not None and 1000 <= code < 2000:
                raise AtlasError(f"{self._where}: login failed: {message} ({code})") from None
            raise AtlasError(f"{self._where}: unreachable: {message}") from None
        except OSError as exc:
            conn.close()
            raise AtlasError(f"{self._where}: unreachable: {exc}") from None
        self._conn = conn
        log.debug("%s: connected as %s", self._where, self.user)

    def close(self) -> None:
        """Close the socket (no COM_QUIT: Atlas answers it with an error)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> AtlasAdmin:
        self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------

    def backends(self) -> tuple[Backend, ...]:
        """All backends as Atlas lists them now, in ndx order."""
        columns, rows = self._execute("SELECT * FROM backends")
        return tuple(self._backend(columns, row) for row in rows)

    # -- changing ---------------------------------------------------------------------

    def add_slave(self, address: str) -> bool:
        """Make `address` a read-only backend; True if it was added. A no-op (nothing
        sent, False) if it already is one; verified by re-reading the backends."""
        address = parse_address(address)
        if self._find(self.backends(), address, "ro"):
            log.info("%s: %s is already a read-only backend", self._where, address)
            return False
        command = f"ADD SLAVE {address}"
        log.info("%s: %s", self._where, command)
        self._execute(command)
        if not self._find(self.backends(), address, "ro"):
            raise AtlasError(f"{self._where}: after {command} {address} is not listed as ro")
        return True

    def remove_backend(self, address: str, type: str = "ro") -> bool:
        """Remove the backend `address` of `type` ('ro' unless 'rw' is asked for).

        Looks its ndx up right before `REMOVE BACKEND n` and re-reads the list after it.
        Another admin may have shifted the numbers in between, so that n meant another
        backend: that one is put back at once (ADD SLAVE or ADD MASTER, by its type, with
        weight 1) and logged as an ERROR naming it, and the removal is tried again while
        `address` is still listed (at most REMOVE_ATTEMPTS times). Every such ERROR is
        also in `last_incidents`. See `_hit` for how the backend our command took is told
        apart from what the other admin removed.

        Returns True once it is gone, or False, sending nothing, if it was not listed.
        Raises AtlasError if it is still listed after every attempt, or if a backend our
        command took could not be put back.
        """
        address = parse_address(address)
        type = _backend_type(type)
        self.last_incidents = []
        for attempt in range(1, REMOVE_ATTEMPTS + 1):
            before = self.backends()
            target = self._find(before, address, type)
            if target is None:
                if attempt == 1:
                    log.info("%s: %s (%s) is not a backend; nothing to remove", self._where, address, type)
                    return False
                return True  # gone meanwhile: another admin removed it too
            command = f"REMOVE BACKEND {target.ndx}"
            log.info("%s: %s (%s, %s)", self._where, command, address, type)
            try:
                self._execute(command)
            except _Rejected as exc:
                # `invalid backend_id`: the list shrank since the lookup; nothing was removed.
                log.warning("%s: %s: %s; looking %s (%s) up again", self._where, command, exc.message, address, type)
                continue
            after = self.backends()
            meant = (address, type)
            hit, others = self._hit(before, after, target.ndx, meant)
            for lost_address, lost_type in others:
                log.warning("%s: %s (%s) vanished while we removed %s (%s), not by our %s: another admin removed it; "
                            "left as it is", self._where, lost_address, lost_type, address, type, command)
            if hit is None:
                self._incident(
                    f"{command} (meant for {address} ({type})) took none of the backends listed before it: either it "
                    f"removed one another admin added after our lookup (its address cannot be known here; Atlas's log "
                    f"names it), or {address} was added back at once; add back by hand whatever is missing")
            elif hit:
                self._put_back(hit, command, address, type)
            if self._find(after, address, type) is None:
                return True
            log.warning("%s: after %s %s (%s) is still listed: the backend numbers shifted; trying again",
                        self._where, command, address, type)
        raise AtlasError(
            f"{self._where}: {address} ({type}) is still listed after {REMOVE_ATTEMPTS} attempts to remove it "
            f"(the backend numbers keep shifting: another admin is changing the list)"
        )

    @staticmethod
    def _hit(before: tuple[Backend, ...], after: tuple[Backend, ...], ndx: int,
             meant: tuple[str, str]) -> tuple[list[tuple[str, str]] | None, list[tuple[str, str]]]:
        """Which backends (other than `meant`) our `REMOVE BACKEND ndx` may have taken,
        and which vanished by another admin's hand: (to put back, to leave alone).

        When the list after is `before` with some entries gone, in the same order (others
        only removed meanwhile), our command took an entry of `before` that lay between
        the two entries now around position `ndx`: those are put back, the rest of what
        vanished is the other admin's doing. None as the first value: our command took
        nothing `before` listed, so a backend added after the lookup. When entries were
        added or moved (ADD MASTER swaps), nothing can be told: everything that vanished
        is put back, as a loud undone removal beats a healthy backend silently lost.
        """
        keys = [(b.address, b.type) for b in before]
        now = [(b.address, b.type) for b in after]
        lost = Counter(keys) - Counter(now)
        lost -= Counter([meant])
        position = {key: i for i, key in enumerate(keys)}
        order = [position.get(key, -1) for key in now]
        if len(set(keys)) != len(keys) or -1 in order or order != sorted(order) or ndx > len(order) + 1:
            gone = sorted(lost.elements())
            still_listed = meant in now
            return (None if still_listed and not gone else gone), []
        low = order[ndx - 2] if ndx >= 2 else -1
        high = order[ndx - 1] if ndx - 1 < len(order) else len(keys)
        between = keys[low + 1:high]
        if not between:
            return None, sorted(lost.elements())
        hit = [key for key in between if key != meant]
        return hit, sorted(key for key in lost.elements() if key not in hit)

    def _put_back(self, lost: list[tuple[str, str]], command: str, address: str, type: str) -> None:
        """Re-add what vanished with our REMOVE (the numbers shifted), then verify it is back."""
        problems = []
        added = []
        for lost_address, lost_type in lost:
            what = f"{lost_address} ({lost_type})"
            try:
                add = f"{_ADD_COMMAND[lost_type]} {parse_address(lost_address)}"
            except (KeyError, ValueError):
                problems.append(f"{what}, which cannot be added through the admin port")
                continue
            try:
                self._execute(add)
            except AtlasError as exc:
                problems.append(f"{what} ({add} failed: {exc})")
                continue
            added.append((lost_address, lost_type, add))
        now = self.backends()
        for lost_address, lost_type, add in added:
            what = f"{lost_address} ({lost_type})"
            if self._find(now, lost_address, lost_type) is None:
                problems.append(f"{what} (not listed after {add})")
                continue
            text = (f"{what} vanished with {command} (meant for {address} ({type})): the backend numbers "
                    f"shifted under another admin's change, so it may have been removed by mistake; put it back "
                    f"with {add} (weight 1, state unknown until Atlas's checker probes it)")
            self._incident(text)
        if problems:
            text = (f"{command} (meant for {address} ({type})) also removed {', '.join(problems)}: the backend "
                    f"numbers shifted under another admin's change; add it back by hand")
            self._incident(text)
            raise AtlasError(f"{self._where}: {text}")

    def _incident(self, text: str) -> None:
        log.error("%s: %s", self._where, text)
        self.last_incidents.append(text)

    def set_offline(self, address: str, type: str = "rw") -> bool:
        """`SET OFFLINE n` for the backend `address` of `type` ('rw' unless told): Atlas then
        sends it no traffic and its checker no longer probes it. True if it was changed;
        False, sending nothing, if it was offline already. Verified by re-reading the
        backends. Raises AtlasError if it is not listed or not offline after every attempt."""
        return self._set_state(address, type, offline=True)

    def set_online(self, address: str, type: str = "rw") -> bool:
        """`SET ONLINE n` for the backend `address` of `type` when it is `offline` (it becomes
        `unknown`; Atlas's checker takes it `up` within its cycle). Sends nothing (False)
        for a backend that is not offline: ONLINE would turn an `up` backend `unknown`, unused
        until the checker's next probe. Verified by re-reading the backends."""
        return self._set_state(address, type, offline=False)

    def _set_state(self, address: str, type: str, offline: bool) -> bool:
        address = parse_address(address)
        type = _backend_type(type)
        word = "OFFLINE" if offline else "ONLINE"
        self.last_incidents = []

        def done(backend: Backend) -> bool:
            return (backend.state == "offline") == offline

        for attempt in range(1, REMOVE_ATTEMPTS + 1):
            before = self.backends()
            target = self._find(before, address, type)
            if target is None:
                raise AtlasError(f"{self._where}: {address} ({type}) is not a backend: cannot set it {word.lower()}")
            if done(target):
                if attempt == 1:
                    log.info("%s: %s (%s) is %s already", self._where, address, type, target.state)
                    return False
                return True
            command = f"SET {word} {target.ndx}"
            log.info("%s: %s (%s, %s)", self._where, command, address, type)
            try:
                columns, rows = self._execute(command)
            except _Rejected as exc:
                # `backend id is not exsit`: the list shrank since the lookup; nothing changed.
                log.warning("%s: %s: %s; looking %s (%s) up again", self._where, command, exc.message, address, type)
                continue
            hit = self._backend(columns, rows[0]) if rows else None
            if hit is not None and (hit.address, hit.type) != (address, type):
                self._undo_state(before, hit, command, address, type, offline)
            now = self._find(self.backends(), address, type)
            if now is None:
                raise AtlasError(f"{self._where}: {address} ({type}) vanished while it was set {word.lower()} (another admin removed it)")
            if done(now):
                return True
            log.warning("%s: after %s %s (%s) is %s: the backend numbers shifted; trying again",
                        self._where, command, address, type, now.state)
        raise AtlasError(f"{self._where}: {address} ({type}) is not {word.lower()} after {REMOVE_ATTEMPTS} attempts "
                         f"(the backend numbers keep shifting: another admin is changing the list)")

    def _undo_state(self, before: tuple[Backend, ...], hit: Backend, command: str, address: str, type: str,
                    offline: bool) -> None:
        """Our SET took another backend (the numbers shifted): give it back the state it had."""
        was = self._find(before, hit.address, hit.type)
        if was is None or (was.state == "offline") == offline:
            return  # nothing changed for it (or it was not listed before: cannot be told)
        undo = "ONLINE" if offline else "OFFLINE"
        again = self._find(self.backends(), hit.address, hit.type)
        what = f"{hit.address} ({hit.type})"
        if again is None:
            self._incident(f"{command} (meant for {address} ({type})) took {what}, which is gone now; check it by hand")
            return
        try:
            self._execute(f"SET {undo} {again.ndx}")
        except AtlasError as exc:
            self._incident(f"{command} (meant for {address} ({type})) took {what} (was {was.state}); SET {undo} failed: "
                           f"{exc}; set it back by hand")
            return
        self._incident(f"{command} (meant for {address} ({type})) took {what} (was {was.state}): the backend numbers shifted "
                       f"under another admin's change; set it back with SET {undo}"
                       + (" (state unknown until Atlas's checker probes it)" if offline else ""))

    def save_config(self) -> None:
        """`SAVE CONFIG`: Atlas rewrites its config file from the runtime state."""
        log.info("%s: SAVE CONFIG", self._where)
        self._execute("SAVE CONFIG")

    # -- internals --------------------------------------------------------------------

    @staticmethod
    def _find(backends: tuple[Backend, ...], address: str, type: str) -> Backend | None:
        for backend in backends:
            if backend.address == address and backend.type == type:
                return backend
        return None

    def _backend(self, columns: list[str], row: tuple) -> Backend:
        try:
            values = dict(zip(columns, row))
            return Backend(
                ndx=int(values["backend_ndx"]),
                address=str(values["address"]),
                state=str(values["state"]),
                type=str(values["type"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AtlasError(f"{self._where}: unexpected backends reply {columns}: {exc}") from None

    def _execute(self, command: str) -> tuple[list[str], list[tuple]]:
        """Send one admin command; return its column names and rows."""
        if not _ADMIN_COMMAND.fullmatch(command):
            raise AssertionError(f"not an admin command: {command!r}")
        fresh = self._conn is None
        try:
            return self._send(command)
        except _LostConnection as lost:
            if fresh or not _RETRYABLE.fullmatch(command):
                raise AtlasError(f"{self._where}: unreachable: {lost} during {command}") from None
            # An idle connection may have been closed by Atlas (wait-timeout): one retry.
            log.info("%s: connection lost (%s); reconnecting for %s", self._where, lost, command)
            try:
                return self._send(command)
            except _LostConnection as again:
                raise AtlasError(
                    f"{self._where}: unreachable: {again} during {command}"
                ) from None

    def _send(self, command: str) -> tuple[list[str], list[tuple]]:
        self.connect()
        assert self._conn is not None
        log.debug("%s: sending %s", self._where, command)
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(command)
                columns = [column[0] for column in cursor.description or ()]
                rows = list(cursor.fetchall())
        except _NotAnAdminCommand as exc:
            raise self._refused(exc) from None
        except pymysql.MySQLError as exc:
            code, message = self._describe(exc)
            if code is not None and 1000 <= code < 2000:
                # Atlas rejected the command; the connection stays usable.
                raise _Rejected(
                    f"{self._where}: {command} rejected: {message} ({code})", message
                ) from None
            self.close()
            raise _LostConnection(message) from None
        except OSError as exc:
            self.close()
            raise _LostConnection(str(exc)) from None
        return columns, rows

    def _describe(self, exc: Exception) -> tuple[int | None, str]:
        """(error code or None, one-line message without the password) of a PyMySQL error."""
        args: tuple = getattr(exc, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        original = getattr(exc, "original_exception", None)
        if original is not None:
            message = str(original)
        elif code is not None and len(args) > 1:
            message = str(args[1])
        else:
            message = str(exc) or type(exc).__name__
        message = " ".join(message.split())
        if self._password and self._password in message:
            message = message.replace(self._password, "***")
        return code, message

    def _refused(self, exc: _NotAnAdminCommand) -> AtlasError:
        what = (f"statement {exc.text[:60]!r}" if exc.command == COMMAND.COM_QUERY
                else f"protocol command {exc.command}")
        return AtlasError(
            f"{self._where}: refusing to send {what}: the admin port accepts only admin "
            f"commands (PyMySQL {pymysql.VERSION_STRING})"
        )


class _Rejected(AtlasError):
    """Atlas answered the command with an error: nothing changed, the connection is usable."""

    def __init__(self, text: str, message: str):
        super().__init__(text)
        self.message = message


class _LostConnection(Exception):
    """The admin connection failed mid-command (closed, reset, timed out)."""
