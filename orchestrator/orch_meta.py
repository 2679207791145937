"""orch's own schema in the databases (``orch_meta``): records both hosts see because they
replicate (the anti-flapping promotions, the maintenance-mode pauses). One way to add a row."""

from __future__ import annotations

from typing import Any, Sequence

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
