"""EdgeExecutor stack: every task and callback runs on a real ``airflow edge worker`` process.

The api-server serves the edge worker API; one worker (hostname ``demo-edge-worker``, queue
``default``) polls it for jobs, runs each through the task SDK's supervisor and pushes its log
back, so a callback's log shows up in the demo's log folder (the api-server's) while the worker
writes its own copy to a log folder of its own, as a worker on another machine would. On exit
the worker stops first: it reports itself offline through the api-server.
"""

from __future__ import annotations

from demo_stack.stacks.base import ExecutorStack, ProcessSpec, StackContext

WORKER = "edge-worker"


class EdgeExecutorStack(ExecutorStack):
    name = "EdgeExecutor"

    def config(self, ctx: StackContext) -> dict[str, str]:
        # Imported when the stack is used: the other stacks do not need the edge harness.
        from edge_e2e import executor_config

        return {**super().config(ctx), **executor_config(ctx.api_url), "AIRFLOW__CORE__PARALLELISM": "4"}

    def extra_processes(self, ctx: StackContext) -> list[ProcessSpec]:
        from edge_e2e import worker_args, worker_log_folder

        folder = worker_log_folder(ctx.airflow_home, WORKER)
        folder.mkdir(parents=True, exist_ok=True)
        return [
            ProcessSpec(
                WORKER,
                worker_args("demo-edge-worker", folder / "edge-worker.pid", ("default",), concurrency=2),
                env={"AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(folder)},
                # A worker registers at once and gives up after a few failed attempts.
                after_api=True,
            )
        ]

    def stop_groups(self, names: list[str]) -> list[list[str]]:
        """The worker first (its shutdown goes through the api-server), the api-server last."""
        workers = [name for name in names if name == WORKER]
        last = [name for name in names if name == "api-server"]
        return [workers, [name for name in names if name not in workers + last], last]

    def executor_label(self, configured: str | None) -> str:
        # The callback names the executor by its import path, or not at all.
        return self.name if not configured or configured.endswith(f".{self.name}") else configured
