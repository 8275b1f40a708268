"""AwsEcsExecutor stack: every task and callback runs as an ECS task of a local fake AWS.

moto in server mode, in the demo's own process (``dev/aws_e2e``), stands in for AWS: the
executor's boto3 clients reach it on loopback through the ``aws_default`` connection's
``endpoint_url``, and the fake's agent runs each ECS task's container command as a local process
with the demo's virtualenv and configuration (the worker image a real deployment would build from
the same installation), then reports the task ``STOPPED`` with the container's exit code. Container
output lands in ``<AIRFLOW_HOME>/ecs-containers/`` and in the fake's CloudWatch Logs. The fake
stops after the Airflow components (containers still running are killed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from demo_stack.stacks.base import ExecutorStack, StackContext

if TYPE_CHECKING:
    from aws_e2e.fake import FakeAws


class AwsEcsExecutorStack(ExecutorStack):
    name = "AwsEcsExecutor"

    def __init__(self) -> None:
        self._aws: FakeAws | None = None

    def config(self, ctx: StackContext) -> dict[str, str]:
        # Imported when the stack is used: the other stacks need neither moto nor the harness.
        from aws_e2e import ecs_executor_config
        from aws_e2e.fake import FakeAws

        if self._aws is None:
            self._aws = FakeAws({}, ctx.airflow_home / "ecs-containers", capacity=4).start()
        return {
            **super().config(ctx),
            **self._aws.client_env(),
            **ecs_executor_config(),
            "AIRFLOW__CORE__PARALLELISM": "4",
        }

    def setup(self, ctx: StackContext) -> None:
        from aws_e2e import create_ecs_resources, image_environment

        assert self._aws is not None, "config() starts the fake"
        self._aws.image_env = image_environment(ctx.env, ctx.python)
        create_ecs_resources(self._aws)

    def teardown(self, ctx: StackContext) -> None:
        """Stop the fake (safe to call twice, or after a partial setup)."""
        if self._aws is not None:
            self._aws.stop()
            self._aws = None

    def executor_label(self, configured: str | None) -> str:
        # The callback names the executor by its import path, or not at all.
        return self.name if not configured or configured.endswith(f".{self.name}") else configured
