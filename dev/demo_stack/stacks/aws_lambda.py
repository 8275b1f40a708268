"""AwsLambdaExecutor stack: every task and callback is an asynchronous invocation of a local fake Lambda.

moto in server mode, in the demo's own process (``dev/aws_e2e``), stands in for AWS: the
executor's boto3 clients reach it on loopback through the ``aws_default`` connection's
``endpoint_url``. ``FakeLambda`` runs each asynchronous invocation through the provider's own
handler (``aws_lambda/docker/app.py``) as a local process with the demo's virtualenv and
configuration: the handler runs the workload and sends its result to the (moto) SQS results queue
the executor reads. Handler output lands in ``<AIRFLOW_HOME>/lambda-invocations/``. The fakes stop
after the Airflow components (handlers still running are killed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from demo_stack.stacks.base import ExecutorStack, StackContext

if TYPE_CHECKING:
    from aws_e2e.fake import FakeAws
    from aws_e2e.lambda_fake import FakeLambda


class AwsLambdaExecutorStack(ExecutorStack):
    name = "AwsLambdaExecutor"

    def __init__(self) -> None:
        self._aws: FakeAws | None = None
        self._lambda: FakeLambda | None = None
        self._executor_config: dict[str, str] = {}

    def config(self, ctx: StackContext) -> dict[str, str]:
        # Imported when the stack is used: the other stacks need neither moto nor the harness.
        from aws_e2e.fake import FakeAws
        from aws_e2e.lambda_fake import FakeLambda
        from aws_e2e.lambda_stack import create_lambda_resources

        if self._aws is None:
            self._aws = FakeAws({}, ctx.airflow_home / "ecs-containers").start()
            self._lambda = FakeLambda(
                self._aws, {}, ctx.airflow_home / "lambda-invocations", python=ctx.python, capacity=4
            ).start()
            self._executor_config = create_lambda_resources(self._aws)
        return {
            **super().config(ctx),
            **self._aws.client_env(),
            **self._executor_config,
            "AIRFLOW__CORE__PARALLELISM": "4",
        }

    def setup(self, ctx: StackContext) -> None:
        from aws_e2e import image_environment

        assert self._lambda is not None, "config() starts the fake"
        self._lambda.image_env = image_environment(ctx.env, ctx.python)

    def teardown(self, ctx: StackContext) -> None:
        """Stop the fakes (safe to call twice, or after a partial setup)."""
        if self._lambda is not None:
            self._lambda.stop()
            self._lambda = None
        if self._aws is not None:
            self._aws.stop()
            self._aws = None

    def executor_label(self, configured: str | None) -> str:
        # The callback names the executor by its import path, or not at all.
        return self.name if not configured or configured.endswith(f".{self.name}") else configured
