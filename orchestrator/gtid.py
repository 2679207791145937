"""Pure GTID arithmetic for both flavors. No I/O here.

MySQL GTID sets (``uuid[:tag]:1-5:7,uuid2:1-3``) are sets of intervals per source;
MariaDB GTID positions (``0-1-100,1-2-5``) hold one ``domain-server-seq`` per domain,
and ``gtid_binlog_state`` holds the last seq per (domain, server_id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Tuple

Interval = Tuple[int, int]  # inclusive bounds

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_TAG = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,31}$")
_INTERVAL = re.compile(r"^(\d+)(?:-(\d+))?$")
_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class GtidError(ValueError):
    """A GTID string could not be parsed."""


# --------------------------------------------------------------------------- MySQL


def _normalize(intervals: Iterable[Interval]) -> Tuple[Interval, ...]:
    merged: List[List[int]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


@dataclass(frozen=True)
class GtidSet:
    """A MySQL GTID set: source key (``uuid`` or ``uuid:tag``) -> sorted disjoint intervals."""

    sources: Tuple[Tuple[str, Tuple[Interval, ...]], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> "GtidSet":
        """Parse ``@@gtid_executed`` / ``Retrieved_Gtid_Set`` text (newlines allowed)."""
        acc: Dict[str, List[Interval]] = {}
        text = (text or "").replace("\n", "").strip()
        if not text:
            return cls()
        for element in text.split(","):
            parts = [p.strip() for p in element.strip().split(":")]
            if len(parts) < 2 or not _UUID.match(parts[0]):
                raise GtidError(f"invalid GTID set element {element.strip()!r}")
            uuid = parts[0].lower()
            if len(parts[0]) == 32:
                u = uuid
                uuid = f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"
            key = uuid
            for part in parts[1:]:
                if _TAG.match(part):
                    key = f"{uuid}:{part.lower()}"
                    acc.setdefault(key, [])
                    continue
                m = _INTERVAL.match(part)
                if not m:
                    raise GtidError(f"invalid GTID interval {part!r} in {element.strip()!r}")
                lo = int(m.group(1))
                hi = int(m.group(2) or lo)
                if lo < 1 or hi < lo:
                    raise GtidError(f"invalid GTID interval {part!r} in {element.strip()!r}")
                acc.setdefault(key, []).append((lo, hi))
        return cls._build(acc)

    @classmethod
    def _build(cls, acc: Mapping[str, Iterable[Interval]]) -> "GtidSet":
        items = []
        for key in sorted(acc):
            ivs = _normalize(acc[key])
            if ivs:
                items.append((key, ivs))
        return cls(tuple(items))

    def as_dict(self) -> Dict[str, Tuple[Interval, ...]]:
        return dict(self.sources)

    def __bool__(self) -> bool:
        return bool(self.sources)

    def __str__(self) -> str:
        out = []
        for key, ivs in self.sources:
            spans = ":".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ivs)
            out.append(f"{key}:{spans}")
        return ",".join(out)

    def subtract(self, other: "GtidSet") -> "GtidSet":
        """Transactions in self and not in other (MySQL's ``GTID_SUBTRACT``)."""
        theirs = other.as_dict()
        acc: Dict[str, List[Interval]] = {}
        for key, ivs in self.sources:
            remaining = list(ivs)
            for olo, ohi in theirs.get(key, ()):
                nxt: List[Interval] = []
                for lo, hi in remaining:
                    if ohi < lo or olo > hi:
                        nxt.append((lo, hi))
                        continue
                    if lo < olo:
                        nxt.append((lo, olo - 1))
                    if hi > ohi:
                        nxt.append((ohi + 1, hi))
                remaining = nxt
            acc[key] = remaining
        return GtidSet._build(acc)


# --------------------------------------------------------------------------- MariaDB


@dataclass(frozen=True, order=True)
class MariaGtid:
    """One MariaDB GTID: domain-server_id-seq."""

    domain: int
    server_id: int
    seq: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.seq}"


def parse_mariadb_gtids(text: str | None) -> Tuple[MariaGtid, ...]:
    """Parse a comma-separated list of ``domain-server-seq`` (a position or a binlog state)."""
    out = []
    for part in (text or "").replace("\n", "").split(","):
        part = part.strip()
        if not part:
            continue
        m = _MARIADB_GTID.match(part)
        if not m:
            raise GtidError(f"invalid MariaDB GTID {part!r}")
        out.append(MariaGtid(int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return tuple(sorted(out))


@dataclass(frozen=True)
class GtidPos:
    """A MariaDB GTID position: the last GTID per replication domain."""

    gtids: Tuple[MariaGtid, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> "GtidPos":
        seen: Dict[int, MariaGtid] = {}
        for g in parse_mariadb_gtids(text):
            if g.domain in seen:
                raise GtidError(f"GTID position {text!r} has domain {g.domain} twice")
            seen[g.domain] = g
        return cls(tuple(seen[d] for d in sorted(seen)))

    def by_domain(self) -> Dict[int, MariaGtid]:
        return {g.domain: g for g in self.gtids}

    def __bool__(self) -> bool:
        return bool(self.gtids)

    def __str__(self) -> str:
        return ",".join(str(g) for g in self.gtids)

    def missing_from(self, have: "GtidPos") -> "GtidPos":
        """The domains of self that ``have`` has not reached (by sequence number).

        Sequence numbers grow monotonically within a domain (gtid_strict_mode), so
        a position with a sequence at least as high in a domain has reached it.
        """
        got = have.by_domain()
        return GtidPos(tuple(g for g in self.gtids if g.domain not in got or got[g.domain].seq < g.seq))


@dataclass(frozen=True)
class BinlogState:
    """MariaDB ``gtid_binlog_state``: the last seq per (domain, server_id)."""

    gtids: Tuple[MariaGtid, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> "BinlogState":
        return cls(parse_mariadb_gtids(text))

    def last_seq(self, domain: int, server_id: int) -> int | None:
        best = None
        for g in self.gtids:
            if g.domain == domain and g.server_id == server_id:
                best = g.seq if best is None else max(best, g.seq)
        return best

    def __str__(self) -> str:
        return ",".join(str(g) for g in self.gtids)


def mariadb_errant(local_binlog_pos: GtidPos, peer_binlog_state: BinlogState) -> Tuple[MariaGtid, ...]:
    """GTIDs this node has that the peer lacks, MariaDB rules.

    This node's last GTID in each domain must be present on the peer: the peer's
    binlog state holds the same domain *and server id* with a sequence at least as
    high. The same sequence under another server id is divergence, not agreement
    (after a failover both servers can reach the same sequence in a domain).
    """
    errant = []
    for g in local_binlog_pos.gtids:
        peer_seq = peer_binlog_state.last_seq(g.domain, g.server_id)
        if peer_seq is None or peer_seq < g.seq:
            errant.append(g)
    return tuple(errant)
