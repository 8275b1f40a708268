"""EdgeExecutor end to end: api-server with the edge worker API, scheduler, dag-processor, edge workers.

:class:`EdgeStack` is :class:`callback_e2e.stack.AirflowStack` (a throwaway ``AIRFLOW_HOME``,
SQLite or a PostgreSQL database of its own, per-component configuration, killing a component)
with EdgeExecutor configured and ``airflow edge worker`` processes started by :meth:`EdgeStack.worker`,
each with its own ``--edge-hostname``, ``--queues`` and log folder (a real edge worker runs on
another machine and does not share the scheduler's disk). The api-server has a log folder of its
own too: the log chunks a worker pushes land there and in the ``edge_logs`` table.

Stopping order matters: an edge worker reports itself offline through the api-server when it
shuts down, so the workers stop first, then scheduler(s) and dag-processor, then the api-server.
:func:`executor_config` is the configuration the demo (``dev/demo_stack/stacks/edge.py``) shares.

Run the tests with ``PYTHONPATH=dev .venv/bin/python -m pytest dev/tests/test_edge_callbacks_e2e.py -m e2e``
(PostgreSQL from ``dev/services ensure postgres``); ``CALLBACK_E2E_KEEP=1`` keeps each stack's home
(``/tmp/edge-e2e-*``: ``process-logs/``, ``logs-<worker>/``, ``logs-api-server/``, ``markers.jsonl``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from callback_e2e.stack import AirflowStack, StackError, wait_for
from demo_stack.ports import LOOPBACK

EDGE_EXECUTOR = "airflow.providers.edge3.executors.EdgeExecutor"
EDGE_DB_MANAGER = "airflow.providers.edge3.models.db.EdgeDBManager"
HOSTNAME_PREFIX = "edge-e2e-"
# Worker states of a worker that is up and asking for jobs.
SERVING = ("idle", "running")


def executor_config(api_url: str) -> dict[str, str]:
    """``AIRFLOW__*`` variables for EdgeExecutor and its workers, with the api-server at ``api_url``."""
    return {
        "AIRFLOW__CORE__EXECUTOR": EDGE_EXECUTOR,
        "AIRFLOW__EDGE__API_ENABLED": "True",
        "AIRFLOW__EDGE__API_URL": f"{api_url.rstrip('/')}/edge_worker/v1/rpcapi",
        "AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS": EDGE_DB_MANAGER,
        # Quick turnaround: workers poll for jobs every second and heartbeat every 2 s (a worker
        # counts as lifeless after 5 missed heartbeats; 5 s is too tight for a busy SQLite).
        "AIRFLOW__EDGE__HEARTBEAT_INTERVAL": "2",
        "AIRFLOW__EDGE__JOB_POLL_INTERVAL": "1",
        # A worker retries a failing call to the api-server a few times within seconds, not for 5 minutes.
        "AIRFLOW__EDGE__API_RETRIES": "3",
        "AIRFLOW__EDGE__API_RETRY_WAIT_MIN": "0.5",
        "AIRFLOW__EDGE__API_RETRY_WAIT_MAX": "2",
    }


def worker_log_folder(root: Path, name: str) -> Path:
    """The ``[logging] base_log_folder`` of edge worker ``name`` in the Airflow home ``root``."""
    return root / f"logs-{name}"


def worker_args(
    hostname: str, pid_file: Path, queues: Iterable[str] = ("default",), concurrency: int = 2
) -> tuple[str, ...]:
    """
    ``airflow`` arguments that start an edge worker. Every worker of one ``AIRFLOW_HOME`` needs a
    PID file of its own: the default, ``$AIRFLOW_HOME/airflow-edge-worker.pid``, makes a second
    worker exit at once ("edge worker instance must use different PID file paths").
    """
    return (
        *("edge", "worker", "--queues", ",".join(queues), "--edge-hostname", hostname),
        *("--concurrency", str(concurrency), "--pid", str(pid_file)),
    )


class EdgeStack(AirflowStack):
    """
    An :class:`AirflowStack` on EdgeExecutor; start workers with :meth:`worker` and a scheduler with
    :meth:`scheduler` once :meth:`wait_healthy` returned.

    :param config: extra ``AIRFLOW__*`` variables for every component (applied over the edge ones).
    """

    root_prefix = "edge-e2e-"
    db_prefix = "edge_e2e_"

    def __init__(self, python: str, backend: str = "sqlite", config: Mapping[str, str] | None = None):
        super().__init__(python, backend, config)
        self.config.update(executor_config(f"http://{LOOPBACK}:{self.api_port}"))
        self.config.update(config or {})
        self.workers: dict[str, tuple[str, ...]] = {}
        self.component_config["api-server"] = {"AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.api_log_folder)}

    # -- paths -----------------------------------------------------------------------------------
    @property
    def api_log_folder(self) -> Path:
        """The api-server's ``[logging] base_log_folder``: where pushed worker logs are written."""
        return self.root / "logs-api-server"

    def worker_log_folder(self, name: str) -> Path:
        return worker_log_folder(self.root, name)

    @staticmethod
    def hostname(name: str) -> str:
        return f"{HOSTNAME_PREFIX}{name}"

    # -- processes -------------------------------------------------------------------------------
    def wait_healthy(self, timeout: float = 120) -> None:
        """The api-server answers, with the execution API built (see ``AirflowApi.warm_execution_api``)."""
        super().wait_healthy(timeout)
        self.api.warm_execution_api()

    def worker(
        self,
        name: str = "worker",
        queues: Iterable[str] = ("default",),
        concurrency: int = 2,
        config: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        """Start ``airflow edge worker`` as component ``name``; with ``wait``, until it asks for jobs."""
        queues = tuple(queues)
        folder = self.worker_log_folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        self.start(
            name,
            *worker_args(self.hostname(name), folder / "edge-worker.pid", queues, concurrency),
            config={"AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(folder), **(config or {})},
        )
        self.workers[name] = queues
        if wait:
            self.wait_worker(name)

    def wait_worker(self, name: str, timeout: float = 120) -> None:
        def serving() -> bool:
            proc = self.procs[name]
            if not proc.alive():
                raise StackError(f"edge worker {name} exited with {proc.returncode()}:\n{self.logs()}")
            return self.worker_state(name) in SERVING

        wait_for(f"edge worker {name} to register", serving, timeout)

    def worker_state(self, name: str) -> str | None:
        rows = self.query("SELECT state FROM edge_worker WHERE worker_name = :n", n=self.hostname(name))
        return rows[0][0] if rows else None

    def stop_groups(self) -> list[list[str]]:
        """Workers first (their shutdown goes through the api-server), then the rest, then the api-server."""
        workers = [name for name in self.procs if name in self.workers]
        last = [name for name in self.procs if name == "api-server"]
        middle = [name for name in self.procs if name not in workers and name not in last]
        return [group for group in (workers, middle, last) if group]

    # -- observations ----------------------------------------------------------------------------
    def edge_jobs(self, callback_id: str) -> list[dict[str, Any]]:
        """The ``edge_job`` rows of a callback: state, queue, the worker that took it, command size."""
        rows = self.query(
            "SELECT state, queue, edge_worker, length(command) FROM edge_job"
            " WHERE dag_id = 'ExecuteCallback' AND task_id = :t",
            t=callback_id,
        )
        return [{"state": s, "queue": q, "edge_worker": w, "command_length": n} for s, q, w, n in rows]

    def callback_diagnostics(self, callback_id: str) -> str:
        return f"edge jobs {self.edge_jobs(callback_id)}"

    def edge_log(self, callback_id: str) -> str:
        """The log chunks workers pushed for a callback, in the ``edge_logs`` table."""
        rows = self.query(
            "SELECT log_chunk_data FROM edge_logs WHERE dag_id = 'ExecuteCallback' AND task_id = :t"
            " ORDER BY log_chunk_time",
            t=callback_id,
        )
        return "".join(row[0] for row in rows)


__all__ = ["EDGE_EXECUTOR", "EdgeStack", "executor_config", "worker_args", "worker_log_folder"]
