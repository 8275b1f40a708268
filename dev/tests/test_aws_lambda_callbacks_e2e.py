"""End to end: executor callbacks on AwsLambdaExecutor, each an asynchronous invocation of dev/aws_e2e's fake.

Each stack (``aws_e2e.lambda_stack``) runs api-server, scheduler and dag-processor, with moto in
server mode in this test process and :class:`~aws_e2e.lambda_fake.FakeLambda` running every
asynchronous invocation through the provider's own handler (``aws_lambda/docker/app.py``) as a local
process: it runs the workload's command with the stack's virtualenv and configuration and sends the
result to the SQS results queue, which the executor reads. The Deadline Alert DAGs are
``dev/callback_e2e/dags/e2e_deadline_dags.py`` (a ``deadline`` callable that writes a ``started``
and an ``ended`` marker, so a callback run twice, or not to its end, shows).

A SQLite stack on the stable core (``.venv-stable``: core 3.3.2) runs first; then one PostgreSQL
stack on the patched core (``.venv``) is shared by the other tests (one fake AWS per process).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("moto")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aws_e2e.lambda_stack import LambdaStack
from callback_e2e.common import FAST_RECOVERY, PYTHON, STABLE_PYTHON
from callback_e2e.scenarios import (
    burst_runs_each_once,
    dag_run_callbacks_run_once,
    deadline_phases,
    deadline_succeeds_once,
    failing_deadline_runs_once,
    running_callback_outlives_its_scheduler,
    stable_core_deadline_callbacks,
    start_scheduling,
    wait_deadline_finished,
)
from callback_e2e.stack import wait_for

DAGS = [
    "e2e_deadline_ok",
    "e2e_deadline_watch",
    "e2e_deadline_slow",
    "e2e_deadline_queue",
    "e2e_deadline_refused",
    "e2e_deadline_fails",
    "e2e_deadline_big",
    "e2e_deadline_huge_64k",
    "e2e_deadline_burst",
    "e2e_fail",
    "e2e_ok",
    "e2e_api",
]
# 12 in CI (three times the 4 invocations the fake runs at once); AWS_E2E_BURST=50 for the 50.
BURST = int(os.environ.get("AWS_E2E_BURST", "12"))

# The fake Lambda's payload limit in the PostgreSQL stack.
PAYLOAD_LIMIT = 48 * 1024
# Results nobody tracks are deleted after this many seconds (the default is an hour).
STALE_RESULT_TIMEOUT = 30

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# ------------------------------------------------------------------------------ stable core (3.3.2)


@pytest.mark.skipif(
    not os.path.exists(STABLE_PYTHON), reason="no .venv-stable (dev/series env --baseline stable)"
)
@pytest.mark.full
def test_stable_core_deadline_callbacks_succeed_once_and_fail_once_with_their_reason():
    with LambdaStack(STABLE_PYTHON, "sqlite", {"AIRFLOW__CORE__PARALLELISM": "4"}, capacity=2) as stack:
        stable_core_deadline_callbacks(stack)


# ------------------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def lambda_stack():
    config = {
        **FAST_RECOVERY,
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__AWS_LAMBDA_EXECUTOR__STALE_RESULT_TIMEOUT": str(STALE_RESULT_TIMEOUT),
    }
    # Lambda's 1 MiB limit lowered to 48 KiB: a DAG with 64 kB of kwargs reaches it (a 1 MB one would
    # take long to parse and serialize); compression starts at 256 KiB, so the 64 kB go as they are.
    with LambdaStack(PYTHON, "postgres", config, capacity=4, async_payload_limit=PAYLOAD_LIMIT) as stack:
        start_scheduling(stack, DAGS)
        stack.api.request("POST", "/api/v2/variables", {"key": "e2e_in", "value": "from-the-test"})
        yield stack


@pytest.fixture
def lam(lambda_stack):
    """The PostgreSQL stack with a scheduler running (a test before may have killed it)."""
    return lambda_stack.ensure_scheduler()


def test_deadline_callback_succeeds_once_as_one_invocation(lam):
    deadline_succeeds_once(lam, "ok-1")


def test_failing_deadline_callback_runs_once_and_ends_failed_with_its_reason(lam):
    failing_deadline_runs_once(lam, "fails-1", "fails on purpose")


@pytest.mark.full
def test_dag_run_callbacks_run_once_on_lambda_and_read_a_variable(lam):
    callbacks = dag_run_callbacks_run_once(lam)
    for callback in callbacks.values():
        assert len(lam.invocations_for(callback["id"])) == 1, callback


@pytest.mark.full
def test_callback_with_large_kwargs_runs_once(lam):
    """10 kB of callback kwargs travel in the invocation's event (well within Lambda's payload limit)."""
    lam.trigger("e2e_deadline_big", "big-1")

    callback = wait_deadline_finished(lam, "e2e_deadline_big")
    assert len(callback["data"]["kwargs"]["payload"]) == 10_240
    assert callback["state"] == "success", (callback["output"], lam.logs())
    assert deadline_phases(lam, "e2e_deadline_big") == {"started": 1, "ended": 1}
    assert len(lam.invocations_for(callback["id"])) == 1


@pytest.mark.full
def test_callback_lambda_refuses_as_too_large_fails_at_once_with_the_reason(lam):
    """64 kB of kwargs that do not compress, over the fake's lowered limit: refused once, failed at once."""
    lam.trigger("e2e_deadline_huge_64k", "huge-1")

    callback = wait_deadline_finished(lam, "e2e_deadline_huge_64k")
    assert callback["state"] == "failed", (callback["output"], lam.logs())
    assert deadline_phases(lam, "e2e_deadline_huge_64k") == {}, "the callback cannot have run"
    assert lam.invocations_for(callback["id"]) == []
    output = callback["output"] or ""
    assert "refused the workload's invocation payload" in output, output
    assert f"Request must be smaller than {PAYLOAD_LIMIT} bytes" in output, output


@pytest.mark.full
def test_results_left_by_an_earlier_scheduler_do_not_hide_new_results_and_are_deleted_once_stale(lam):
    """Three batches of results no executor tracks, ahead of the new callbacks' in the queue."""
    sqs = lam.aws.client("sqs")
    for _ in range(30):
        body = json.dumps({"task_key": str(uuid.uuid4()), "return_code": 0})
        sqs.send_message(QueueUrl=lam.queue_url, MessageBody=body)
    sent = time.monotonic()
    lam.trigger("e2e_deadline_queue", "stale-1")

    callback = wait_deadline_finished(lam, "e2e_deadline_queue")
    assert callback["state"] == "success", (callback["output"], lam.logs())
    assert deadline_phases(lam, "e2e_deadline_queue") == {"started": 1, "ended": 1}
    if time.monotonic() - sent < STALE_RESULT_TIMEOUT - 5:
        assert lam.queue_depth() == 30, "a result nobody tracks was deleted before it was stale"

    # The queue is read while workloads run: once stale, the next callback's syncs delete them.
    time.sleep(max(0.0, STALE_RESULT_TIMEOUT + 1 - (time.monotonic() - sent)))
    lam.trigger("e2e_deadline_burst", "stale-2")
    callback = wait_deadline_finished(lam, "e2e_deadline_burst")
    assert callback["state"] == "success", (callback["output"], lam.logs())
    assert lam.queue_depth() == 0, lam.logs()
    schedulers = "".join(lam.logs_of(n) for n in lam.procs if n.startswith("scheduler"))
    assert "no executor sharing the queue has taken it" in schedulers


@pytest.mark.full
def test_callback_whose_invocation_is_refused_across_a_scheduler_restart_runs_once(lam):
    """Invoke throttled, the scheduler killed while the executor retries: the next scheduler queues it again."""
    lam.lam.fail_next_invokes(1000)
    lam.trigger("e2e_deadline_refused", "invoke-retries-1")
    wait_for("a refused Invoke", lambda: len(lam.lam.invoke_failures) < 1000, 120)
    killed = lam.running_scheduler()
    lam.kill(killed)
    lam.lam.invoke_failures.clear()
    lam.scheduler(f"{killed}-after-refusals")

    callback = wait_deadline_finished(lam, "e2e_deadline_refused", timeout=120)
    assert callback["state"] == "success", (callback["output"], lam.logs())
    assert deadline_phases(lam, "e2e_deadline_refused") == {"started": 1, "ended": 1}
    assert len(lam.invocations_for(callback["id"])) == 1


@pytest.mark.full
def test_callback_running_while_the_scheduler_is_stopped_is_left_to_the_next_and_reported_once(lam):
    """SIGTERM while the callback runs, end_wait_timeout 0: the scheduler ends at once; the next adopts it."""
    running_callback_outlives_its_scheduler(lam, "stop", "e2e_deadline_slow", "scheduler-stopped-1")


def test_callback_running_while_the_scheduler_is_killed_is_adopted_and_reported_once(lam):
    """SIGKILL while the callback runs: the next scheduler adopts it; it ends once, successfully."""
    running_callback_outlives_its_scheduler(lam, "kill", "e2e_deadline_watch", "scheduler-killed-1")


@pytest.mark.full
def test_burst_of_callbacks_runs_each_once(lam):
    # Last: the stale-results test above counts the callbacks of the burst DAG.
    callbacks = burst_runs_each_once(lam, BURST)
    assert all(len(lam.invocations_for(c["id"])) == 1 for c in callbacks), "a callback ran in two invocations"
