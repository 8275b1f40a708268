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


# ------------------------------------------------------------------- pending window
# Columns of a cloned executor callback that do not come from the template row: a new id, a
# fresh PENDING row nobody has queued yet.  Every other column is copied, so the clone has
# the template's shape whatever the installed Airflow's schema is.
CLONE_OVERRIDES = {
    "id": "gen_random_uuid()",
    "state": "'pending'",
    "created_at": "clock_timestamp()",
    "queued_by_job_id": "NULL",
    "queued_at": "NULL",
    "output": "NULL",
    "trigger_id": "NULL",
}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def clone_callback_sql(columns: Sequence[str]) -> str:
    """INSERT ... SELECT that clones one ``callback`` row ``n`` times as PENDING rows.

    Parameters: ``(n, template id)``; returns the new ids.  ``columns`` are the table's
    columns (``callback_columns``); ``id`` and ``state`` must be among them.
    """
    missing = {"id", "state"} - set(columns)
    if missing:
        raise ValueError(f"callback table without column(s) {sorted(missing)}")
    names = ", ".join(_ident(c) for c in columns)
    values = ", ".join(CLONE_OVERRIDES.get(c, f"t.{_ident(c)}") for c in columns)
    return (
        f"INSERT INTO callback ({names}) "
        f"SELECT {values} FROM callback t CROSS JOIN generate_series(1, %s) AS g(i) "
        "WHERE t.id = %s::uuid RETURNING id::text"
    )


def callback_columns(pg: Postgres, dbname: str) -> list[str]:
    """The ``callback`` table's columns, in table order."""
    rows = pg.query(
        dbname,
        """
        SELECT column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'callback' ORDER BY ordinal_position
        """,
    )
    return [name for (name,) in rows]


def latest_executor_callback(pg: Postgres, dbname: str) -> str | None:
    """Id of the newest ``type='executor'`` callback row, the template of the clones."""
    rows = pg.query(
        dbname, "SELECT id::text FROM callback WHERE type = 'executor' ORDER BY created_at DESC LIMIT 1"
    )
    return rows[0][0] if rows else None


def insert_pending_callbacks(pg: Postgres, dbname: str, template_id: str, n: int) -> list[str]:
    """Insert ``n`` PENDING executor callbacks cloned from ``template_id``; return their ids."""
    sql = clone_callback_sql(callback_columns(pg, dbname))
    return [cid for (cid,) in pg.query(dbname, sql, (n, template_id))]


def pending_executor_callbacks(pg: Postgres, dbname: str) -> int:
    """How many executor callbacks are PENDING (waiting for an executor slot)."""
    rows = pg.query(dbname, "SELECT count(*) FROM callback WHERE type = 'executor' AND state = 'pending'")
    return int(rows[0][0])


def callback_state_counts(pg: Postgres, dbname: str, callback_ids: Sequence[str]) -> dict[str, int]:
    """State -> how many of ``callback_ids`` are in it now (``deleted`` for rows that are gone)."""
    if not callback_ids:
        return {}
    rows = pg.query(
        dbname,
        "SELECT coalesce(state, 'none'), count(*) FROM callback WHERE id = ANY(%s::uuid[]) GROUP BY 1",
        (list(callback_ids),),
    )
    counts = {state: int(n) for state, n in rows}
    gone = len(callback_ids) - sum(counts.values())
    if gone:
        counts["deleted"] = gone
    return counts


def delete_pending_callbacks(pg: Postgres, dbname: str, callback_ids: Sequence[str]) -> int:
    """Delete those of ``callback_ids`` that are still PENDING; return how many."""
    if not callback_ids:
        return 0
    rows = pg.query(
        dbname,
        "DELETE FROM callback WHERE id = ANY(%s::uuid[]) AND state = 'pending' RETURNING id",
        (list(callback_ids),),
    )
    return len(rows)


def task_state_counts(pg: Postgres, dbname: str, dag_id: str, run_id: str) -> dict[str, int]:
    """State -> number of task instances of one Dag run (``none`` for no state yet)."""
    rows = pg.query(
        dbname,
        """
        SELECT coalesce(state, 'none'), count(*) FROM task_instance
        WHERE dag_id = %s AND run_id = %s GROUP BY 1
        """,
        (dag_id, run_id),
    )
    return {state: int(n) for state, n in rows}


def run_state(pg: Postgres, dbname: str, dag_id: str, run_id: str) -> str | None:
    """The state of one Dag run (``None`` when there is no such run)."""
    rows = pg.query(dbname, "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
    return rows[0][0] if rows else None
