"""AwsBatchExecutor stack: every task and callback runs as an AWS Batch job of a local fake AWS.

moto in server mode, in the demo's own process (``dev/aws_e2e``), stands in for AWS: the
executor's boto3 clients reach it on loopback through the ``aws_default`` connection's
``endpoint_url``. The fake's agent moves each submitted job through Batch's states and runs its
container command as a local process with the demo's virtualenv and configuration, then ends the
job ``SUCCEEDED`` or ``FAILED`` with the container's exit code. Job output lands in
``<AIRFLOW_HOME>/batch-containers/`` and in the fake's CloudWatch Logs. The fake stops after the
Airflow components (jobs still running are killed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from demo_stack.stacks.aws_ecs import AwsEcsExecutorStack
from demo_stack.stacks.base import StackContext

if TYPE_CHECKING:
    from aws_e2e.batch_fake import FakeAwsBatch


class AwsBatchExecutorStack(AwsEcsExecutorStack):
    name = "AwsBatchExecutor"

    def __init__(self) -> None:
        self._aws: FakeAwsBatch | None = None

    def config(self, ctx: StackContext) -> dict[str, str]:
        # Imported when the stack is used: the other stacks need neither moto nor the harness.
        from aws_e2e.batch_fake import FakeAwsBatch
        from aws_e2e.batch_stack import batch_executor_config

        if self._aws is None:
            self._aws = FakeAwsBatch({}, ctx.airflow_home / "batch-containers", capacity=4).start()
        return {
            **super(AwsEcsExecutorStack, self).config(ctx),
            **self._aws.client_env(),
            **batch_executor_config(),
            "AIRFLOW__CORE__PARALLELISM": "4",
        }

    def setup(self, ctx: StackContext) -> None:
        from aws_e2e import image_environment
        from aws_e2e.batch_stack import create_batch_resources

        assert self._aws is not None, "config() starts the fake"
        self._aws.image_env = image_environment(ctx.env, ctx.python)
        create_batch_resources(self._aws)
