"""The AWS Batch side of dev/aws_e2e's fake: each submitted job's container runs as a local process.

Everything here goes through boto3 over HTTP, as the Batch executor does; the executor's own parsing
(``BatchDescribeJobsResponseSchema`` and ``BatchJob.get_job_state``) reads what the fake reports.
"""

from __future__ import annotations

import json
import os
import time

import pytest

pytest.importorskip("moto")

from botocore.exceptions import ClientError

from aws_e2e.batch_fake import PAYLOAD_TOO_LARGE, SUBMIT_JOB_PAYLOAD_LIMIT, FakeAwsBatch
from aws_e2e.batch_stack import (
    JOB_DEFINITION,
    JOB_QUEUE,
    LOG_GROUP,
    LOG_STREAM_PREFIX,
    create_batch_resources,
)
from aws_e2e.fake import ESSENTIAL_EXITED

IMAGE = {"FROM_IMAGE": "image", "SHADOWED": "image"}


def _fake(tmp_path, capacity=2):
    return FakeAwsBatch(
        {"PATH": os.environ["PATH"], **IMAGE}, tmp_path / "containers", capacity, stop_timeout=5, poll=0.05
    )


@pytest.fixture
def aws(tmp_path):
    with _fake(tmp_path) as fake:
        create_batch_resources(fake)
        fake.client("batch").register_job_definition(
            jobDefinitionName="with-env",
            type="container",
            containerProperties={
                "image": "x",
                "command": ["sh", "-c", "echo from the definition"],
                "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "128"}],
                "environment": [
                    {"name": "FROM_DEFINITION", "value": "definition"},
                    {"name": "SHADOWED", "value": "definition"},
                ],
            },
        )
        yield fake


def _submit(aws, command=None, definition=JOB_DEFINITION, environment=None, queue=JOB_QUEUE, name="job"):
    overrides = {}
    if command is not None:
        overrides["command"] = command
    if environment:
        overrides["environment"] = [{"name": k, "value": v} for k, v in environment.items()]
    return aws.client("batch").submit_job(
        jobName=name, jobQueue=queue, jobDefinition=definition, containerOverrides=overrides
    )["jobId"]


def _describe(aws, job_id):
    (job,) = aws.client("batch").describe_jobs(jobs=[job_id])["jobs"]
    return job


def _wait_status(aws, job_id, *statuses, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        job = _describe(aws, job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}, not {statuses}"
        time.sleep(0.02)


def _executor_job(aws, job_id):
    from airflow.providers.amazon.aws.executors.batch.boto_schema import BatchDescribeJobsResponseSchema

    response = aws.client("batch").describe_jobs(jobs=[job_id])
    (job,) = BatchDescribeJobsResponseSchema().load(response)["jobs"]
    return job


def test_the_container_command_runs_with_the_job_environment_and_its_exit_code_is_reported(aws):
    script = 'echo "$FROM_IMAGE $FROM_DEFINITION $FROM_OVERRIDE $SHADOWED $AWS_BATCH_JOB_ID"; exit 3'
    job_id = _submit(
        aws, ["sh", "-c", script], "with-env", {"FROM_OVERRIDE": "override", "SHADOWED": "override"}
    )

    job = _wait_status(aws, job_id, "FAILED")
    assert job["statusReason"] == ESSENTIAL_EXITED
    assert job["createdAt"] <= job["startedAt"] <= job["stoppedAt"]
    assert job["container"]["exitCode"] == 3
    assert aws.job_log(job_id) == f"image definition override override {job_id}\n"
    executor_job = _executor_job(aws, job_id)
    assert executor_job.get_job_state() == "failed"
    assert executor_job.container["exit_code"] == 3
    assert aws.started_jobs == [job_id]


def test_describing_a_job_does_not_grow_its_environment(aws):
    job_id = _submit(aws, ["true"], environment={"ONE": "1"})
    for _ in range(3):
        environment = _describe(aws, job_id)["container"]["environment"]
    assert sorted(e["name"] for e in environment) == ["AWS_BATCH_JOB_ID", "ONE"]


def test_without_a_command_override_the_definition_command_runs(aws):
    job_id = _submit(aws, None, "with-env")
    _wait_status(aws, job_id, "SUCCEEDED")
    assert aws.job_log(job_id) == "from the definition\n"


def test_a_container_that_exits_0_succeeds_and_the_job_went_through_the_batch_states(aws):
    job_id = _submit(aws, ["sh", "-c", "sleep 0.5"])
    seen = []
    deadline = time.monotonic() + 20
    while not seen or seen[-1] != "SUCCEEDED":
        status = _describe(aws, job_id)["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        assert time.monotonic() < deadline, seen
        time.sleep(0.01)
    # Every state is seen once, in order (a fast poll may miss a short one).
    order = ["SUBMITTED", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]
    assert seen == sorted(seen, key=order.index)
    assert {"RUNNING", "SUCCEEDED"} <= set(seen)
    job = _describe(aws, job_id)
    assert job["container"]["exitCode"] == 0
    assert job["statusReason"] == ESSENTIAL_EXITED
    assert _executor_job(aws, job_id).get_job_state() == "success"


def test_a_job_never_moves_because_it_is_described(tmp_path):
    with _fake(tmp_path, capacity=0) as aws:
        create_batch_resources(aws)
        job_id = _submit(aws, ["true"])
        _wait_status(aws, job_id, "RUNNABLE")
        for _ in range(10):
            job = _describe(aws, job_id)
        assert job["status"] == "RUNNABLE"
        assert "startedAt" not in job
        assert "exitCode" not in job["container"]
        assert _executor_job(aws, job_id).get_job_state() == "queued"
        assert aws.started_jobs == []


def test_no_more_jobs_run_at_once_than_the_capacity(aws):
    job_ids = [_submit(aws, ["sleep", "30"]) for _ in range(3)]
    for job_id in job_ids[:2]:
        _wait_status(aws, job_id, "RUNNING")
    time.sleep(0.5)
    assert _describe(aws, job_ids[2])["status"] == "RUNNABLE"
    assert aws.running_jobs_count() == 2

    aws.client("batch").terminate_job(jobId=job_ids[0], reason="make room")
    _wait_status(aws, job_ids[2], "RUNNING")


def test_terminate_job_stops_the_container_and_fails_the_job_with_the_reason(aws):
    job_id = _submit(aws, ["sleep", "30"])
    _wait_status(aws, job_id, "RUNNING")

    aws.client("batch").terminate_job(jobId=job_id, reason="Airflow Executor received a SIGTERM")

    job = _wait_status(aws, job_id, "SUCCEEDED", "FAILED")
    assert job["status"] == "FAILED"
    assert job["statusReason"] == "Airflow Executor received a SIGTERM"
    assert job["container"]["exitCode"] == 143  # 128 + SIGTERM


def test_a_container_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path):
    with FakeAwsBatch({"PATH": os.environ["PATH"]}, tmp_path, stop_timeout=0.5, poll=0.05) as aws:
        create_batch_resources(aws)
        job_id = _submit(aws, ["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"])
        _wait_status(aws, job_id, "RUNNING")
        time.sleep(0.3)
        aws.client("batch").terminate_job(jobId=job_id, reason="stop")
        job = _wait_status(aws, job_id, "FAILED", timeout=10)
        assert job["container"]["exitCode"] == 137  # 128 + SIGKILL


def test_a_job_terminated_before_it_started_fails_without_an_exit_code(tmp_path):
    with _fake(tmp_path, capacity=0) as aws:
        create_batch_resources(aws)
        job_id = _submit(aws, ["true"])
        aws.client("batch").terminate_job(jobId=job_id, reason="no longer wanted")

        job = _wait_status(aws, job_id, "FAILED")
        assert job["statusReason"] == "no longer wanted"
        assert "startedAt" not in job
        assert "exitCode" not in job["container"]
        assert _executor_job(aws, job_id).get_job_state() == "failed"
        assert aws.started_jobs == []


def test_a_command_that_cannot_start_fails_the_job_without_an_exit_code(aws):
    job_id = _submit(aws, ["/nonexistent/command"])
    job = _wait_status(aws, job_id, "FAILED")
    assert job["statusReason"].startswith("CannotStartContainerError")
    assert "exitCode" not in job["container"]


@pytest.mark.parametrize(
    ("queue", "definition"), [("no-such-queue", JOB_DEFINITION), (JOB_QUEUE, "no-such-definition")]
)
def test_an_unknown_queue_or_definition_is_a_client_error(aws, queue, definition):
    with pytest.raises(ClientError) as err:
        _submit(aws, ["true"], definition=definition, queue=queue)
    assert err.value.response["Error"]["Code"] == "ClientException"
    assert aws.batch_jobs() == []


def test_a_submit_job_payload_larger_than_30_kib_is_rejected_as_on_aws(aws):
    def payload(command):
        request = {
            "jobName": "job",
            "jobQueue": JOB_QUEUE,
            "jobDefinition": JOB_DEFINITION,
            "containerOverrides": {"command": command},
        }
        return len(json.dumps(request, separators=(",", ":")))

    base = payload([""])
    fits = "x" * (SUBMIT_JOB_PAYLOAD_LIMIT - base - 200)
    assert _submit(aws, [fits])
    with pytest.raises(ClientError) as err:
        _submit(aws, ["x" * SUBMIT_JOB_PAYLOAD_LIMIT])
    assert err.value.response["Error"]["Code"] == "ClientException"
    assert err.value.response["Error"]["Message"] == PAYLOAD_TOO_LARGE
    assert len(aws.batch_jobs()) == 1


def test_the_executor_health_check_describes_an_unknown_job_and_gets_none(aws):
    assert aws.client("batch").describe_jobs(jobs=["a" * 32])["jobs"] == []


def test_list_jobs_lists_running_jobs_unless_filtered_by_name_as_on_aws(aws):
    batch = aws.client("batch")
    done = _submit(aws, ["true"], name="done-job")
    running = _submit(aws, ["sleep", "30"], name="running-job")
    _wait_status(aws, done, "SUCCEEDED")
    _wait_status(aws, running, "RUNNING")

    listed = batch.list_jobs(jobQueue=JOB_QUEUE)["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [running]
    by_name = batch.list_jobs(jobQueue=JOB_QUEUE, filters=[{"name": "JOB_NAME", "values": ["done-job"]}])
    assert [j["jobId"] for j in by_name["jobSummaryList"]] == [done]
    by_prefix = batch.list_jobs(jobQueue=JOB_QUEUE, filters=[{"name": "JOB_NAME", "values": ["r*"]}])
    assert [j["jobId"] for j in by_prefix["jobSummaryList"]] == [running]


def test_the_output_of_a_job_goes_to_its_cloudwatch_stream_named_in_the_job(aws):
    job_id = _submit(aws, ["sh", "-c", "echo one; echo two; exit 1"])
    job = _wait_status(aws, job_id, "FAILED")

    stream = job["container"]["logStreamName"]
    assert stream == f"{LOG_STREAM_PREFIX}/default/{job_id}"
    assert job["container"]["logConfiguration"]["options"]["awslogs-group"] == LOG_GROUP
    events = aws.client("logs").get_log_events(logGroupName=LOG_GROUP, logStreamName=stream)["events"]
    assert [e["message"] for e in events] == ["one", "two"]


def test_without_a_log_configuration_the_output_goes_to_batch_default_group(aws):
    job_id = _submit(aws, ["sh", "-c", "echo hello"], "with-env")
    job = _wait_status(aws, job_id, "SUCCEEDED")

    assert job["container"]["logStreamName"] == f"with-env/default/{job_id}"
    events = aws.client("logs").get_log_events(
        logGroupName="/aws/batch/job", logStreamName=job["container"]["logStreamName"]
    )["events"]
    assert [e["message"] for e in events] == ["hello"]


def test_a_fake_that_stopped_leaves_no_container_running_and_no_state(tmp_path):
    with _fake(tmp_path) as aws:
        create_batch_resources(aws)
        job_id = _submit(aws, ["sleep", "30"])
        _wait_status(aws, job_id, "RUNNING")
        (running,) = aws._jobs_running.values()
    assert running.proc.poll() is not None
    with _fake(tmp_path) as again:
        assert again.batch_jobs() == []


def test_the_executor_reads_a_failed_callback_reason_from_the_job_log(aws, monkeypatch):
    """The Batch executor's own failure-reason lookup finds the callback's line in the fake's logs."""
    from airflow.providers.amazon.aws.executors.utils import callback_workload

    line = f"{callback_workload.CALLBACK_FAILED_PREFIX}it broke"
    job_id = _submit(aws, ["sh", "-c", f"echo '{line}'; exit {callback_workload.CALLBACK_FAILED_EXIT_CODE}"])
    _wait_status(aws, job_id, "FAILED")

    from airflow.providers.amazon.aws.executors.batch.batch_executor import AwsBatchExecutor

    for name, value in aws.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW__AWS_BATCH_EXECUTOR__JOB_QUEUE", JOB_QUEUE)
    monkeypatch.setenv("AIRFLOW__AWS_BATCH_EXECUTOR__JOB_DEFINITION", JOB_DEFINITION)
    monkeypatch.setenv("AIRFLOW__AWS_BATCH_EXECUTOR__JOB_NAME", "job")
    monkeypatch.setenv("AIRFLOW__AWS_BATCH_EXECUTOR__REGION_NAME", "us-east-1")
    executor = AwsBatchExecutor()
    assert executor._callback_failure_reason(_executor_job(aws, job_id)) == "it broke"


def test_submit_failures_on_demand_create_no_job_and_name_the_reason(aws):
    aws.fail_next_submit_jobs(2, message="Too many requests")
    for _ in range(2):
        with pytest.raises(ClientError) as err:
            _submit(aws, ["true"])
        assert err.value.response["Error"]["Code"] == "ClientException"
        assert err.value.response["Error"]["Message"] == "Too many requests"
    assert _submit(aws, ["true"])
    assert len(aws.batch_jobs()) == 1


def test_demo_stack_runs_the_executor_against_the_fake(tmp_path):
    """``scripts/demo --executor AwsBatchExecutor``: the executor is pointed at the fake's queue."""
    import sys

    from demo_stack.stacks import StackContext, get_stack

    stack = get_stack("AwsBatchExecutor")
    ctx = StackContext(airflow_home=tmp_path, python=sys.executable, api_url="http://127.0.0.1:1", env={})
    try:
        config = stack.config(ctx)
        assert config["AIRFLOW__CORE__EXECUTOR"].endswith(".AwsBatchExecutor")
        assert config["AIRFLOW__AWS_BATCH_EXECUTOR__JOB_QUEUE"] == JOB_QUEUE
        stack.setup(ctx)
        batch = stack._aws.client("batch")
        queues = batch.describe_job_queues(jobQueues=[JOB_QUEUE])["jobQueues"]
        assert [q["jobQueueName"] for q in queues] == [JOB_QUEUE]
        assert stack.executor_label(config["AIRFLOW__CORE__EXECUTOR"]) == "AwsBatchExecutor"
    finally:
        stack.teardown(ctx)
    stack.teardown(ctx)  # a second teardown is harmless
