"""The bench's PostgreSQL databases: create, instrument, query, drop (psycopg2)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres"

# A row per insert / state change of the ``callback`` table, stamped with the database's
# clock at the moment the statement ran.  The ``callback`` table has no updated-at column.
INSTRUMENT_SQL = """
CREATE TABLE IF NOT EXISTS bench_callback_state (
    seq bigserial PRIMARY KEY,
    callback_id uuid NOT NULL,
    type text,
    state text,
    ts timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION bench_log_callback_state() RETURNS trigger AS $$
BEGIN
    INSERT INTO bench_callback_state (callback_id, type, state) VALUES (NEW.id, NEW.type, NEW.state);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS bench_callback_state ON callback;
CREATE TRIGGER bench_callback_state AFTER INSERT OR UPDATE OF state ON callback
    FOR EACH ROW EXECUTE FUNCTION bench_log_callback_state();
"""


@dataclass(frozen=True)
class EventRow:
    run_id: str
    event_ts: float | None
    callback_id: str | None = None


def sqlalchemy_url(dbname: str, host: str = "127.0.0.1", port: int = 5432, user: str = "postgres") -> str:
    return f"postgresql+psycopg2://{user}@{host}:{port}/{dbname}"


class Postgres:
    """Admin and query access to the local server (trust auth)."""

    def __init__(self, dsn: str = DEFAULT_DSN) -> None:
        import psycopg2

        self._psycopg2 = psycopg2
        self.dsn = dsn

    @contextlib.contextmanager
    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> Iterator[Any]:
        conn = self._psycopg2.connect(f"{self.dsn} dbname={dbname}", connect_timeout=10)
        conn.autocommit = autocommit
        try:
            yield conn
        finally:
            conn.close()

    def drop_database(self, name: str) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_database(self, name: str, template: str | None = None) -> None:
        self.drop_database(name)
        with self.connect() as conn, conn.cursor() as cur:
            suffix = f' TEMPLATE "{template}"' if template else ""
            cur.execute(f'CREATE DATABASE "{name}"{suffix}')

    def instrument(self, dbname: str) -> None:
        with self.connect(dbname) as conn, conn.cursor() as cur:
            cur.execute(INSTRUMENT_SQL)

    def query(self, dbname: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connect(dbname) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())


def _ts(value: Any) -> float | None:
    return None if value is None else value.timestamp()


def run_end_events(pg: Postgres, dbname: str, dag_id: str, run_ids: Sequence[str]) -> dict[str, EventRow]:
    """Event = the run's ``end_date``; plus the executor callback made for the run, if any."""
    rows = pg.query(
        dbname,
        """
        SELECT r.run_id, r.end_date,
               (SELECT c.id::text FROM callback c
                 WHERE c.type = 'executor'
                   AND coalesce(c.data::jsonb -> '__var' ->> 'dag_run_id', c.data::jsonb ->> 'dag_run_id')
                       = r.id::text
                 ORDER BY c.created_at LIMIT 1)
        FROM dag_run r WHERE r.dag_id = %s AND r.run_id = ANY(%s)
        """,
        (dag_id, list(run_ids)),
    )
    return {run_id: EventRow(run_id, _ts(end), cb) for run_id, end, cb in rows}


def deadline_events(pg: Postgres, dbname: str, dag_id: str, run_ids: Sequence[str]) -> dict[str, EventRow]:
    """Event = the deadline's time (when it was missed); plus its callback."""
    rows = pg.query(
        dbname,
        """
        SELECT r.run_id, d.deadline_time, d.callback_id::text
        FROM deadline d JOIN dag_run r ON r.id = d.dagrun_id
        WHERE r.dag_id = %s AND r.run_id = ANY(%s)
        """,
        (dag_id, list(run_ids)),
    )
    return {run_id: EventRow(run_id, _ts(when), cb) for run_id, when, cb in rows}


def callback_state_times(
    pg: Postgres, dbname: str, callback_ids: Sequence[str]
) -> dict[str, dict[str, float]]:
    """callback id -> {state: first time the row got that state} (``created`` for the insert)."""
    if not callback_ids:
        return {}
    rows = pg.query(
        dbname,
        """
        SELECT callback_id::text, coalesce(state, 'created'), min(ts)
        FROM bench_callback_state WHERE callback_id::text = ANY(%s)
        GROUP BY 1, 2
        """,
        (list(callback_ids),),
    )
    result: dict[str, dict[str, float]] = {}
    for callback_id, state, ts in rows:
        result.setdefault(callback_id, {})[state] = ts.timestamp()
    return result


def callback_log(pg: Postgres, dbname: str, since: float, until: float) -> list[tuple[str, str, str, float]]:
    """(callback id, type, state, time) rows logged within [since, until]."""
    rows = pg.query(
        dbname,
        """
        SELECT callback_id::text, coalesce(type, ''), coalesce(state, 'created'), ts
        FROM bench_callback_state
        WHERE ts >= to_timestamp(%s) AND ts <= to_timestamp(%s) ORDER BY seq
        """,
        (since, until),
    )
    return [(cid, kind, state, ts.timestamp()) for cid, kind, state, ts in rows]


def peak_pending(log: Sequence[tuple[str, str, str, float]], kind: str = "executor") -> int:
    """Most callbacks of ``kind`` that were created but not finished at the same time."""
    open_ids: set[str] = set()
    peak = 0
    for callback_id, row_kind, state, _ in log:
        if row_kind != kind:
            continue
        if state in ("success", "failed"):
            open_ids.discard(callback_id)
        else:
            open_ids.add(callback_id)
        peak = max(peak, len(open_ids))
    return peak


def parse_times(pg: Postgres, dbname: str, prefix: str) -> dict[str, float]:
    """dag id -> ``dag.last_parsed_time`` of the Dags whose id starts with ``prefix``."""
    rows = pg.query(
        dbname,
        "SELECT dag_id, last_parsed_time FROM dag WHERE dag_id LIKE %s",
        (prefix.replace("_", r"\_") + "%",),
    )
    return {dag_id: ts.timestamp() for dag_id, ts in rows if ts is not None}
