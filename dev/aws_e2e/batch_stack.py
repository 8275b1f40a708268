"""``callback_e2e``'s :class:`AirflowStack` on ``AwsBatchExecutor`` against :class:`FakeAwsBatch`.

moto gets an IAM service role, an ``UNMANAGED`` compute environment, a job queue and a container job
definition whose container is the worker "image" (the stack's virtualenv and configuration, as for
:class:`~aws_e2e.EcsStack`), logging to CloudWatch Logs with ``awslogs`` (group
:data:`LOG_GROUP`). The executor's configuration names the queue and the definition. Each callback
and task is one Batch job; its output is in ``<home>/batch-containers/<job id>.log``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_e2e import AwsStack
from aws_e2e.batch_fake import FakeAwsBatch, job_command
from aws_e2e.fake import REGION

BATCH_EXECUTOR = "airflow.providers.amazon.aws.executors.batch.batch_executor.AwsBatchExecutor"
COMPUTE_ENVIRONMENT = "airflow-e2e"
JOB_QUEUE = "airflow-e2e"
JOB_DEFINITION = "airflow-e2e-worker"
JOB_NAME = "airflow-e2e"
WORKER_IMAGE = "airflow-e2e/worker:local"
LOG_GROUP = "/airflow-e2e/batch-workers"
LOG_STREAM_PREFIX = "batch"
SERVICE_ROLE = "airflow-e2e-batch-service"


def batch_executor_config(max_submit_job_attempts: int = 3) -> dict[str, str]:
    """``AIRFLOW__*`` variables for AwsBatchExecutor on the fake's queue and job definition."""
    return {
        "AIRFLOW__CORE__EXECUTOR": BATCH_EXECUTOR,
        "AIRFLOW__AWS_BATCH_EXECUTOR__JOB_NAME": JOB_NAME,
        "AIRFLOW__AWS_BATCH_EXECUTOR__JOB_QUEUE": JOB_QUEUE,
        "AIRFLOW__AWS_BATCH_EXECUTOR__JOB_DEFINITION": JOB_DEFINITION,
        "AIRFLOW__AWS_BATCH_EXECUTOR__REGION_NAME": REGION,
        "AIRFLOW__AWS_BATCH_EXECUTOR__CHECK_HEALTH_ON_STARTUP": "True",
        "AIRFLOW__AWS_BATCH_EXECUTOR__MAX_SUBMIT_JOB_ATTEMPTS": str(max_submit_job_attempts),
    }


def create_batch_resources(aws: FakeAwsBatch) -> None:
    """The compute environment, job queue and job definition the executor's configuration names."""
    role = aws.client("iam").create_role(
        RoleName=SERVICE_ROLE,
        AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}',
    )["Role"]["Arn"]
    aws.client("logs").create_log_group(logGroupName=LOG_GROUP)
    batch = aws.client("batch")
    environment = batch.create_compute_environment(
        computeEnvironmentName=COMPUTE_ENVIRONMENT, type="UNMANAGED", state="ENABLED", serviceRole=role
    )["computeEnvironmentArn"]
    batch.create_job_queue(
        jobQueueName=JOB_QUEUE,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )
    batch.register_job_definition(
        jobDefinitionName=JOB_DEFINITION,
        type="container",
        containerProperties={
            "image": WORKER_IMAGE,
            "command": [],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "512"},
            ],
            # As a real deployment would: the container's output in CloudWatch Logs.
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": LOG_GROUP,
                    "awslogs-region": REGION,
                    "awslogs-stream-prefix": LOG_STREAM_PREFIX,
                },
            },
        },
    )


class BatchStack(AwsStack):
    """
    An :class:`AirflowStack` on AwsBatchExecutor against a :class:`FakeAwsBatch`; start a scheduler
    with :meth:`scheduler` once :meth:`wait_healthy` returned.

    :param capacity: Batch jobs running at once (the others wait ``RUNNABLE``).
    :param config: extra ``AIRFLOW__*`` variables for every component (over the executor's).
    """

    root_prefix = "aws-batch-e2e-"
    db_prefix = "aws_batch_e2e_"

    def __init__(
        self,
        python: str,
        backend: str = "sqlite",
        config: Mapping[str, str] | None = None,
        capacity: int = 4,
    ):
        super().__init__(python, backend, config)
        self.aws = FakeAwsBatch({}, self.root / "batch-containers", capacity=capacity)

    def start_aws(self) -> dict[str, str]:
        self.aws.start()
        create_batch_resources(self.aws)
        return {**self.aws.client_env(), **batch_executor_config()}

    # -- observations ----------------------------------------------------------------------------
    def callback_runs(self, callback_id: str) -> list[int | None]:
        return [job.exit_code for job in self.batch_jobs_for(callback_id)]

    def batch_jobs_for(self, callback_id: str) -> list[Any]:
        """
        The Batch jobs of the callback: named after it (core 3.4+), or whose container command
        carries its workload as plain JSON.
        """
        return [
            job
            for job in self.aws.batch_jobs()
            if job.job_name.endswith(f"-{callback_id}") or callback_id in " ".join(job_command(job))
        ]

    def batch_jobs_for_run(self, dag_id: str) -> list[Any]:
        """The Batch jobs whose container command names the DAG."""
        return [job for job in self.aws.batch_jobs() if dag_id in " ".join(job_command(job))]


__all__ = [
    "BATCH_EXECUTOR",
    "JOB_DEFINITION",
    "JOB_QUEUE",
    "BatchStack",
    "batch_executor_config",
    "create_batch_resources",
]
