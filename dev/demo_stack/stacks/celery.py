"""CeleryExecutor stack: every task and callback runs on a real ``airflow celery worker`` process.

The broker is the machine's Redis on loopback (started by ``dev/services ensure redis`` when it is
not running), in a Redis database the demo claims for itself and flushes on exit; the result
backend is the demo's SQLite metadata database. One worker (hostname ``demo-celery-worker``,
queue ``default``, concurrency 2) consumes the tasks and callbacks; it shares the demo's disk, so
a callback's log lands in the demo's log folder. On exit the worker stops first (a warm shutdown
lets what it runs end), the api-server last.
"""

from __future__ import annotations

import uuid

from demo_stack.airflow_home import DemoHome
from demo_stack.stacks.base import ExecutorStack, ProcessSpec, StackContext

WORKER = "celery-worker"


class CeleryExecutorStack(ExecutorStack):
    name = "CeleryExecutor"

    def __init__(self) -> None:
        self.redis_db: int | None = None
        self.owner = f"airflow-demo-{uuid.uuid4().hex[:8]}"

    def config(self, ctx: StackContext) -> dict[str, str]:
        # Imported when the stack is used: the other stacks do not need the Celery harness.
        from celery_e2e import claim_redis_db, ensure_redis, executor_config, redis_url

        if self.redis_db is None:
            ensure_redis()
            self.redis_db = claim_redis_db(self.owner)
        result_backend = f"db+sqlite:///{DemoHome(ctx.airflow_home).db}"
        return {
            **super().config(ctx),
            **executor_config(redis_url(self.redis_db), result_backend),
            "AIRFLOW__CORE__PARALLELISM": "4",
        }

    def extra_processes(self, ctx: StackContext) -> list[ProcessSpec]:
        from celery_e2e import worker_args

        pid_file = ctx.airflow_home / "celery-worker.pid"
        return [
            ProcessSpec(
                WORKER, worker_args("demo-celery-worker@127.0.0.1", pid_file, ("default",), concurrency=2)
            )
        ]

    def stop_groups(self, names: list[str]) -> list[list[str]]:
        """The worker first, the api-server last."""
        workers = [name for name in names if name == WORKER]
        last = [name for name in names if name == "api-server"]
        return [workers, [name for name in names if name not in workers + last], last]

    def teardown(self, ctx: StackContext) -> None:
        """Flush and release the demo's Redis database (safe to call twice, or after a partial setup)."""
        from celery_e2e import release_redis_db

        if self.redis_db is not None:
            release_redis_db(self.redis_db, self.owner)
            self.redis_db = None
