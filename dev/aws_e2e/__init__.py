"""The AWS executors (ECS first) end to end, against moto in server mode on loopback.

:class:`~aws_e2e.fake.FakeAws` is moto's server in this process plus an agent that runs each ECS
task's container command as a local process and reports its real exit code the way ECS does
(see ``fake.py`` for the AWS behaviours restored on top of moto). :class:`EcsStack` is
:class:`callback_e2e.stack.AirflowStack` (api-server, scheduler, dag-processor; SQLite or
PostgreSQL) with ``AwsEcsExecutor`` pointed at the fake: a cluster, a task definition whose
container is the worker "image" (the stack's own virtualenv and configuration: ``python`` on the
container's ``PATH`` is the stack's interpreter), and Airflow's ``aws_default`` connection with the
fake's ``endpoint_url``. Each callback and task is one ECS task; its output is in
``<home>/ecs-containers/<task id>.log``.

Stopping order: scheduler(s) and dag-processor, then the api-server, then the fake (containers still
running are killed).

Run the tests with ``PYTHONPATH=dev .venv/bin/python -m pytest dev/tests/test_aws_callbacks_e2e.py -m e2e``;
``AWS_E2E_PYTHON`` picks another virtualenv's interpreter (``.venv-stable/bin/python`` for core
3.3.2); ``CALLBACK_E2E_KEEP=1`` keeps each stack's home (``/tmp/aws-e2e-*``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from aws_e2e.fake import REGION, FakeAws
from callback_e2e.stack import AirflowStack

ECS_EXECUTOR = "airflow.providers.amazon.aws.executors.ecs.ecs_executor.AwsEcsExecutor"
CLUSTER = "airflow-e2e"
TASK_FAMILY = "airflow-e2e-worker"
CONTAINER = "airflow-worker"
WORKER_IMAGE = "airflow-e2e/worker:local"
LOG_GROUP = "/airflow-e2e/workers"
LOG_STREAM_PREFIX = "ecs"


def ecs_executor_config(max_run_task_attempts: int = 3) -> dict[str, str]:
    """``AIRFLOW__*`` variables for AwsEcsExecutor on the fake's cluster."""
    return {
        "AIRFLOW__CORE__EXECUTOR": ECS_EXECUTOR,
        "AIRFLOW__AWS_ECS_EXECUTOR__CLUSTER": CLUSTER,
        "AIRFLOW__AWS_ECS_EXECUTOR__CONTAINER_NAME": CONTAINER,
        "AIRFLOW__AWS_ECS_EXECUTOR__TASK_DEFINITION": TASK_FAMILY,
        "AIRFLOW__AWS_ECS_EXECUTOR__LAUNCH_TYPE": "FARGATE",
        "AIRFLOW__AWS_ECS_EXECUTOR__REGION_NAME": REGION,
        "AIRFLOW__AWS_ECS_EXECUTOR__CHECK_HEALTH_ON_STARTUP": "True",
        "AIRFLOW__AWS_ECS_EXECUTOR__MAX_RUN_TASK_ATTEMPTS": str(max_run_task_attempts),
    }


def image_environment(env: Mapping[str, str], python: str) -> dict[str, str]:
    """A container's environment: the stack's, with the stack's virtualenv first on ``PATH``."""
    image = dict(env)
    image["PATH"] = os.pathsep.join([str(Path(python).parent), image.get("PATH", os.defpath)])
    return image


def create_ecs_resources(aws: FakeAws) -> None:
    """The cluster and the worker task definition the executor's configuration names."""
    aws.client("logs").create_log_group(logGroupName=LOG_GROUP)
    ecs = aws.client("ecs")
    ecs.create_cluster(clusterName=CLUSTER)
    ecs.register_task_definition(
        family=TASK_FAMILY,
        # Not awsvpc (moto makes a FARGATE-compatible definition awsvpc, which needs subnets): the
        # fake's containers are local processes either way.
        networkMode="bridge",
        containerDefinitions=[
            {
                "name": CONTAINER,
                "image": WORKER_IMAGE,
                "memory": 512,
                "essential": True,
                "command": [],
                # As a real deployment would: the container's output in CloudWatch Logs.
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": LOG_GROUP,
                        "awslogs-region": REGION,
                        "awslogs-stream-prefix": LOG_STREAM_PREFIX,
                    },
                },
            }
        ],
    )


class AwsStack(AirflowStack):
    """
    An :class:`AirflowStack` whose executor is one of the AWS executors, against moto in this process:
    the fakes start before Airflow's components and stop after them (containers still running are
    killed). A subclass starts its fakes and creates its AWS resources in :meth:`start_aws`, which
    returns the executor's configuration, and says in :meth:`callback_runs` where a callback ran.

    :param config: extra ``AIRFLOW__*`` variables for every component (over the executor's).
    """

    # How failure messages name a worker output file (the last three are shown).
    worker_logs_label = "container"
    aws: FakeAws

    def __init__(self, python: str, backend: str = "sqlite", config: Mapping[str, str] | None = None):
        super().__init__(python, backend, config)
        self._caller_config = dict(config or {})

    # -- for subclasses --------------------------------------------------------------------------
    def start_aws(self) -> dict[str, str]:
        """Start the fakes, create the resources; the executor's ``AIRFLOW__*`` configuration."""
        raise NotImplementedError

    def stop_aws(self) -> None:
        """Stop what :meth:`start_aws` started (also when it failed half-way); by default ``self.aws``."""
        if self.aws.port is not None:
            self.aws.stop()
            self.aws.port = None

    def worker_logs(self) -> tuple[Path, list[str]]:
        """The folder of the workers' output files, and the fake's agent errors; by default ``self.aws``'s."""
        return self.aws.logs_dir, self.aws.agent_errors

    def set_image_environment(self, env: dict[str, str]) -> None:
        """Give the fake the environment its "image" runs commands with; by default ``self.aws``."""
        self.aws.image_env = env

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            executor_config = self.start_aws()
            self.config.update(executor_config)
            self.config.update(self._caller_config)
            self.set_image_environment(image_environment(self.env(), self.python))
        except BaseException:
            self.stop_aws()
            AirflowStack.__exit__(self, None, None, None)
            raise
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self.stop_aws()

    def stop_groups(self) -> list[list[str]]:
        """Scheduler(s) and dag-processor first, the api-server last."""
        last = [name for name in self.procs if name == "api-server"]
        first = [name for name in self.procs if name not in last]
        return [group for group in (first, last) if group]

    def logs(self) -> str:
        folder, agent_errors = self.worker_logs()
        recent = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]
        tails = "\n".join(
            f"--- {self.worker_logs_label} {p.stem} ---\n{p.read_text(errors='replace')[-3000:]}"
            for p in recent
        )
        errors = f"\n--- agent errors ---\n{agent_errors}" if agent_errors else ""
        return f"{super().logs()}\n{tails}{errors}"


class EcsStack(AwsStack):
    """
    An :class:`AirflowStack` on AwsEcsExecutor against a :class:`FakeAws`; start a scheduler with
    :meth:`scheduler` once :meth:`wait_healthy` returned.

    :param capacity: ECS tasks running at once (the others wait ``PENDING``).
    :param config: extra ``AIRFLOW__*`` variables for every component (over the executor's).
    """

    root_prefix = "aws-e2e-"
    db_prefix = "aws_e2e_"

    def __init__(
        self,
        python: str,
        backend: str = "sqlite",
        config: Mapping[str, str] | None = None,
        capacity: int = 4,
    ):
        super().__init__(python, backend, config)
        self.aws = FakeAws({}, self.root / "ecs-containers", capacity=capacity)

    def start_aws(self) -> dict[str, str]:
        self.aws.start()
        create_ecs_resources(self.aws)
        return {**self.aws.client_env(), **ecs_executor_config()}

    # -- observations ----------------------------------------------------------------------------
    def callback_runs(self, callback_id: str) -> list[int | None]:
        return [
            task.containers[0].exitCode if task.containers else None
            for task in self.ecs_tasks_for(callback_id)
        ]

    def ecs_tasks_for(self, callback_id: str) -> list[Any]:
        """The ECS tasks whose container command carries the callback's workload."""
        return [
            task
            for task in self.aws.ecs_tasks()
            if callback_id in str((task.overrides or {}).get("containerOverrides") or "")
        ]

    def ecs_tasks_for_run(self, dag_id: str) -> list[Any]:
        """The ECS tasks whose container command names the DAG (plain or compressed workload)."""
        import base64
        import zlib

        found = []
        for task in self.aws.ecs_tasks():
            for override in (task.overrides or {}).get("containerOverrides") or []:
                command = list(override.get("command") or [])
                text = " ".join(command)
                if "--json-zlib-base64" in command:
                    text = zlib.decompress(
                        base64.b64decode(command[command.index("--json-zlib-base64") + 1])
                    ).decode()
                if dag_id in text:
                    found.append(task)
        return found


__all__ = [
    "CLUSTER",
    "CONTAINER",
    "ECS_EXECUTOR",
    "AwsStack",
    "EcsStack",
    "FakeAws",
    "create_ecs_resources",
    "ecs_executor_config",
]
