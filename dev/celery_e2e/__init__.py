"""CeleryExecutor end to end: api-server, scheduler, dag-processor, ``airflow celery worker`` processes.

:class:`CeleryStack` is :class:`callback_e2e.stack.AirflowStack` (a throwaway ``AIRFLOW_HOME``,
SQLite or a PostgreSQL database of its own, per-component configuration, killing a component)
with CeleryExecutor configured and ``airflow celery worker`` processes started by
:meth:`CeleryStack.worker`, each with its own Celery hostname, ``--queues``, PID file and
concurrency. The broker is the machine's Redis on loopback (``dev/services ensure redis``): each
stack claims a Redis database number of its own (a ``SET NX`` key in database 0, so that stacks
running in parallel never share one) and flushes it when it stops. The result backend is the
stack's metadata database (``db+postgresql://`` or ``db+sqlite://``), or the stack's Redis
database with ``result_backend="redis"``.

The workers do not serve logs (``--skip-serve-logs``): they share the stack's disk, so a
callback's log lands in the stack's ``[logging] base_log_folder``, where the api-server reads it.
Which worker ran a callback shows in that worker's process log (Celery logs the workload).

Stopping order: the workers first (a warm shutdown lets a running callback end), then
scheduler(s) and dag-processor, then the api-server.

Run the tests with ``PYTHONPATH=dev .venv/bin/python -m pytest dev/tests/test_celery_callbacks_e2e.py -m e2e``
(PostgreSQL and Redis from ``dev/services ensure postgres redis``); ``CALLBACK_E2E_KEEP=1`` keeps
each stack's home (``/tmp/celery-e2e-*``: ``process-logs/``, ``logs/``, ``markers.jsonl``).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from callback_e2e.stack import AirflowStack, StackError, wait_for
from demo_stack.ports import LOOPBACK

CELERY_EXECUTOR = "CeleryExecutor"
HOSTNAME_PREFIX = "celery-e2e-"
REDIS_HOST = os.environ.get("CELERY_E2E_REDIS_HOST", LOOPBACK)
REDIS_PORT = int(os.environ.get("CELERY_E2E_REDIS_PORT", "6379"))
# Database 0 holds the claims; stacks use 1..15 (Redis has 16 databases unless configured otherwise).
REDIS_DBS = range(1, 16)
CLAIM_KEY = "celery-e2e:claim:{db}"
CLAIM_TTL = 4 * 3600
# What a Celery worker logs once it consumes from its queues.
READY = " ready."
SERVICES = Path(__file__).resolve().parents[1] / "services"


def ensure_redis() -> None:
    """Start the machine's Redis on loopback when it is not running (``dev/services ensure redis``)."""
    subprocess.run([str(SERVICES), "ensure", "redis"], check=True, timeout=300)


def _redis(db: int) -> Any:
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=10)


def claim_redis_db(owner: str) -> int:
    """A Redis database number no other stack holds; released by :func:`release_redis_db`."""
    claims = _redis(0)
    try:
        for db in REDIS_DBS:
            if claims.set(CLAIM_KEY.format(db=db), owner, nx=True, ex=CLAIM_TTL):
                _redis(db).flushdb()
                return db
    finally:
        claims.close()
    raise StackError(f"every Redis database {REDIS_DBS.start}..{REDIS_DBS.stop - 1} is claimed by a stack")


def release_redis_db(db: int, owner: str) -> None:
    """Flush the stack's Redis database and drop its claim (only if ``owner`` still holds it)."""
    data = _redis(db)
    claims = _redis(0)
    try:
        data.flushdb()
        key = CLAIM_KEY.format(db=db)
        if claims.get(key) == owner.encode():
            claims.delete(key)
    finally:
        data.close()
        claims.close()


def redis_url(db: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def executor_config(broker_url: str, result_backend: str) -> dict[str, str]:
    """``AIRFLOW__*`` variables for CeleryExecutor and its workers."""
    return {
        "AIRFLOW__CORE__EXECUTOR": CELERY_EXECUTOR,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        # Publish from the scheduler's own process: no process pool per batch on a 2-core machine.
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
        # A worker that grabbed a message and died gives it back within a minute, not a day.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "60",
    }


def result_backend_url(stack: AirflowStack, kind: str, db: int) -> str:
    """``kind`` ``"database"``: the stack's metadata database; ``"redis"``: the stack's Redis database."""
    if kind == "redis":
        return redis_url(db)
    if kind != "database":
        raise ValueError(f"result backend must be database or redis, not {kind!r}")
    conn = stack.config["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return f"db+{conn}"


def worker_args(
    hostname: str, pid_file: Path, queues: Iterable[str] = ("default",), concurrency: int = 2
) -> tuple[str, ...]:
    """
    ``airflow`` arguments that start a Celery worker. Every worker of one ``AIRFLOW_HOME`` needs a PID
    file of its own (the default, ``$AIRFLOW_HOME/airflow-worker.pid``, is one per home), and none
    serves logs (the log server would take port 8793 once per machine).
    """
    return (
        *("celery", "worker", "--queues", ",".join(queues), "--celery-hostname", hostname),
        *("--concurrency", str(concurrency), "--pid", str(pid_file)),
        *("--skip-serve-logs", "--without-mingle", "--without-gossip"),
    )


class CeleryStack(AirflowStack):
    """
    An :class:`AirflowStack` on CeleryExecutor; start workers with :meth:`worker` and a scheduler with
    :meth:`scheduler` once :meth:`wait_healthy` returned.

    :param result_backend: ``"database"`` (the metadata database) or ``"redis"``.
    :param config: extra ``AIRFLOW__*`` variables for every component (applied over the Celery ones).
    """

    root_prefix = "celery-e2e-"
    db_prefix = "celery_e2e_"

    def __init__(
        self,
        python: str,
        backend: str = "sqlite",
        config: Mapping[str, str] | None = None,
        result_backend: str = "database",
    ):
        super().__init__(python, backend, config)
        self.owner = f"{self.root.name}-{uuid.uuid4().hex[:8]}"
        self.redis_db: int | None = None
        self.result_backend_kind = result_backend
        self._caller_config = dict(config or {})
        self.workers: dict[str, tuple[str, ...]] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self):
        try:
            ensure_redis()
            self.redis_db = claim_redis_db(self.owner)
        except BaseException:
            AirflowStack.__exit__(self, None, None, None)
            raise
        self.config.update(
            executor_config(
                redis_url(self.redis_db), result_backend_url(self, self.result_backend_kind, self.redis_db)
            )
        )
        # The caller's configuration wins over the Celery defaults.
        self.config.update(self._caller_config)
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            if self.redis_db is not None:
                release_redis_db(self.redis_db, self.owner)
                self.redis_db = None

    # -- processes -------------------------------------------------------------------------------
    @staticmethod
    def hostname(name: str) -> str:
        return f"{HOSTNAME_PREFIX}{name}@{LOOPBACK}"

    def pid_file(self, name: str) -> Path:
        return self.root / f"celery-worker-{name}.pid"

    def worker(
        self,
        name: str = "worker",
        queues: Iterable[str] = ("default",),
        concurrency: int = 2,
        config: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        """Start ``airflow celery worker`` as component ``name``; with ``wait``, until it consumes."""
        queues = tuple(queues)
        self.pid_file(name).unlink(missing_ok=True)
        self.start(
            name,
            *worker_args(self.hostname(name), self.pid_file(name), queues, concurrency),
            config=config,
        )
        self.workers[name] = queues
        if wait:
            self.wait_worker(name)

    def wait_worker(self, name: str, timeout: float = 120) -> None:
        proc = self.procs[name]

        def ready() -> bool:
            if not proc.alive():
                raise StackError(f"celery worker {name} exited with {proc.returncode()}:\n{self.logs()}")
            return READY in self.worker_log(name)

        wait_for(f"celery worker {name} to be ready", ready, timeout)

    def worker_log(self, name: str) -> str:
        path = self.procs[name].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def workers_that_ran(self, callback_id: str) -> list[str]:
        """The workers whose log names the callback (Celery logs every workload it executes)."""
        return [name for name in self.workers if name in self.procs and callback_id in self.worker_log(name)]

    def stop_groups(self) -> list[list[str]]:
        """Workers first (a warm shutdown lets a running callback end), then the rest, then the api-server."""
        workers = [name for name in self.procs if name in self.workers]
        last = [name for name in self.procs if name == "api-server"]
        middle = [name for name in self.procs if name not in workers and name not in last]
        return [group for group in (workers, middle, last) if group]


__all__ = [
    "CELERY_EXECUTOR",
    "CeleryStack",
    "claim_redis_db",
    "ensure_redis",
    "executor_config",
    "release_redis_db",
    "worker_args",
]
