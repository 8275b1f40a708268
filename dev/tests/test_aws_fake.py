"""The ECS side of dev/aws_e2e's fake: moto in server mode plus an agent that runs each task locally.

Everything here goes through boto3 over HTTP, as the executors do; the executor's own parsing
(``BotoDescribeTasksSchema`` and ``EcsExecutorTask.get_task_state``) reads what the fake reports.
"""

from __future__ import annotations

import os
import time

import pytest

pytest.importorskip("moto")

from botocore.exceptions import ClientError

from aws_e2e import CONTAINER, TASK_FAMILY, create_ecs_resources
from aws_e2e.fake import ESSENTIAL_EXITED, OVERRIDES_LIMIT, FakeAws, overrides_length

CLUSTER = "airflow-e2e"


@pytest.fixture
def aws(tmp_path):
    image = {"PATH": os.environ["PATH"], "FROM_IMAGE": "image", "SHADOWED": "image"}
    with FakeAws(image, tmp_path / "containers", capacity=2, stop_timeout=5, poll=0.05) as fake:
        create_ecs_resources(fake)
        fake.client("ecs").register_task_definition(
            family="with-env",
            networkMode="bridge",
            containerDefinitions=[
                {
                    "name": CONTAINER,
                    "image": "x",
                    "memory": 128,
                    "environment": [
                        {"name": "FROM_DEFINITION", "value": "definition"},
                        {"name": "SHADOWED", "value": "definition"},
                    ],
                }
            ],
        )
        yield fake


def _run(aws, command, family=TASK_FAMILY, environment=None):
    override = {"name": CONTAINER, "command": command}
    if environment:
        override["environment"] = [{"name": k, "value": v} for k, v in environment.items()]
    response = aws.client("ecs").run_task(
        cluster=CLUSTER,
        taskDefinition=family,
        launchType="FARGATE",
        overrides={"containerOverrides": [override]},
    )
    return response


def _describe(aws, arn):
    (task,) = aws.client("ecs").describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"]
    return task


def _wait_status(aws, arn, status, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        task = _describe(aws, arn)
        if task["lastStatus"] == status:
            return task
        assert time.monotonic() < deadline, f"task still {task['lastStatus']}, not {status}"
        time.sleep(0.05)


def _executor_state(aws, arn):
    from airflow.providers.amazon.aws.executors.ecs.boto_schema import BotoDescribeTasksSchema

    response = aws.client("ecs").describe_tasks(cluster=CLUSTER, tasks=[arn])
    (task,) = BotoDescribeTasksSchema().load(response)["tasks"]
    return task.get_task_state()


def test_the_container_command_runs_with_the_container_environment_and_its_exit_code_is_reported(aws):
    script = 'echo "$FROM_IMAGE $FROM_DEFINITION $FROM_OVERRIDE $SHADOWED"; exit 3'
    arn = _run(aws, ["sh", "-c", script], "with-env", {"FROM_OVERRIDE": "override", "SHADOWED": "override"})[
        "tasks"
    ][0]["taskArn"]

    task = _wait_status(aws, arn, "STOPPED")
    assert task["desiredStatus"] == "STOPPED"
    assert task["stoppedReason"] == ESSENTIAL_EXITED
    assert task["startedAt"] <= task["stoppedAt"]
    assert [c["exitCode"] for c in task["containers"]] == [3]
    assert aws.container_log(arn) == "image definition override override\n"
    assert _executor_state(aws, arn) == "failed"
    assert aws.started == [arn]


def test_a_container_that_exits_0_is_a_success_for_the_executor(aws):
    arn = _run(aws, ["true"])["tasks"][0]["taskArn"]

    task = _wait_status(aws, arn, "STOPPED")
    assert [c["exitCode"] for c in task["containers"]] == [0]
    assert _executor_state(aws, arn) == "success"


def test_a_task_starts_pending_and_never_moves_because_it_is_described(tmp_path):
    with FakeAws({"PATH": os.environ["PATH"]}, tmp_path, capacity=0, poll=0.05) as aws:
        create_ecs_resources(aws)
        response = _run(aws, ["true"])
        assert response["tasks"][0]["lastStatus"] == "PENDING"
        arn = response["tasks"][0]["taskArn"]
        for _ in range(10):
            task = _describe(aws, arn)
        assert (task["lastStatus"], task["desiredStatus"]) == ("PENDING", "RUNNING")
        assert "exitCode" not in task["containers"][0]
        assert _executor_state(aws, arn) == "queued"
        assert aws.started == []


def test_no_more_tasks_run_at_once_than_the_capacity(aws):
    arns = [_run(aws, ["sleep", "30"])["tasks"][0]["taskArn"] for _ in range(3)]
    for arn in arns[:2]:
        _wait_status(aws, arn, "RUNNING")
    time.sleep(0.5)
    assert _describe(aws, arns[2])["lastStatus"] == "PENDING"
    assert aws.running_count() == 2

    aws.client("ecs").stop_task(cluster=CLUSTER, task=arns[0], reason="make room")
    _wait_status(aws, arns[2], "RUNNING")


def test_stop_task_terminates_the_container_and_reports_its_exit_code_with_the_reason(aws):
    arn = _run(aws, ["sleep", "30"])["tasks"][0]["taskArn"]
    _wait_status(aws, arn, "RUNNING")

    aws.client("ecs").stop_task(cluster=CLUSTER, task=arn, reason="Airflow Executor received a SIGTERM")

    task = _wait_status(aws, arn, "STOPPED")
    assert task["stoppedReason"] == "Airflow Executor received a SIGTERM"
    assert [c["exitCode"] for c in task["containers"]] == [143]  # 128 + SIGTERM


def test_a_task_stopped_before_it_started_has_no_exit_code_and_is_removed_for_the_executor(tmp_path):
    with FakeAws({"PATH": os.environ["PATH"]}, tmp_path, capacity=0, poll=0.05) as aws:
        create_ecs_resources(aws)
        arn = _run(aws, ["true"])["tasks"][0]["taskArn"]
        aws.client("ecs").stop_task(cluster=CLUSTER, task=arn, reason="no longer wanted")

        task = _wait_status(aws, arn, "STOPPED")
        assert "startedAt" not in task
        assert "exitCode" not in task["containers"][0]
        assert _executor_state(aws, arn) == "removed"


@pytest.mark.parametrize("with_other_tasks", [False, True])
def test_stop_task_of_an_unknown_task_is_an_invalid_parameter_as_on_aws(aws, with_other_tasks):
    """The ECS executor's start-up health check stops task ``aaa...a`` and expects exactly this."""
    if with_other_tasks:
        _run(aws, ["true"])
    with pytest.raises(ClientError) as err:
        aws.client("ecs").stop_task(cluster=CLUSTER, task="a" * 32)
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "task was not found" in err.value.response["Error"]["Message"]


def test_overrides_longer_than_8192_characters_are_rejected_as_on_aws(aws):
    base = overrides_length({"containerOverrides": [{"name": CONTAINER, "command": [""]}]})
    fits = "x" * (OVERRIDES_LIMIT - base)
    assert (
        overrides_length({"containerOverrides": [{"name": CONTAINER, "command": [fits]}]}) == OVERRIDES_LIMIT
    )

    assert _run(aws, [fits])["tasks"]
    with pytest.raises(ClientError) as err:
        _run(aws, [fits + "x"])
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"
    assert err.value.response["Error"]["Message"] == "Container Overrides length must be at most 8192"


def test_capacity_failures_place_nothing_and_name_the_reason(aws):
    aws.fail_next_run_tasks(2, reason="RESOURCE:CPU")

    for _ in range(2):
        response = _run(aws, ["true"])
        assert response["tasks"] == []
        assert [f["reason"] for f in response["failures"]] == ["RESOURCE:CPU"]
    assert _run(aws, ["true"])["tasks"]
    assert len(aws.ecs_tasks()) == 1


def test_a_fake_that_stopped_leaves_no_container_running_and_no_state(tmp_path):
    with FakeAws({"PATH": os.environ["PATH"]}, tmp_path, poll=0.05) as aws:
        create_ecs_resources(aws)
        arn = _run(aws, ["sleep", "30"])["tasks"][0]["taskArn"]
        _wait_status(aws, arn, "RUNNING")
        (running,) = aws._running.values()
    assert running.proc.poll() is not None
    with FakeAws({"PATH": os.environ["PATH"]}, tmp_path, poll=0.05) as again:
        assert again.ecs_tasks() == []


def test_the_output_of_a_container_with_awslogs_goes_to_its_cloudwatch_stream(aws):
    from aws_e2e import LOG_GROUP, LOG_STREAM_PREFIX

    arn = _run(aws, ["sh", "-c", "echo one; echo two; exit 1"])["tasks"][0]["taskArn"]
    _wait_status(aws, arn, "STOPPED")

    stream = f"{LOG_STREAM_PREFIX}/{CONTAINER}/{arn.split('/')[-1]}"
    events = aws.client("logs").get_log_events(logGroupName=LOG_GROUP, logStreamName=stream)["events"]
    assert [e["message"] for e in events] == ["one", "two"]
