"""``callback_e2e``'s :class:`AirflowStack` on ``AwsLambdaExecutor`` against moto plus :class:`FakeLambda`.

The fake's account has the executor's function (``airflow-e2e-lambda``: its environment names the
results queue, its ``DeadLetterConfig`` the dead-letter queue, ``Timeout`` 300 s, no retries of a
handler error), the results queue ``airflow-e2e-results`` and the dead-letter queue
``airflow-e2e-dlq``; the stack's configuration points the executor at them and at the fake
(``aws_default``'s ``endpoint_url``). Each workload is one asynchronous invocation that the
provider's own handler (``aws_lambda/docker/app.py``) runs as a local process with the stack's
interpreter and environment; its output is in ``<home>/lambda-invocations/``.

Stopping order: scheduler(s) and dag-processor, then the api-server, then the fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_e2e import AwsStack
from aws_e2e.fake import REGION, FakeAws
from aws_e2e.lambda_fake import ASYNC_PAYLOAD_LIMIT, FakeLambda, Invocation, queue_arn

LAMBDA_EXECUTOR = "airflow.providers.amazon.aws.executors.aws_lambda.lambda_executor.AwsLambdaExecutor"
FUNCTION = "airflow-e2e-lambda"
RESULTS_QUEUE = "airflow-e2e-results"
DEAD_LETTER_QUEUE = "airflow-e2e-dlq"
FUNCTION_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow-e2e-lambda:local"
FUNCTION_TIMEOUT = 300


def create_lambda_resources(aws: FakeAws) -> dict[str, str]:
    """The function, its results queue and dead-letter queue; returns the executor's configuration."""
    sqs = aws.client("sqs")
    results = sqs.create_queue(QueueName=RESULTS_QUEUE)["QueueUrl"]
    dlq = sqs.create_queue(QueueName=DEAD_LETTER_QUEUE)["QueueUrl"]
    role = aws.client("iam").create_role(RoleName=f"{FUNCTION}-role", AssumeRolePolicyDocument="{}")["Role"]
    client = aws.client("lambda")
    client.create_function(
        FunctionName=FUNCTION,
        Role=role["Arn"],
        PackageType="Image",
        Code={"ImageUri": FUNCTION_IMAGE},
        Timeout=FUNCTION_TIMEOUT,
        Environment={"Variables": {"AIRFLOW__AWS_LAMBDA_EXECUTOR__QUEUE_URL": results}},
        DeadLetterConfig={"TargetArn": queue_arn(DEAD_LETTER_QUEUE)},
    )
    # The executor resubmits what it must; Lambda's own retries would run a workload twice.
    client.put_function_event_invoke_config(FunctionName=FUNCTION, MaximumRetryAttempts=0)
    return lambda_executor_config(results, dlq)


def lambda_executor_config(queue_url: str, dlq_url: str) -> dict[str, str]:
    """``AIRFLOW__*`` variables for AwsLambdaExecutor on the fake's function and queues."""
    return {
        "AIRFLOW__CORE__EXECUTOR": LAMBDA_EXECUTOR,
        "AIRFLOW__AWS_LAMBDA_EXECUTOR__FUNCTION_NAME": FUNCTION,
        "AIRFLOW__AWS_LAMBDA_EXECUTOR__QUEUE_URL": queue_url,
        "AIRFLOW__AWS_LAMBDA_EXECUTOR__DEAD_LETTER_QUEUE_URL": dlq_url,
        "AIRFLOW__AWS_LAMBDA_EXECUTOR__REGION_NAME": REGION,
        "AIRFLOW__AWS_LAMBDA_EXECUTOR__CHECK_HEALTH_ON_STARTUP": "True",
    }


class LambdaStack(AwsStack):
    """
    An :class:`AirflowStack` on AwsLambdaExecutor against :class:`FakeAws` and :class:`FakeLambda`;
    start a scheduler with :meth:`scheduler` once :meth:`wait_healthy` returned.

    :param capacity: invocations running at once (the others wait queued).
    :param config: extra ``AIRFLOW__*`` variables for every component (over the executor's).
    :param async_payload_limit: the largest invocation payload the fake accepts (Lambda's, 1 MiB, by
        default; a test lowers it to reach it with a workload of reasonable size).
    """

    root_prefix = "aws-lambda-e2e-"
    db_prefix = "aws_lambda_e2e_"
    worker_logs_label = "invocation"

    def __init__(
        self,
        python: str,
        backend: str = "sqlite",
        config: Mapping[str, str] | None = None,
        capacity: int = 4,
        async_payload_limit: int = ASYNC_PAYLOAD_LIMIT,
    ):
        super().__init__(python, backend, config)
        self.aws = FakeAws({}, self.root / "ecs-containers")
        self.lam = FakeLambda(
            self.aws,
            {},
            self.root / "lambda-invocations",
            python=python,
            capacity=capacity,
            async_payload_limit=async_payload_limit,
        )
        self.queue_url = ""
        self.dlq_url = ""

    def start_aws(self) -> dict[str, str]:
        self.aws.start()
        self.lam.start()
        executor_config = create_lambda_resources(self.aws)
        self.queue_url = executor_config["AIRFLOW__AWS_LAMBDA_EXECUTOR__QUEUE_URL"]
        self.dlq_url = executor_config["AIRFLOW__AWS_LAMBDA_EXECUTOR__DEAD_LETTER_QUEUE_URL"]
        return {**self.aws.client_env(), **executor_config}

    def stop_aws(self) -> None:
        self.lam.stop()
        super().stop_aws()

    def worker_logs(self) -> tuple[Path, list[str]]:
        return self.lam.logs_dir, self.lam.agent_errors

    def set_image_environment(self, env: dict[str, str]) -> None:
        self.lam.image_env = env

    # -- observations ----------------------------------------------------------------------------
    def callback_runs(self, callback_id: str) -> list[int | None]:
        """One exit code per attempt of each invocation (``None`` while the first attempt runs)."""
        return [code for i in self.invocations_for(callback_id) for code in (i.exit_codes or [None])]

    def invocations_for(self, callback_id: str) -> list[Invocation]:
        """The invocations whose event carries the callback (its key is its id)."""
        return self.lam.invocations_for(callback_id)

    def queue_depth(self, queue_url: str | None = None) -> int:
        attributes = self.aws.client("sqs").get_queue_attributes(
            QueueUrl=queue_url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


__all__: list[Any] = ["FUNCTION", "LAMBDA_EXECUTOR", "LambdaStack", "create_lambda_resources"]
