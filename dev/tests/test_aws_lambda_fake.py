"""The Lambda side of dev/aws_e2e's fake: asynchronous invocations run the provider's handler locally.

Everything goes through boto3 over HTTP, as the executor does; the handler is the installed
provider's ``aws_lambda/docker/app.py``, which runs the event's command and reports to SQS itself.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

pytest.importorskip("moto")

from botocore.exceptions import ClientError

from aws_e2e.fake import FakeAws
from aws_e2e.lambda_fake import ASYNC_PAYLOAD_LIMIT, FakeLambda, queue_arn

FUNCTION = "airflow-e2e-fn"


@pytest.fixture
def aws(tmp_path):
    with FakeAws({}, tmp_path / "containers") as fake:
        yield fake


@pytest.fixture
def lam(aws, tmp_path):
    image = {"PATH": os.environ["PATH"], "FROM_IMAGE": "image", "SHADOWED": "image"}
    with FakeLambda(aws, image, tmp_path / "lambda", capacity=2, retry_delay=0.1, poll=0.05) as fake:
        yield fake


@pytest.fixture
def queues(aws):
    sqs = aws.client("sqs")
    return sqs.create_queue(QueueName="results")["QueueUrl"], sqs.create_queue(QueueName="dlq")["QueueUrl"]


def _function(aws, queues, name=FUNCTION, timeout=60, retries=None, variables=None):
    role = aws.client("iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]
    client = aws.client("lambda")
    client.create_function(
        FunctionName=name,
        Role=role["Arn"],
        PackageType="Image",
        Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow:latest"},
        Timeout=timeout,
        Environment={
            "Variables": {
                "AIRFLOW__AWS_LAMBDA_EXECUTOR__QUEUE_URL": queues[0],
                "SHADOWED": "function",
                **(variables or {}),
            }
        },
        DeadLetterConfig={"TargetArn": queue_arn("dlq")},
    )
    if retries is not None:
        client.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=retries)


def _invoke(aws, task_key, command, name=FUNCTION):
    payload = json.dumps({"task_key": task_key, "command": command, "executor_config": {}})
    return aws.client("lambda").invoke(FunctionName=name, InvocationType="Event", Payload=payload)


def _messages(aws, queue_url):
    sqs = aws.client("sqs")
    found = []
    for _ in range(3):
        found += sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
    return found


def test_async_invoke_runs_the_handler_which_reports_the_commands_exit_code_to_sqs(aws, lam, queues):
    _function(aws, queues)
    response = _invoke(aws, "key-1", [sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"])

    assert response["StatusCode"] == 202
    lam.wait_idle(60)
    (invocation,) = lam.invocations_for("key-1")
    assert invocation.state == "succeeded", lam.log(invocation)
    assert invocation.exit_codes == [0], "the handler itself succeeded"
    (message,) = _messages(aws, queues[0])
    assert json.loads(message["Body"]) == {"task_key": "key-1", "return_code": 3}
    assert "hello" in lam.log(invocation)


def test_the_command_sees_the_image_then_the_function_environment(aws, lam, queues, tmp_path):
    _function(aws, queues, variables={"FROM_FUNCTION": "function"})
    out = tmp_path / "env.json"
    script = (
        "import json, os; json.dump({k: os.environ.get(k) for k in "
        "('FROM_IMAGE', 'FROM_FUNCTION', 'SHADOWED', 'AWS_LAMBDA_FUNCTION_NAME')}, "
        f"open({str(out)!r}, 'w'))"
    )
    _invoke(aws, "key-env", ["python", "-c", script])

    lam.wait_idle(60)
    assert json.loads(out.read_text()) == {
        "FROM_IMAGE": "image",
        "FROM_FUNCTION": "function",
        "SHADOWED": "function",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
    }


def test_unknown_function_is_rejected(aws, lam):
    with pytest.raises(ClientError) as err:
        _invoke(aws, "key-x", ["true"], name="no-such-function")

    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert lam.invocations == []


def test_async_payload_over_the_limit_is_rejected(aws, lam, queues):
    _function(aws, queues)
    with pytest.raises(ClientError) as err:
        _invoke(aws, "key-big", ["echo", "x" * ASYNC_PAYLOAD_LIMIT])

    assert err.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert lam.invocations == []


def test_throttled_invokes_accept_nothing_until_the_faults_are_used_up(aws, lam, queues):
    from botocore.config import Config

    _function(aws, queues)
    # boto3 retries throttled calls itself; one attempt per call shows each answer.
    client = aws.client("lambda", config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    payload = json.dumps({"task_key": "key-throttled", "command": ["true"], "executor_config": {}})
    lam.fail_next_invokes(2, message="Rate exceeded")
    for _ in range(2):
        with pytest.raises(ClientError) as err:
            client.invoke(FunctionName=FUNCTION, InvocationType="Event", Payload=payload)
        assert err.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert lam.invocations == []

    client.invoke(FunctionName=FUNCTION, InvocationType="Event", Payload=payload)
    assert len(lam.invocations_for("key-throttled")) == 1


def test_handler_error_is_retried_then_the_event_goes_to_the_dead_letter_queue(aws, lam, queues):
    # No queue URL in the function's environment: the handler raises after running the command.
    role = aws.client("iam").create_role(RoleName="bare-role", AssumeRolePolicyDocument="{}")["Role"]
    aws.client("lambda").create_function(
        FunctionName="bare",
        Role=role["Arn"],
        PackageType="Image",
        Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow:latest"},
        DeadLetterConfig={"TargetArn": queue_arn("dlq")},
    )
    aws.client("lambda").put_function_event_invoke_config(FunctionName="bare", MaximumRetryAttempts=1)
    _invoke(aws, "key-dlq", ["true"], name="bare")

    lam.wait_idle(60)
    (invocation,) = lam.invocations_for("key-dlq")
    assert invocation.state == "failed"
    assert invocation.attempts == 2, "one retry"
    assert invocation.dead_lettered
    (message,) = _messages(aws, queues[1])
    assert json.loads(message["Body"])["task_key"] == "key-dlq"
    assert message["MessageAttributes"]["RequestID"]["StringValue"] == invocation.request_id
    assert _messages(aws, queues[0]) == []


def test_function_timeout_kills_the_handler(aws, lam, queues):
    _function(aws, queues, timeout=1, retries=0)
    started = time.monotonic()
    _invoke(aws, "key-slow", ["sleep", "30"])

    lam.wait_idle(30)
    assert time.monotonic() - started < 15
    (invocation,) = lam.invocations_for("key-slow")
    assert invocation.exit_codes == [None]
    assert invocation.dead_lettered
    assert "Task timed out" in lam.log(invocation)
    assert _messages(aws, queues[0]) == []


def test_at_most_capacity_invocations_run_at_once(aws, lam, queues):
    _function(aws, queues)
    for i in range(3):
        _invoke(aws, f"key-{i}", ["sleep", "2"])

    deadline = time.monotonic() + 30
    while lam.running_count() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    states = sorted(i.state for i in lam.invocations)
    assert states == ["queued", "running", "running"]
    lam.wait_idle(60)
    assert len(_messages(aws, queues[0])) == 3
