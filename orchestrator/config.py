"""Configuration: YAML -> frozen dataclasses, with every problem reported at once.

Defaults live here and nowhere else. Key names are a public interface.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .errors import ConfigError, UsageError
from .lazy import Pattern

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Tuple

DEFAULT_PATH = "/etc/orch/orch.yaml"
FLAVORS = ("auto", "mysql", "mariadb")
PERSIST_MODES = ("rewrite", "save_config", "none")


TLS_MODES = ("disabled", "preferred", "required")
MAX_REPLICATION_PASSWORD = 96  # bytes MariaDB keeps of MASTER_PASSWORD


@dataclass(frozen=True)
class Account:
    """A MySQL account orch logs in with (mysql) or hands to the replica (replication)."""

    user: str
    password: str = field(repr=False)
    connect_timeout: float = 2.0
    tls: str = "preferred"  # like the mysql client: TLS when the server offers it
    tls_ca: str = ""  # verify the server's certificate (and host name) against this CA
    read_timeout: float = 2.0  # observation statements; the handshake uses connect_timeout


@dataclass(frozen=True)
class Node:
    """One of the two servers."""

    name: str
    host: str
    port: int = 3306
    atlas_address: str = ""  # "ip:port" as Atlas knows this server; default host:port


@dataclass(frozen=True)
class Failover:
    """The failover's deadlines."""

    catchup_timeout: float = 30.0
    lock_timeout: float = 120.0  # how long a hook waits for another run to finish
    fence_timeout: float = 3.0  # how long fencing a live peer may wait for its running writes
    semi_sync: bool = False  # semi-synchronous replication without asynchronous fallback (orch manages the wait)
    witness: str = ""  # an address both hosts reach (the gateway): tells "my replica died" from "I am isolated"
    auto_rewind: bool = True  # roll back a divergent tail automatically when it is proven never acknowledged
    block_seconds: float = 3600.0  # anti-flapping: refuse an automatic promotion this soon after the last one (0: off)


@dataclass(frozen=True)
class AtlasInstance:
    """One Atlas proxy and how orch reaches its admin port."""

    name: str
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    config_file: str = ""
    persist: str = "rewrite"
    timeout: float = 2.0


@dataclass(frozen=True)
class Maintainer:
    """The maintainer's pace and its replica lag limit."""

    interval: float = 5.0
    max_lag: int = 10
    metrics_port: int = 0  # Prometheus metrics on this port (0: off)


@dataclass(frozen=True)
class Keepalived:
    """Which keepalived events are ours, and the VIP they move."""

    instance: str = ""  # act only on notify events for this VRRP instance/group name
    vip: str = ""  # notify checks whether this host holds it (the real state)
    vip_check: bool = True  # false: no VIP to check (moved by other means, or a one-host test pair)
    track_file: str = ""  # keepalived vrrp_track_file (weight 0) orch writes to hand the VIP over
    interface: str = ""  # the VRRP interface: the duplicate-VIP (ARP) check runs on it


@dataclass(frozen=True)
class Webhook:
    """Where alerts are POSTed as JSON; header values may carry tokens (secrets)."""

    url: str = field(repr=False)
    timeout: float = 3.0
    headers: Tuple[Tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Smtp:
    """The mail relay alerts go through (STARTTLS and login optional)."""

    host: str
    port: int = 25
    starttls: bool = False
    user: str = ""
    password: str = field(default="", repr=False)
    sender: str = ""  # the key is ``from``
    to: Tuple[str, ...] = ()
    timeout: float = 3.0


@dataclass(frozen=True)
class Alerts:
    """Alert transports (at least one) and the window within which an identical alert is sent once."""

    webhook: Optional[Webhook] = None
    smtp: Optional[Smtp] = None
    dedup_seconds: float = 300.0

    @property
    def secrets(self) -> Tuple[str, ...]:
        values: List[str] = []
        if self.webhook is not None:
            values.append(self.webhook.url)  # a webhook URL often is the token (Slack, Teams...)
            for _, value in self.webhook.headers:
                values += [value, value.split()[-1] if value.split() else ""]  # "Bearer TOKEN": the token alone too
        if self.smtp is not None:
            values.append(self.smtp.password)
        return tuple(v for v in values if v)


HOOK_PHASES = ("pre_failover", "post_failover", "pre_switchover", "post_switchover")


@dataclass(frozen=True)
class Hooks:
    """Site commands run around a promotion or a switchover (orchestrator/hooks.py): argv
    lists run without a shell, context in ORCH_* environment variables."""

    timeout: float = 10.0  # seconds per hook; then it is killed with its process group
    pre_failover: Tuple[Tuple[str, ...], ...] = ()
    post_failover: Tuple[Tuple[str, ...], ...] = ()
    pre_switchover: Tuple[Tuple[str, ...], ...] = ()
    post_switchover: Tuple[Tuple[str, ...], ...] = ()

    def of(self, phase: str) -> Tuple[Tuple[str, ...], ...]:
        return getattr(self, phase) if phase in HOOK_PHASES else ()


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: str
    cluster: str
    flavor: str
    self_name: str
    nodes: Tuple[Node, ...]
    mysql: Account
    replication: Account
    failover: Failover = Failover()
    state_dir: str = "/var/lib/orch"
    atlas: Tuple[AtlasInstance, ...] = ()
    maintainer: Maintainer = Maintainer()
    keepalived: Keepalived = Keepalived()
    hooks: Hooks = Hooks()
    alerts: Optional[Alerts] = None  # None: no alerts configured (the notify path checks only this)
    syslog: bool = False
    warnings: Tuple[str, ...] = ()

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def me(self) -> Node:
        return self.node(self.self_name)

    @property
    def peer(self) -> Node:
        return next(n for n in self.nodes if n.name != self.self_name)

    @property
    def secrets(self) -> Tuple[str, ...]:
        """Every password in this config, for the log redaction filter."""
        values = [self.mysql.password, self.replication.password] + [a.password for a in self.atlas]
        if self.alerts is not None:
            values += self.alerts.secrets
        return tuple(v for v in values if v)


class _Problems:
    def __init__(self) -> None:
        self.items: List[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def _mapping(raw: Any, path: str, problems: _Problems) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.add(path, "expected a mapping")
        return {}
    return raw


def _unknown_keys(m: Mapping[str, Any], path: str, known: Tuple[str, ...], problems: _Problems) -> None:
    """A misspelt key must not silently fall back to its default."""
    for key in m:
        if key not in known:
            problems.add(f"{path}.{key}" if path else str(key), "unknown key")


def _str(raw: Mapping[str, Any], key: str, path: str, problems: _Problems, default: Optional[str] = None) -> str:
    value = raw.get(key, default)
    if value is None:
        problems.add(f"{path}.{key}" if path else key, "missing")
        return ""
    if not isinstance(value, str) or not value.strip():
        problems.add(f"{path}.{key}" if path else key, "expected a non-empty string")
        return ""
    return value


def _int(raw: Mapping[str, Any], key: str, path: str, problems: _Problems, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(f"{path}.{key}", "expected an integer")
        return default
    if not lo <= value <= hi:
        problems.add(f"{path}.{key}", f"expected an integer from {lo} to {hi}")
        return default
    return value


def _number(raw: Mapping[str, Any], key: str, path: str, problems: _Problems, default: float, lo: float, hi: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.add(f"{path}.{key}", "expected a number")
        return default
    if not lo <= value <= hi:
        problems.add(f"{path}.{key}", f"expected a number from {lo:g} to {hi:g}")
        return default
    return float(value)


def _bool(raw: Mapping[str, Any], key: str, path: str, problems: _Problems, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        problems.add(f"{path}.{key}", "expected true or false")
        return default
    return value


def _witness(raw: Mapping[str, Any], problems: _Problems) -> str:
    value = raw.get("witness", "")
    if value in ("", None):
        return ""
    try:
        return ipv4_address(str(value))
    except ValueError:
        problems.add("failover.witness", f"{value!r} is not an IPv4 address")
        return ""


def _password(raw: Mapping[str, Any], path: str, problems: _Problems, base_dir: str) -> str:
    if "password" in raw and "password_file" in raw:
        problems.add(path, "give password or password_file, not both")
        return ""
    if "password_file" in raw:
        pf = raw["password_file"]
        if not isinstance(pf, str) or not pf:
            problems.add(f"{path}.password_file", "expected a file path")
            return ""
        pf = os.path.join(base_dir, pf)
        try:
            with open(pf, encoding="utf-8") as fh:
                value = fh.read().rstrip("\r\n")
        except OSError as exc:
            problems.add(f"{path}.password_file", f"cannot read {pf}: {exc.strerror}")
            return ""
        if not value:
            problems.add(f"{path}.password_file", f"{pf} is empty")
        return value
    value = raw.get("password")
    if value is None:
        problems.add(f"{path}.password", "missing (or give password_file)")
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        problems.add(f"{path}.password", "expected a string")
        return ""
    return str(value)


def parse_ipv4_address(text: str) -> str:
    """Validate ``a.b.c.d:port`` (what Atlas accepts); return it normalized or raise ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not IPv4:port")
    try:
        ip = ipv4_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not IPv4:port (Atlas takes no host names)") from None
    return f"{ip}:{int(port)}"


def _account(raw: Any, path: str, problems: _Problems, base_dir: str, with_timeout: bool) -> Account:
    m = _mapping(raw, path, problems)
    if raw is None:
        problems.add(path, "missing")
        return Account("", "")
    _unknown_keys(m, path, MYSQL_KEYS if with_timeout else REPLICATION_KEYS, problems)
    user = _str(m, "user", path, problems)
    password = _password(m, path, problems, base_dir)
    if not with_timeout:
        return Account(user, password)
    timeout = _number(m, "connect_timeout", path, problems, 2.0, 0.1, 60)
    read_timeout = _number(m, "read_timeout", path, problems, 2.0, 0.1, 600)
    tls = m.get("tls", "preferred")
    if tls not in TLS_MODES:
        problems.add(f"{path}.tls", f"expected one of {', '.join(TLS_MODES)}")
        tls = "preferred"
    tls_ca = m.get("tls_ca", "")
    if not isinstance(tls_ca, str):
        problems.add(f"{path}.tls_ca", "expected a file path")
        tls_ca = ""
    elif tls_ca:
        tls_ca = os.path.join(base_dir, tls_ca)
        if not os.path.isfile(tls_ca):
            problems.add(f"{path}.tls_ca", f"{tls_ca} does not exist")
        if tls == "preferred":
            tls = "required"  # a CA to verify against means TLS is wanted
    return Account(user, password, timeout, tls, tls_ca, read_timeout)


def _nodes(raw: Any, problems: _Problems) -> Tuple[Node, ...]:
    m = _mapping(raw, "nodes", problems)
    if raw is None:
        problems.add("nodes", "missing")
        return ()
    if len(m) != 2:
        problems.add("nodes", f"expected exactly 2 nodes, got {len(m)}")
    nodes = []
    for name, spec in m.items():
        path = f"nodes.{name}"
        spec = _mapping(spec, path, problems)
        _unknown_keys(spec, path, NODE_KEYS, problems)
        host = _str(spec, "host", path, problems)
        port = _int(spec, "port", path, problems, 3306, 1, 65535)
        atlas_address = spec.get("atlas_address")
        if atlas_address is None:
            atlas_address = f"{host}:{port}"
            try:
                atlas_address = parse_ipv4_address(atlas_address)
            except ValueError:
                pass  # only an error when Atlas is configured; checked below
        elif not isinstance(atlas_address, str):
            problems.add(f"{path}.atlas_address", "expected IPv4:port")
        else:
            try:
                atlas_address = parse_ipv4_address(atlas_address)
            except ValueError as exc:
                problems.add(f"{path}.atlas_address", str(exc))
        nodes.append(Node(str(name), host, port, str(atlas_address)))
    return tuple(nodes)


def _atlas(raw: Any, problems: _Problems, base_dir: str) -> Tuple[AtlasInstance, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add("atlas", "expected a list of Atlas instances")
        return ()
    out = []
    names = set()
    for i, item in enumerate(raw):
        path = f"atlas[{i}]"
        m = _mapping(item, path, problems)
        _unknown_keys(m, path, ATLAS_KEYS, problems)
        name = _str(m, "name", path, problems, default=f"atlas{i + 1}")
        if name in names:
            problems.add(f"{path}.name", f"duplicate name {name!r}")
        names.add(name)
        admin = _mapping(m.get("admin"), f"{path}.admin", problems)
        if m.get("admin") is None:
            problems.add(f"{path}.admin", "missing")
        apath = f"{path}.admin"
        _unknown_keys(admin, apath, ATLAS_ADMIN_KEYS, problems)
        host = _str(admin, "host", apath, problems, default="127.0.0.1") if admin else ""
        port = _int(admin, "port", apath, problems, 2345, 1, 65535) if admin else 0
        user = _str(admin, "user", apath, problems) if admin else ""
        password = _password(admin, apath, problems, base_dir) if admin else ""
        timeout = _number(admin, "timeout", apath, problems, 2.0, 0.1, 60) if admin else 2.0
        config_file = m.get("config_file", "")
        if not isinstance(config_file, str):
            problems.add(f"{path}.config_file", "expected a file path")
            config_file = ""
        persist = m.get("persist", "rewrite" if config_file else "none")
        if persist not in PERSIST_MODES:
            problems.add(f"{path}.persist", f"expected one of {', '.join(PERSIST_MODES)}")
        elif persist == "rewrite" and not config_file:
            problems.add(f"{path}.config_file", "missing (persist: rewrite needs it)")
        out.append(AtlasInstance(name, host, port, user, password, config_file, str(persist), timeout))
    return tuple(out)


def _keepalived(raw: Any, problems: _Problems) -> Keepalived:
    ka = _mapping(raw, "keepalived", problems)
    _unknown_keys(ka, "keepalived", KEEPALIVED_KEYS, problems)
    vip_check = ka.get("vip_check", True)
    if not isinstance(vip_check, bool):
        problems.add("keepalived.vip_check", "expected true or false")
        vip_check = True
    vip = ka.get("vip") or ""
    if vip and not vip_check:
        problems.add("keepalived.vip", "set while keepalived.vip_check is false: give one or the other")
        vip = ""
    elif vip:
        try:
            vip = ip_address(str(vip).split("/")[0])
        except ValueError:
            problems.add("keepalived.vip", "expected an IP address")
            vip = ""
    elif vip_check:
        problems.add("keepalived.vip", "missing: notify needs it to tell stale keepalived events from the real state "
                     "(opt out with keepalived.vip_check: false where something else moves the VIP, or both nodes run on one host)")
    instance = ka.get("instance", "")
    if not isinstance(instance, str):
        problems.add("keepalived.instance", "expected a string")
        instance = ""
    track_file = ka.get("track_file", "")
    if not isinstance(track_file, str) or (track_file and not os.path.isabs(track_file)):
        problems.add("keepalived.track_file", "expected an absolute file path")
        track_file = ""
    interface = ka.get("interface", "")
    if not isinstance(interface, str) or (interface and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", interface)):
        problems.add("keepalived.interface", "expected a network interface name")
        interface = ""
    return Keepalived(instance=instance, vip=vip, vip_check=vip_check, track_file=track_file, interface=interface)


_HEADER_NAME = Pattern(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _webhook(raw: Any, problems: _Problems) -> Optional[Webhook]:
    path = "alerts.webhook"
    m = _mapping(raw, path, problems)
    _unknown_keys(m, path, WEBHOOK_KEYS, problems)
    url = _str(m, "url", path, problems)
    if url:
        from urllib.parse import urlsplit  # only with a webhook configured

        try:
            parts = urlsplit(url)
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            parts, port_ok = None, False
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or re.search(r"\s", url):
            problems.add(f"{path}.url", "expected an http:// or https:// URL")
        elif "@" in parts.netloc:
            problems.add(f"{path}.url", "credentials in the URL are not supported: give them in headers (Authorization)")
    timeout = _number(m, "timeout", path, problems, 3.0, 0.1, 60)
    headers: List[Tuple[str, str]] = []
    raw_headers = m.get("headers")
    hm = _mapping(raw_headers, f"{path}.headers", problems)
    for name, value in hm.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            problems.add(f"{path}.headers", f"{name!r} is not an HTTP header name")
        elif not isinstance(value, str) or re.search(r"[\r\n\0]", value):
            problems.add(f"{path}.headers.{name}", "expected a one-line string")  # never echo the value: it may be a token
        else:
            headers.append((name, value))
    return Webhook(url, timeout, tuple(headers))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        if ":" in host:
            return _ipv6(host).is_loopback
        return ipv4_address(host).startswith("127.")  # 127.0.0.0/8
    except ValueError:
        return False


# Addresses, as the ipaddress module reads and writes them, without importing it for IPv4
# (~2 ms of the notify hook, which loads the config on every event). Dotted-quad IPv4 as
# inet_pton reads it is exactly what ipaddress accepts (four decimal parts 0-255, no
# leading zeros), and prints unchanged; anything with a colon goes to ipaddress itself.
# tests/test_config.py compares both on many strings.


def ipv4_address(text: str) -> str:
    """``str(ipaddress.IPv4Address(text))``: the address, or ValueError."""
    try:
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError, TypeError):
        raise ValueError(f"{text!r} does not appear to be an IPv4 address") from None
    return text


def ip_address(text: str) -> str:
    """``str(ipaddress.ip_address(text))``: the address, normalized, or ValueError."""
    if ":" in text:
        return str(_ipv6(text))
    try:
        return ipv4_address(text)
    except ValueError:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 address") from None


def _ipv6(text: str) -> Any:
    import ipaddress

    return ipaddress.IPv6Address(text)


def _smtp(raw: Any, problems: _Problems, base_dir: str) -> Optional[Smtp]:
    path = "alerts.smtp"
    m = _mapping(raw, path, problems)
    _unknown_keys(m, path, SMTP_KEYS, problems)
    host = _str(m, "host", path, problems)
    starttls = _bool(m, "starttls", path, problems, False)
    port = _int(m, "port", path, problems, 587 if starttls else 25, 1, 65535)
    user = ""
    password = ""
    if "user" in m:
        user = _str(m, "user", path, problems)
        password = _password(m, path, problems, base_dir)
        if host and not starttls and not _loopback(host):
            problems.add(f"{path}.starttls", "must be true to log in to a non-loopback host (the password would cross the network in clear)")
    elif "password" in m or "password_file" in m:
        problems.add(f"{path}.user", "missing (a password needs a user)")
    sender = _str(m, "from", path, problems)
    if sender and ("@" not in sender or re.search(r"[\r\n]", sender)):
        problems.add(f"{path}.from", "expected a mail address")
    to = m.get("to")
    recipients: List[str] = []
    if to is None:
        problems.add(f"{path}.to", "missing")
    elif not isinstance(to, list) or not to:
        problems.add(f"{path}.to", "expected a list of mail addresses")
    else:
        for i, address in enumerate(to):
            if not isinstance(address, str) or "@" not in address or re.search(r"[\r\n]", address):
                problems.add(f"{path}.to[{i}]", "expected a mail address")
            else:
                recipients.append(address)
    timeout = _number(m, "timeout", path, problems, 3.0, 0.1, 60)
    return Smtp(host, port, starttls, user, password, sender, tuple(recipients), timeout)


def _alerts(raw: Any, problems: _Problems, base_dir: str) -> Optional[Alerts]:
    if raw is None:
        return None
    m = _mapping(raw, "alerts", problems)
    _unknown_keys(m, "alerts", ALERTS_KEYS, problems)
    webhook = _webhook(m["webhook"], problems) if m.get("webhook") is not None else None
    smtp = _smtp(m["smtp"], problems, base_dir) if m.get("smtp") is not None else None
    dedup = _number(m, "dedup_seconds", "alerts", problems, 300.0, 0, 86400)
    if webhook is None and smtp is None:
        if isinstance(raw, Mapping):
            problems.add("alerts", "give webhook or smtp (or leave alerts out)")
        return None
    return Alerts(webhook, smtp, dedup)


def _hooks(raw: Any, problems: _Problems) -> Hooks:
    """hooks: {timeout, pre_failover: [[argv...], ...], ...}: each hook a non-empty list of
    strings whose first item is an absolute program path (no PATH lookup, no shell)."""
    if raw is None:
        return Hooks()
    m = _mapping(raw, "hooks", problems)
    _unknown_keys(m, "hooks", ("timeout",) + HOOK_PHASES, problems)
    timeout = _number(m, "timeout", "hooks", problems, 10.0, 0.1, 3600)
    lists = {}
    for phase in HOOK_PHASES:
        value = m.get(phase, [])
        path = f"hooks.{phase}"
        if value is None:
            value = []
        if not isinstance(value, list):
            problems.add(path, "expected a list of argv lists ([[/usr/local/bin/x, arg], ...])")
            continue
        hooks = []
        for i, argv in enumerate(value):
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
                problems.add(f"{path}[{i}]", "expected a non-empty list of non-empty strings (an argv, run without a shell)")
            elif not os.path.isabs(argv[0]):
                problems.add(f"{path}[{i}][0]", f"expected an absolute program path, got {argv[0]!r} (hooks run without PATH lookup)")
            elif any("\0" in a for a in argv):
                problems.add(f"{path}[{i}]", "an argument contains a NUL byte")
            else:
                hooks.append(tuple(argv))
        lists[phase] = tuple(hooks)
    return Hooks(timeout=timeout, **lists)


def _hook_warnings(hooks: Hooks) -> Tuple[str, ...]:
    """A pre hook that cannot run refuses every promotion: say so at every load."""
    out = []
    for phase in HOOK_PHASES:
        for i, argv in enumerate(hooks.of(phase)):
            if not os.access(argv[0], os.X_OK):
                what = "every promotion would be refused" if phase.startswith("pre_") else "it would fail"
                out.append(f"hooks.{phase}[{i}]: {argv[0]} is missing or not executable: {what}")
    return tuple(out)


KNOWN_KEYS = (
    "cluster", "flavor", "self", "nodes", "mysql", "replication", "failover", "state_dir",
    "atlas", "maintainer", "keepalived", "log", "alerts", "hooks",
)
NODE_KEYS = ("host", "port", "atlas_address")
MYSQL_KEYS = ("user", "password", "password_file", "connect_timeout", "read_timeout", "tls", "tls_ca")
REPLICATION_KEYS = ("user", "password", "password_file")
FAILOVER_KEYS = ("catchup_timeout", "lock_timeout", "fence_timeout", "semi_sync", "witness", "auto_rewind", "block_seconds")
ATLAS_KEYS = ("name", "admin", "config_file", "persist")
ATLAS_ADMIN_KEYS = ("host", "port", "user", "password", "password_file", "timeout")
MAINTAINER_KEYS = ("interval", "max_lag", "metrics_port")
KEEPALIVED_KEYS = ("instance", "vip", "vip_check", "track_file", "interface")
LOG_KEYS = ("syslog",)
ALERTS_KEYS = ("webhook", "smtp", "dedup_seconds")
WEBHOOK_KEYS = ("url", "timeout", "headers")
SMTP_KEYS = ("host", "port", "starttls", "user", "password", "password_file", "from", "to", "timeout")


def parse(raw: Any, path: str = "<config>", self_override: Optional[str] = None) -> Config:
    """Validate a loaded YAML document; raise ConfigError listing every problem."""
    problems = _Problems()
    base_dir = os.path.dirname(os.path.abspath(path)) if path and not path.startswith("<") else os.getcwd()
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{path}: expected a YAML mapping at the top level"])
    _unknown_keys(raw, "", KNOWN_KEYS, problems)
    cluster = _str(raw, "cluster", "", problems, default="atlas-ha")
    flavor = raw.get("flavor", "auto")
    if flavor not in FLAVORS:
        problems.add("flavor", f"expected one of {', '.join(FLAVORS)}")
    nodes = _nodes(raw.get("nodes"), problems)
    self_name = self_override or raw.get("self")
    if not self_name:
        problems.add("self", "missing (or give --node / ORCH_NODE)")
    elif nodes and str(self_name) not in {n.name for n in nodes}:
        problems.add("self", f"{self_name!r} is not one of nodes: {', '.join(n.name for n in nodes)}")
    mysql = _account(raw.get("mysql"), "mysql", problems, base_dir, with_timeout=True)
    replication = _account(raw.get("replication"), "replication", problems, base_dir, with_timeout=False)
    if len(replication.password.encode("utf-8")) > MAX_REPLICATION_PASSWORD:
        # MariaDB keeps at most 96 bytes of MASTER_PASSWORD (MySQL: 32 characters).
        problems.add("replication.password", f"longer than {MAX_REPLICATION_PASSWORD} bytes of UTF-8: the server would not keep it whole")
    fo = _mapping(raw.get("failover"), "failover", problems)
    _unknown_keys(fo, "failover", FAILOVER_KEYS, problems)
    failover = Failover(
        catchup_timeout=_number(fo, "catchup_timeout", "failover", problems, 30.0, 0, 3600),
        lock_timeout=_number(fo, "lock_timeout", "failover", problems, 120.0, 0, 3600),
        fence_timeout=_number(fo, "fence_timeout", "failover", problems, 3.0, 0.1, 600),
        semi_sync=_bool(fo, "semi_sync", "failover", problems, False),
        witness=_witness(fo, problems),
        auto_rewind=_bool(fo, "auto_rewind", "failover", problems, True),
        block_seconds=_number(fo, "block_seconds", "failover", problems, 3600.0, 0, 30 * 86400),
    )
    if failover.semi_sync and not failover.witness:
        problems.add("failover.witness", "missing: with semi_sync the maintainer needs it to tell a dead replica from an isolated master")
    state_dir = raw.get("state_dir", "/var/lib/orch")
    if not isinstance(state_dir, str) or not state_dir:
        problems.add("state_dir", "expected a directory path")
        state_dir = "/var/lib/orch"
    atlas = _atlas(raw.get("atlas"), problems, base_dir)
    if atlas:
        for n in nodes:
            try:
                parse_ipv4_address(n.atlas_address)
            except ValueError:
                problems.add(f"nodes.{n.name}.atlas_address", f"{n.host!r} is not an IPv4 address; set atlas_address to IPv4:port")
    mt = _mapping(raw.get("maintainer"), "maintainer", problems)
    _unknown_keys(mt, "maintainer", MAINTAINER_KEYS, problems)
    maintainer = Maintainer(
        interval=_number(mt, "interval", "maintainer", problems, 5.0, 0.1, 3600),
        max_lag=_int(mt, "max_lag", "maintainer", problems, 10, 0, 86400),
        metrics_port=_int(mt, "metrics_port", "maintainer", problems, 0, 0, 65535),
    )
    keepalived = _keepalived(raw.get("keepalived"), problems)
    alerts = _alerts(raw.get("alerts"), problems, base_dir)
    hooks = _hooks(raw.get("hooks"), problems)
    lg = _mapping(raw.get("log"), "log", problems)
    _unknown_keys(lg, "log", LOG_KEYS, problems)
    syslog = lg.get("syslog", False)
    if not isinstance(syslog, bool):
        problems.add("log.syslog", "expected true or false")
        syslog = False
    if problems.items:
        raise ConfigError(problems.items)
    return Config(
        path=path, cluster=cluster, flavor=str(flavor), self_name=str(self_name), nodes=nodes,
        mysql=mysql, replication=replication, failover=failover, state_dir=state_dir,
        atlas=atlas, maintainer=maintainer, keepalived=keepalived, syslog=syslog, alerts=alerts,
        hooks=hooks, warnings=_hook_warnings(hooks),
    )


def _permission_warnings(path: str, raw: Any) -> Tuple[str, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and "password:" in _text_of(raw):
        return (f"{path} holds a password and is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it",)
    return ()


def _text_of(raw: Any) -> str:
    # Look for inline password keys anywhere in the document.
    if isinstance(raw, Mapping):
        return "".join(("password:" if k == "password" else "") + _text_of(v) for k, v in raw.items())
    if isinstance(raw, list):
        return "".join(_text_of(v) for v in raw)
    return ""


def load(path: Optional[str] = None, node: Optional[str] = None) -> Config:
    """Read and validate the YAML config. ``path`` defaults to $ORCH_CONFIG or /etc/orch/orch.yaml.

    What came from the command line (or its environment variables) and is wrong is bad
    input (UsageError, exit 2): a config file that cannot be read, a --node that is not one
    of the file's nodes. A file that says something wrong is a ConfigError (exit 1)."""
    given = "-c" if path else ("$ORCH_CONFIG" if os.environ.get("ORCH_CONFIG") else "the default")
    path = path or os.environ.get("ORCH_CONFIG") or DEFAULT_PATH
    flag = "--node" if node else "ORCH_NODE"
    node = node or os.environ.get("ORCH_NODE") or None
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"orch: cannot read the config file {path} ({given}): {exc.strerror}") from None
    cached = _read_compiled(path, text)
    raw = cached[0] if cached else _parse_yaml(path, text)
    nodes = raw.get("nodes") if isinstance(raw, Mapping) else None
    if node and isinstance(nodes, Mapping) and nodes and node not in nodes:
        raise UsageError(f"orch: {flag} {node} is not one of nodes ({', '.join(str(n) for n in nodes)}) in {path}")
    cfg = parse(raw, path, node)
    if not cached:
        _write_compiled(path, text, raw)
    warnings = _permission_warnings(path, raw)
    if warnings:
        cfg = replace(cfg, warnings=cfg.warnings + warnings)
    return cfg


def _parse_yaml(path: str, text: str) -> Any:
    import yaml  # deferred: importing PyYAML costs the notify hook ~15 ms, which the compiled copy saves

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}:{where}: {problem}"]) from None


# The compiled copy: the parsed YAML as JSON, next to the file (".orch.yaml.compiled"),
# together with the exact text it was parsed from. It is used only when that text equals
# the file's text now (exact invalidation: no clock or size heuristics), and only when
# root wrote it in a root-owned directory nobody else can write: it holds what the
# config holds (passwords), so it is mode 600, and whoever could plant one could
# configure orch.
COMPILED_FORMAT = 1


def compiled_path(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.compiled")


def _trusted_directory(directory: str) -> bool:
    try:
        st = os.stat(directory)
    except OSError:
        return False
    return os.geteuid() == 0 and st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read_compiled(path: str, text: str) -> Optional[Tuple[Any]]:
    """(raw,) from the compiled copy of exactly ``text``, or None (absent, stale or untrusted)."""
    compiled = compiled_path(path)
    if not _trusted_directory(os.path.dirname(compiled)):
        return None
    try:
        fd = os.open(compiled, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    import json  # the journal needs it on the notify path anyway

    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get("format") != COMPILED_FORMAT or data.get("source") != text or "raw" not in data:
        return None
    return (data["raw"],)


def _write_compiled(path: str, text: str, raw: Any) -> None:
    """Save the parse of a valid config for the next run; quietly nothing when that cannot be done exactly."""
    compiled = compiled_path(path)
    directory = os.path.dirname(compiled)
    if not _trusted_directory(directory):
        return
    import json

    try:
        data = json.dumps({"format": COMPILED_FORMAT, "source": text, "raw": raw}, allow_nan=False)
        if json.loads(data)["raw"] != raw:
            return  # YAML that JSON does not keep as it is (non-string keys...): always parse it
    except (TypeError, ValueError):
        return  # dates, binary...: always parse it
    from .statefile import replace_json

    try:
        replace_json(compiled, {"format": COMPILED_FORMAT, "source": text, "raw": raw})  # whole, 0600, or not at all
    except OSError:
        pass
