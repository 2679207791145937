"""How the lab sees its servers: over their unix sockets as root, never through orch.

What orch decided is judged from these readings, so they do not share orch's code:
server states, GTID comparisons, read_only samples of both servers, the writer's rows.
"""

from __future__ import annotations

import threading
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from orchestrator.lab import mariadb
from orchestrator.lab.hosts import DRILL_TABLE


@dataclass(frozen=True)
class ServerState:
    """One server seen over its unix socket (works from any network namespace)."""

    name: str
    up: bool
    read_only: Optional[bool] = None
    source: Optional[str] = None  # "host:port" it replicates from
    io: str = ""
    sql: str = ""
    sql_error: str = ""
    io_error: str = ""
    gtid_binlog_state: str = ""
    gtid_current_pos: str = ""
    error: str = ""

    @property
    def replicating(self) -> bool:
        return self.io == "Yes" and self.sql == "Yes"

    def describe(self) -> str:
        if not self.up:
            return f"{self.name}: down ({self.error})"
        role = "read-only" if self.read_only else "writable"
        repl = f"replicates from {self.source} (IO {self.io}, SQL {self.sql})" if self.source else "no replication"
        errors = "".join(f"; {k}: {v}" for k, v in (("IO error", self.io_error), ("SQL error", self.sql_error)) if v)
        return f"{self.name}: {role}, {repl}{errors}, gtid_binlog_state {self.gtid_binlog_state or '(empty)'}"


def server_state(db: mariadb.MariaDBInstance) -> ServerState:
    import pymysql

    try:
        with closing(db.connect(connect_timeout=1, read_timeout=2, cursorclass=pymysql.cursors.DictCursor)) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT @@global.read_only AS ro, @@global.gtid_binlog_state AS bs, @@global.gtid_current_pos AS cp")
                head = cur.fetchone()
                cur.execute("SHOW SLAVE STATUS")
                st = cur.fetchone()
    except (pymysql.MySQLError, OSError) as exc:
        return ServerState(db.name, False, error=str(exc.args[-1] if exc.args else exc))
    source = f"{st['Master_Host']}:{st['Master_Port']}" if st and st.get("Master_Host") else None
    return ServerState(
        db.name, True, bool(int(head["ro"])), source,
        io=(st or {}).get("Slave_IO_Running", ""), sql=(st or {}).get("Slave_SQL_Running", ""),
        sql_error=(st or {}).get("Last_SQL_Error", ""), io_error=(st or {}).get("Last_IO_Error", ""),
        gtid_binlog_state=str(head["bs"] or ""), gtid_current_pos=str(head["cp"] or ""),
    )


def gtids_beyond(state: str, other: str) -> List[str]:
    """GTIDs (domain-server-seq, from gtid_binlog_state) in ``state`` that ``other`` does not reach."""
    def parse(text: str) -> Dict[Tuple[str, str], int]:
        out = {}
        for item in filter(None, (t.strip() for t in text.split(","))):
            domain, server, seq = item.split("-")
            out[(domain, server)] = int(seq)
        return out

    mine, theirs = parse(state), parse(other)
    return [f"{d}-{s}-{theirs.get((d, s), 0) + 1}..{n}" for (d, s), n in sorted(mine.items()) if n > theirs.get((d, s), 0)]


class Sampler:
    """Reads read_only on every server every ``interval`` seconds (unix sockets) and keeps the samples."""

    def __init__(self, dbs: Dict[str, mariadb.MariaDBInstance], interval: float = 0.05) -> None:
        self.dbs = dbs
        self.interval = interval
        self.samples: List[Tuple[float, Dict[str, Optional[int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read-only-sampler", daemon=True)

    def _run(self) -> None:
        import pymysql

        conns: Dict[str, Any] = {}
        while not self._stop.is_set():
            started = time.monotonic()
            row: Dict[str, Optional[int]] = {}
            for name, db in self.dbs.items():
                try:
                    if name not in conns:
                        conns[name] = db.connect(connect_timeout=0.5, read_timeout=0.5, write_timeout=0.5)
                    with conns[name].cursor() as cur:
                        cur.execute("SELECT @@global.read_only")
                        row[name] = int(cur.fetchone()[0])
                except (pymysql.MySQLError, OSError):
                    conn = conns.pop(name, None)
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:
                            pass
                    row[name] = None
            self.samples.append((started, row))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        for conn in conns.values():
            try:
                conn.close()
            except Exception:
                pass

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def both_writable(self) -> List[Tuple[float, Dict[str, Optional[int]]]]:
        return [(t, row) for t, row in self.samples if len(row) > 1 and all(v == 0 for v in row.values())]


def row_ids(db: mariadb.MariaDBInstance) -> set:
    schema, table = DRILL_TABLE
    return {int(r["id"]) for r in db.sql(f"SELECT id FROM `{schema}`.`{table}`")}
