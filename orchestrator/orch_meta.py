"""orch's own schema in the databases (``orch_meta``): records both hosts see because they
replicate (the anti-flapping promotions, the maintenance-mode pauses). One way to add a row."""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from .errors import DatabaseError

SCHEMA = "orch_meta"
NO_TABLE = (1146, 1049)  # table, database does not exist: nothing on record
CREATE_SCHEMA = f"CREATE DATABASE IF NOT EXISTS {SCHEMA}"


def insert_row(server: Any, insert: str, args: Sequence[Any], why: str, create_table: str, table: str, first: str) -> str:
    """Insert one row, creating the schema and ``table`` when missing (``first`` says why, for
    the log); "already recorded" on a duplicate key. Raises DatabaseError otherwise."""
    try:
        server.execute(insert, args, why=why)
        return "recorded"
    except DatabaseError as exc:
        if exc.code == 1062:
            return "already recorded"
        if exc.code not in NO_TABLE:
            raise
    server.execute(CREATE_SCHEMA, why=first)
    server.execute(create_table, why=first)
    server.execute(insert, args, why=why)
    return f"recorded (created {table})"


def read_rows(server: Any, table: str, present: str, query: str, name: str, ask_first: bool = False) -> Tuple[List[Any], str]:
    """(rows of ``query`` on one server's copy of ``table``, why they could not be read or "").

    A missing table (or schema) is no record: no rows, no error. A failed statement closes the
    connection, so the server object remembers what is missing and asks ``present`` (which
    cannot fail) instead: until the table appeared (``Server.missing_tables``), or, with
    ``ask_first``, every time until it has been seen once (``Server.present_tables``: a FAULT
    run must not pay a reconnect for a table that was never created)."""
    try:
        if ask_first:
            if table not in server.present_tables:
                if not int(server.value(present) or 0):
                    return [], ""
                server.present_tables.add(table)
        elif table in server.missing_tables and not int(server.value(present) or 0):
            return [], ""
        rows = server.query(query)
        server.missing_tables.discard(table)
    except DatabaseError as exc:
        if exc.code in NO_TABLE:
            if ask_first:
                server.present_tables.discard(table)
            else:
                server.missing_tables.add(table)
            return [], ""
        return [], f"{name}: {str(exc).split(': ', 1)[-1]}"
    return list(rows or []), ""
