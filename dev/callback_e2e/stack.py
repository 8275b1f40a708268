"""A local Airflow (api-server, scheduler(s), dag-processor) on SQLite or PostgreSQL, for tests.

Reuses the demo's home layout, configuration and process handling; adds what the end-to-end
tests of DAG run callbacks need: a PostgreSQL database of its own, several schedulers, killing
a component, configuration per component and read access to the metadata database.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from callback_e2e.common import BLOCKED_POOL
from demo_stack.airflow_home import DemoHome, airflow_config, child_environment
from demo_stack.api import AirflowApi, ApiError
from demo_stack.ports import LOOPBACK, find_free_port
from demo_stack.procs import ManagedProcess, stop_processes, tail

DAGS = Path(__file__).resolve().parent / "dags"
MARKER_ENV = "CALLBACK_E2E_MARKERS"
PG_SERVER = os.environ.get("CALLBACK_E2E_PG", "postgresql://postgres@127.0.0.1:5432")


class StackError(Exception):
    """The stack did not come up or a wait timed out; the message names the logs to read."""


@dataclass(frozen=True)
class Marker:
    """One line a test callable wrote: which callable, for which run, with which context keys."""

    name: str
    dag_id: str
    run_id: str
    reason: str | None
    keys: tuple[str, ...]
    pid: int
    extra: dict[str, Any] | None = None
    """What a callable that reads through the API saw."""


def read_markers(path: Path) -> list[Marker]:
    if not path.exists():
        return []
    markers = []
    for line in path.read_text().splitlines():
        if line.strip():
            raw = json.loads(line)
            markers.append(
                Marker(
                    name=raw["name"],
                    dag_id=raw["dag_id"],
                    run_id=raw["run_id"],
                    reason=raw.get("reason"),
                    keys=tuple(raw["keys"]),
                    pid=raw["pid"],
                    extra=raw.get("extra"),
                )
            )
    return markers


def callback_log_files(folder: Path, callback_id: str) -> list[Path]:
    """Log files of a callback under a ``base_log_folder`` (``executor_callbacks/<dag>/<run>/<id>``)."""
    base = folder / "executor_callbacks"
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob(f"*/*/{callback_id}*") if p.is_file())


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, poll: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise :class:`StackError` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


class AirflowStack:
    """
    Start with ``with AirflowStack(...) as stack:``; everything started is stopped on exit.

    :param python: the interpreter of the virtualenv Airflow is installed in.
    :param backend: ``"sqlite"`` or ``"postgres"`` (a database of its own, dropped on exit).
    :param config: extra ``AIRFLOW__*`` variables for every component.

    Hooks for harnesses built on it (``dev/edge_e2e``): ``root_prefix`` and ``db_prefix`` name the
    throwaway home and database, ``component_config`` holds configuration of one component
    (by name, also for the api-server and dag-processor that ``__enter__`` starts), and
    :meth:`stop_groups` says in which order the components are stopped.
    """

    root_prefix = "airflow-cb-e2e-"
    db_prefix = "airflow_cb_e2e_"

    def __init__(self, python: str, backend: str = "sqlite", config: Mapping[str, str] | None = None):
        if backend not in ("sqlite", "postgres"):
            raise ValueError(f"backend must be sqlite or postgres, not {backend!r}")
        self.python = python
        self.backend = backend
        self.root = Path(tempfile.mkdtemp(prefix=self.root_prefix))
        self.home = DemoHome(self.root)
        self.home.create(dags_source=DAGS)
        self.markers = self.root / "markers.jsonl"
        self.api_port = find_free_port(LOOPBACK)
        # Patient: a 2-core machine running 200 runs answers slowly.
        self.api = AirflowApi(f"http://{LOOPBACK}:{self.api_port}", timeout=30)
        self.db_name = f"{self.db_prefix}{uuid.uuid4().hex[:10]}" if backend == "postgres" else None
        cfg = airflow_config(self.home, self.api_port)
        cfg[MARKER_ENV] = str(self.markers)
        if self.db_name:
            cfg["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
                f"postgresql+psycopg2://{PG_SERVER.split('://', 1)[1]}/{self.db_name}"
            )
        cfg.update(config or {})
        self.config = cfg
        self.component_config: dict[str, dict[str, str]] = {}
        self.procs: dict[str, ManagedProcess] = {}
        self._engine = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            if self.db_name:
                self._psql(f'CREATE DATABASE "{self.db_name}"')
            self._run_cli("db-migrate", "db", "migrate")
            self.start("api-server", "api-server", "--host", LOOPBACK, "--workers", "1")
            self.start("dag-processor", "dag-processor")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for group in self.stop_groups():
                stop_processes([self.procs[name] for name in group], grace=10)
            # Whatever a group left out.
            stop_processes(list(self.procs.values()), grace=10)
        finally:
            if self._engine is not None:
                self._engine.dispose()
            if self.db_name:
                self._psql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            if not os.environ.get("CALLBACK_E2E_KEEP"):
                shutil.rmtree(self.root, ignore_errors=True)

    def stop_groups(self) -> list[list[str]]:
        """Names of the components to stop, group after group (each group at once); default: all together."""
        return [list(self.procs)]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return child_environment(os.environ, {**self.config, **(extra or {})})

    def start(self, name: str, *airflow_args: str, config: Mapping[str, str] | None = None) -> ManagedProcess:
        """Start ``airflow <args>`` as component ``name`` with extra ``config`` of its own."""
        if name in self.procs and self.procs[name].alive():
            raise StackError(f"{name} is already running")
        proc = ManagedProcess(
            name, [self.python, "-m", "airflow", *airflow_args], self.home.process_log(name)
        )
        proc.start(self.env({**self.component_config.get(name, {}), **(config or {})}), cwd=self.root)
        self.procs[name] = proc
        return proc

    def scheduler(self, name: str = "scheduler", config: Mapping[str, str] | None = None) -> ManagedProcess:
        return self.start(name, "scheduler", "--skip-serve-logs", config=config)

    def stop(self, name: str) -> None:
        stop_processes([self.procs[name]], grace=10)

    def kill(self, name: str, *, alone: bool = False) -> None:
        """
        SIGKILL the component and everything in its process group, as a crash would.

        ``alone``: only its main process, as an out-of-memory kill would; its children (LocalExecutor's
        workers) go on until they end by themselves, and are stopped with the stack.
        """
        proc = self.procs[name]
        assert proc.pid is not None
        if alone:
            os.kill(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)  # type: ignore[union-attr]
            return
        os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)  # type: ignore[union-attr]
        for pid in proc.remaining():
            os.kill(pid, signal.SIGKILL)
        proc.close_log()

    def logs(self) -> str:
        """Tails of every component's log, for assertion messages."""
        return "\n".join(f"--- {name} ---\n{tail(p.log_path, 30)}" for name, p in self.procs.items())

    def logs_of(self, name: str) -> str:
        """The whole process log of component ``name``."""
        path = self.procs[name].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def running_scheduler(self) -> str:
        """The name of the one scheduler running (fails when none or several are)."""
        running = [name for name, proc in self.procs.items() if name.startswith("scheduler") and proc.alive()]
        if len(running) != 1:
            raise StackError(f"expected one running scheduler, found {running}")
        return running[0]

    def ensure_scheduler(self) -> Self:
        """Start a scheduler when none is running (a test before may have stopped or killed it)."""
        if not any(name.startswith("scheduler") and proc.alive() for name, proc in self.procs.items()):
            self.scheduler(f"scheduler-{len(self.procs)}")
        return self

    def prepare(self) -> None:
        """Wait for the api-server (execution API included) and create the e2e DAGs' blocked pool."""
        self.wait_healthy()
        self.api.warm_execution_api()
        self.api.request("POST", "/api/v2/pools", {"name": BLOCKED_POOL, "slots": 0})

    # -- Airflow ------------------------------------------------------------------------------
    def wait_healthy(self, timeout: float = 120) -> None:
        def healthy() -> bool:
            for name, proc in self.procs.items():
                if not proc.alive():
                    raise StackError(f"{name} exited with {proc.returncode()}:\n{tail(proc.log_path, 40)}")
            try:
                self.api.health()
            except ApiError:
                return False
            return True

        wait_for("the api-server", healthy, timeout)

    def wait_dags(self, dag_ids: list[str], timeout: float = 120) -> None:
        def parsed() -> bool:
            for dag_id in dag_ids:
                try:
                    self.api.get_dag(dag_id)
                except ApiError:
                    return False
            return True

        wait_for(f"DAGs {dag_ids} to be parsed", parsed, timeout)
        for dag_id in dag_ids:
            self.api.set_paused(dag_id, False)

    def trigger(
        self, dag_id: str, run_id: str | None = None, attempts: int = 3, logical_date: str | None = None
    ) -> str:
        """
        Trigger a run. With a ``run_id`` a timed-out request is retried: the run may exist already
        (409), which counts as created, so a retry never makes a second run.
        """
        body: dict[str, Any] = {"logical_date": logical_date}
        if run_id:
            body["dag_run_id"] = run_id
        for attempt in range(1, attempts + 1):
            try:
                return self.api.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]
            except ApiError as err:
                if run_id and err.status == 409 and attempt > 1:
                    return run_id
                if not run_id or err.status is not None or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    # -- metadata database --------------------------------------------------------------------
    def query(self, sql: str, **params: Any) -> list[tuple]:
        import sqlalchemy

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.config["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        with self._engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sqlalchemy.text(sql), params)]

    def executor_callbacks(self) -> list[dict[str, Any]]:
        """Every executor callback (Deadline Alerts, DAG runs): id, state, output and data."""
        from airflow.serialization.serialized_objects import BaseSerialization

        rows = self.query("SELECT id, state, output, data FROM callback WHERE type = 'executor'")
        out = []
        for cb_id, state, output, raw in rows:
            data = BaseSerialization.deserialize(json.loads(raw) if isinstance(raw, str) else raw)
            # SQLite stores the UUID as 32 hex digits, PostgreSQL as a UUID: one form for both.
            out.append({"id": str(uuid.UUID(str(cb_id))), "state": state, "output": output, "data": data})
        return out

    def dag_callbacks(self) -> list[dict[str, Any]]:
        """Executor callbacks of DAG runs: id, state, output and data."""
        return [
            c
            for c in self.executor_callbacks()
            if isinstance(c["data"], dict) and c["data"].get("kind") == "dag_run"
        ]

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=dag_id, r=run_id)
        return rows[0][0] if rows else None

    def read_markers(self) -> list[Marker]:
        return read_markers(self.markers)

    def callback_diagnostics(self, callback_id: str) -> str:
        """What the executor's side knows of a callback, for failure messages (a harness overrides it)."""
        return ""

    def callback_runs(self, callback_id: str) -> list[int | None]:
        """
        The exit code of each place the callback ran in (an ECS task, a Batch job, a Lambda invocation;
        ``None`` while one runs): a harness whose executor shows that overrides it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not say where a callback ran")

    def callback_log_files(self, callback_id: str, folder: Path | None = None) -> list[Path]:
        """A callback's log files in ``folder``, by default the stack's own log folder."""
        return callback_log_files(self.home.logs if folder is None else folder, callback_id)

    def callback_log(self, callback_id: str, folder: Path | None = None) -> str:
        return "".join(p.read_text(errors="replace") for p in self.callback_log_files(callback_id, folder))

    # -- helpers ------------------------------------------------------------------------------
    def _run_cli(self, name: str, *args: str) -> None:
        log = self.home.process_log(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as handle:
            proc = subprocess.run(
                [self.python, "-m", "airflow", *args],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.root,
                timeout=300,
                check=False,
            )
        if proc.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} failed:\n{tail(log, 40)}")

    def _psql(self, statement: str) -> None:
        subprocess.run(
            ["psql", f"{PG_SERVER}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", statement],
            check=True,
            capture_output=True,
            timeout=60,
        )
