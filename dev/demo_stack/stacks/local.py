"""LocalExecutor stack: the scheduler runs callbacks in its own worker processes."""

from __future__ import annotations

from demo_stack.stacks.base import ExecutorStack, StackContext


class LocalExecutorStack(ExecutorStack):
    name = "LocalExecutor"

    def config(self, ctx: StackContext) -> dict[str, str]:
        return {
            **super().config(ctx),
            # Few worker processes are plenty for two Dags and keep a 2-core machine usable.
            "AIRFLOW__CORE__PARALLELISM": "4",
        }
