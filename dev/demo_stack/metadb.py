"""Read-only access to the demo's SQLite metadata database (the ``callback`` table).

The public REST API has no endpoint for executor callbacks, so the demo reads the table
directly with :mod:`sqlite3`.  Connections are opened read-only and kept short so that the
Airflow components writing to the same file are not held up.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_DEADLINE_CALLBACKS_SQL = """
SELECT c.id, c.type, c.state, c.output, c.data
FROM callback AS c
JOIN deadline AS d ON d.callback_id = c.id
JOIN dag_run AS r ON r.id = d.dagrun_id
WHERE r.dag_id = ? AND r.run_id = ?
ORDER BY c.created_at
"""

# DAG run and task instance callbacks on executors name their run in ``data`` (stored as
# Airflow's serialized dict: the keys sit under ``__var``).
_DAG_RUN_CALLBACKS_SQL = """
SELECT c.id, c.type, c.state, c.output, c.data
FROM callback AS c
WHERE c.type = 'executor'
  AND json_extract(c.data, '$.__var.kind') IN ('dag_run', 'task_instance')
  AND json_extract(c.data, '$.__var.dag_id') = ? AND json_extract(c.data, '$.__var.run_id') = ?
ORDER BY c.created_at
"""


@dataclass(frozen=True)
class CallbackRow:
    """One row of the ``callback`` table."""

    id: str
    type: str
    state: str | None
    output: str | None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def executor(self) -> str | None:
        value = self.data.get("executor")
        return str(value) if value else None

    @property
    def path(self) -> str | None:
        value = self.data.get("path")
        return str(value) if value else None


def normalize_uuid(value: Any) -> str:
    """Render a UUID column value (SQLAlchemy stores 32 hex chars on SQLite) canonically."""
    try:
        if isinstance(value, (bytes, bytearray)) and len(value) == 16:
            return str(uuid.UUID(bytes=bytes(value)))
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def _parse_data(value: Any) -> dict[str, Any]:
    if isinstance(value, (bytes, bytearray)):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    if isinstance(value, dict) and value.get("__type") == "dict" and isinstance(value.get("__var"), dict):
        value = value["__var"]  # Airflow's serialized form
    return value if isinstance(value, dict) else {}


def connect_readonly(db_path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    uri = f"file:{urllib.parse.quote(str(db_path))}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=timeout)


def deadline_callbacks(db_path: Path, dag_id: str, run_id: str) -> list[CallbackRow]:
    """Callbacks of the Deadline Alerts of one Dag run.

    Raises :class:`sqlite3.Error` if the database is busy or not there yet; callers that
    poll should treat that as "unknown for now".
    """
    return _callbacks(db_path, _DEADLINE_CALLBACKS_SQL, dag_id, run_id)


def run_callbacks(db_path: Path, dag_id: str, run_id: str) -> list[CallbackRow]:
    """Executor callbacks of one Dag run: its Deadline Alerts' and its own (on_failure_callback...)."""
    return _callbacks(db_path, _DEADLINE_CALLBACKS_SQL, dag_id, run_id) + _callbacks(
        db_path, _DAG_RUN_CALLBACKS_SQL, dag_id, run_id
    )


def _callbacks(db_path: Path, sql: str, dag_id: str, run_id: str) -> list[CallbackRow]:
    conn = connect_readonly(db_path)
    try:
        rows = conn.execute(sql, (dag_id, run_id)).fetchall()
    finally:
        conn.close()
    return [
        CallbackRow(
            id=normalize_uuid(row[0]),
            type=str(row[1]),
            state=row[2],
            output=row[3],
            data=_parse_data(row[4]),
        )
        for row in rows
    ]


def enable_wal(db_path: Path) -> str:
    """Switch the SQLite file to write-ahead logging; returns the resulting journal mode.

    WAL lets readers (api-server, this demo) run while a writer (scheduler) commits, which
    keeps the api-server responsive on a busy machine.  The mode is stored in the file, so
    every Airflow process opening it afterwards uses it.
    """
    conn = sqlite3.connect(str(db_path), timeout=30)
    try:
        return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
    finally:
        conn.close()
