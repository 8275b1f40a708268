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
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("moto")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aws_e2e.lambda_stack import LambdaStack
from callback_e2e.common import BLOCKED_POOL, FAST_RECOVERY, GENERIC_FAILURE, PYTHON, STABLE_PYTHON
from callback_e2e.scenarios import (
    burst_runs_each_once,
    dag_run_callbacks_run_once,
    deadline_callbacks,
    deadline_phases,
    wait_deadline_finished,
)
from callback_e2e.stack import wait_for

DAGS = [
    "e2e_deadline_ok",
    "e2e_deadline_watch",
    "e2e_deadline_slow",
    "e2e_deadline_queue",
    "e2e_deadline_fails",
    "e2e_deadline_big",
    "e2e_deadline_burst",
    "e2e_fail",
    "e2e_ok",
    "e2e_api",
]
# 12 in CI (three times the 4 invocations the fake runs at once); AWS_E2E_BURST=50 for the 50.
BURST = int(os.environ.get("AWS_E2E_BURST", "12"))

# Results nobody tracks are deleted after this many seconds (the default is an hour).
STALE_RESULT_TIMEOUT = 30

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _callbacks(stack: LambdaStack, dag_id: str) -> list[dict]:
    return deadline_callbacks(stack, dag_id)


def _phases(stack: LambdaStack, dag_id: str) -> Counter:
    return deadline_phases(stack, dag_id)


def _wait_finished(stack: LambdaStack, dag_id: str, timeout: float = 120) -> dict:
    return wait_deadline_finished(stack, dag_id, timeout, settle=3)


def _start(stack: LambdaStack, dags: list[str]) -> None:
    stack.wait_healthy()
    stack.api.warm_execution_api()
    stack.api.request("POST", "/api/v2/pools", {"name": BLOCKED_POOL, "slots": 0})
    stack.scheduler()
    stack.wait_dags(dags)


def _check_deadline_succeeds_once(stack: LambdaStack, run_id: str) -> None:
    stack.trigger("e2e_deadline_ok", run_id)
    callback = _wait_finished(stack, "e2e_deadline_ok")
    assert callback["state"] == "success", (callback["output"], stack.logs())
    assert _phases(stack, "e2e_deadline_ok") == {"started": 1, "ended": 1}
    (invocation,) = stack.invocations_for(callback["id"])
    assert invocation.exit_codes == [0]
    assert "Callback executed successfully" in stack.callback_log(callback["id"])


def _check_failing_deadline_runs_once_with_its_reason(stack: LambdaStack, run_id: str, reason: str) -> None:
    stack.trigger("e2e_deadline_fails", run_id)
    callback = _wait_finished(stack, "e2e_deadline_fails")
    assert callback["state"] == "failed", (callback["output"], stack.logs())
    assert _phases(stack, "e2e_deadline_fails") == {"started": 1}, "the body ran more than once"
    invocations = stack.invocations_for(callback["id"])
    assert len(invocations) == 1, f"the failed callback was resubmitted: {len(invocations)} invocations"
    output = callback["output"] or ""
    assert output != GENERIC_FAILURE, f"no reason in the callback's output: {output!r}"
    assert reason in output, output


# ------------------------------------------------------------------------------ stable core (3.3.2)


@pytest.mark.skipif(
    not os.path.exists(STABLE_PYTHON), reason="no .venv-stable (dev/series env --baseline stable)"
)
def test_stable_core_deadline_callbacks_succeed_once_and_fail_once_with_their_reason():
    with LambdaStack(STABLE_PYTHON, "sqlite", {"AIRFLOW__CORE__PARALLELISM": "4"}, capacity=2) as stack:
        _start(stack, ["e2e_deadline_ok", "e2e_deadline_fails"])
        _check_deadline_succeeds_once(stack, "stable-ok-1")
        _check_failing_deadline_runs_once_with_its_reason(
            stack, "stable-fails-1", "Callback subprocess exited with code 1"
        )


# ------------------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def lambda_stack():
    config = {
        **FAST_RECOVERY,
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__AWS_LAMBDA_EXECUTOR__STALE_RESULT_TIMEOUT": str(STALE_RESULT_TIMEOUT),
    }
    with LambdaStack(PYTHON, "postgres", config, capacity=4) as stack:
        _start(stack, DAGS)
        stack.api.request("POST", "/api/v2/variables", {"key": "e2e_in", "value": "from-the-test"})
        yield stack


@pytest.fixture
def lam(lambda_stack):
    """The PostgreSQL stack with a scheduler running (a test before may have killed it)."""
    if not any(name.startswith("scheduler") and proc.alive() for name, proc in lambda_stack.procs.items()):
        lambda_stack.scheduler(f"scheduler-{len(lambda_stack.procs)}")
    return lambda_stack


def test_deadline_callback_succeeds_once_as_one_invocation(lam):
    _check_deadline_succeeds_once(lam, "ok-1")


def test_failing_deadline_callback_runs_once_and_ends_failed_with_its_reason(lam):
    _check_failing_deadline_runs_once_with_its_reason(lam, "fails-1", "fails on purpose")


def test_dag_run_callbacks_run_once_on_lambda_and_read_a_variable(lam):
    callbacks = dag_run_callbacks_run_once(lam)
    for callback in callbacks.values():
        assert len(lam.invocations_for(callback["id"])) == 1, callback


def test_callback_with_large_kwargs_runs_once(lam):
    """10 kB of callback kwargs travel in the invocation's event (well within Lambda's payload limit)."""
    lam.trigger("e2e_deadline_big", "big-1")

    callback = _wait_finished(lam, "e2e_deadline_big")
    assert len(callback["data"]["kwargs"]["payload"]) == 10_240
    assert callback["state"] == "success", (callback["output"], lam.logs())
    assert _phases(lam, "e2e_deadline_big") == {"started": 1, "ended": 1}
    assert len(lam.invocations_for(callback["id"])) == 1


def test_results_left_by_an_earlier_scheduler_do_not_hide_new_results_and_are_deleted_once_stale(lam):
    """Three batches of results no executor tracks, ahead of the new callbacks' in the queue."""
    sqs = lam.aws.client("sqs")
    for _ in range(30):
        body = json.dumps({"task_key": str(uuid.uuid4()), "return_code": 0})
        sqs.send_message(QueueUrl=lam.queue_url, MessageBody=body)
    sent = time.monotonic()
    lam.trigger("e2e_deadline_queue", "stale-1")

    callback = _wait_finished(lam, "e2e_deadline_queue")
    assert callback["state"] == "success", (callback["output"], lam.logs())
    assert _phases(lam, "e2e_deadline_queue") == {"started": 1, "ended": 1}
    if time.monotonic() - sent < STALE_RESULT_TIMEOUT - 5:
        assert lam.queue_depth() == 30, "a result nobody tracks was deleted before it was stale"

    # The queue is read while workloads run: once stale, the next callback's syncs delete them.
    time.sleep(max(0.0, STALE_RESULT_TIMEOUT + 1 - (time.monotonic() - sent)))
    lam.trigger("e2e_deadline_burst", "stale-2")
    callback = _wait_finished(lam, "e2e_deadline_burst")
    assert callback["state"] == "success", (callback["output"], lam.logs())
    assert lam.queue_depth() == 0, lam.logs()
    schedulers = "".join(lam.logs_of(n) for n in lam.procs if n.startswith("scheduler"))
    assert "no executor sharing the queue has taken it" in schedulers


def test_callback_running_while_the_scheduler_is_stopped_is_left_to_the_next_and_reported_once(lam):
    """SIGTERM while the callback runs, end_wait_timeout 0: the scheduler ends at once; the next adopts it."""
    lam.trigger("e2e_deadline_slow", "scheduler-stopped-1")  # a 25 s callback
    wait_for("the callback to start", lambda: _phases(lam, "e2e_deadline_slow")["started"], 120)
    (stopped,) = [name for name, proc in lam.procs.items() if name.startswith("scheduler") and proc.alive()]
    started = time.monotonic()
    lam.stop(stopped)
    assert time.monotonic() - started < 20, "the scheduler waited for the callback"
    assert "Leaving 1 running callbacks to the next scheduler" in lam.logs_of(stopped)
    assert _phases(lam, "e2e_deadline_slow")["ended"] == 0, "the scheduler waited for the callback"
    lam.scheduler(f"{stopped}-after-stop")

    callback = _wait_finished(lam, "e2e_deadline_slow", timeout=120)
    assert callback["state"] == "success", (callback["output"], lam.logs())
    assert _phases(lam, "e2e_deadline_slow") == {"started": 1, "ended": 1}
    assert len(lam.invocations_for(callback["id"])) == 1
    assert "Adopted the following 1 callbacks" in lam.logs_of(f"{stopped}-after-stop")


def test_callback_running_while_the_scheduler_is_killed_is_adopted_and_reported_once(lam):
    """SIGKILL while the callback runs: the next scheduler adopts it; it ends once, successfully."""
    lam.trigger("e2e_deadline_watch", "scheduler-killed-1")  # a 15 s callback
    wait_for("the callback to start", lambda: _phases(lam, "e2e_deadline_watch")["started"], 120)
    (killed,) = [name for name, proc in lam.procs.items() if name.startswith("scheduler") and proc.alive()]
    lam.kill(killed)
    lam.scheduler(f"{killed}-after-kill")

    callback = _wait_finished(lam, "e2e_deadline_watch", timeout=120)
    assert callback["state"] == "success", (callback["output"], lam.logs())
    assert _phases(lam, "e2e_deadline_watch") == {"started": 1, "ended": 1}
    assert len(lam.invocations_for(callback["id"])) == 1
    assert "Adopted the following 1 callbacks" in lam.logs_of(f"{killed}-after-kill")


def test_burst_of_callbacks_runs_each_once(lam):
    # Last: the stale-results test above counts the callbacks of the burst DAG.
    callbacks = burst_runs_each_once(lam, BURST)
    assert all(len(lam.invocations_for(c["id"])) == 1 for c in callbacks), "a callback ran in two invocations"
