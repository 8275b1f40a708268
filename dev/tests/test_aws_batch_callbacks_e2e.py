"""End to end: executor callbacks on AwsBatchExecutor, each run as an AWS Batch job by dev/aws_e2e's fake.

Each stack (``aws_e2e.batch_stack.BatchStack``) runs api-server, scheduler and dag-processor, with
moto in server mode in this test process and its agent running every Batch job's container command
(the workload the executor submitted) as a local process with the stack's virtualenv and
configuration, then reporting the job ``SUCCEEDED`` or ``FAILED`` with the container's real exit
code, as Batch does. The Deadline Alert DAGs are ``dev/callback_e2e/dags/e2e_deadline_dags.py``
(a ``deadline`` callable that writes a ``started`` and an ``ended`` marker, so a callback run twice,
or not to its end, shows); the DAG run callbacks are those of ``e2e_dags.py``, run on the executor.

One PostgreSQL stack on the patched core (``.venv``) is shared by most tests. A SQLite stack on the
stable core (``.venv-stable``: core 3.3.2, our amazon provider) runs success and failure there, first
in the file (one fake AWS per process).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("moto")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aws_e2e.batch_fake import SUBMIT_JOB_PAYLOAD_LIMIT, job_command
from aws_e2e.batch_stack import BatchStack
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

# 12 in CI (twice the 6 Batch jobs the fake runs at once; the ECS e2e runs 20); AWS_E2E_BURST=50 for
# the 50.
BURST = int(os.environ.get("AWS_E2E_BURST", "12"))
DAGS = [
    "e2e_deadline_ok",
    "e2e_deadline_watch",
    "e2e_deadline_slow",
    "e2e_deadline_queue",
    "e2e_deadline_burst",
    "e2e_deadline_fails",
    "e2e_deadline_big",
    "e2e_deadline_big_40k",
    "e2e_deadline_huge_64k",
    "e2e_fail",
    "e2e_ok",
    "e2e_api",
]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# ------------------------------------------------------------------------------ stable core (3.3.2)


@pytest.mark.skipif(
    not os.path.exists(STABLE_PYTHON), reason="no .venv-stable (dev/series env --baseline stable)"
)
@pytest.mark.full
def test_stable_core_deadline_callbacks_succeed_once_and_fail_once_with_their_reason():
    with BatchStack(STABLE_PYTHON, "sqlite", {"AIRFLOW__CORE__PARALLELISM": "4"}, capacity=2) as stack:
        stable_core_deadline_callbacks(stack)


# ------------------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def batch_stack():
    config = {**FAST_RECOVERY, "AIRFLOW__CORE__PARALLELISM": "8"}
    with BatchStack(PYTHON, "postgres", config, capacity=6) as stack:
        start_scheduling(stack, DAGS)
        stack.api.request("POST", "/api/v2/variables", {"key": "e2e_in", "value": "from-the-test"})
        yield stack


@pytest.fixture
def batch(batch_stack):
    """The PostgreSQL stack with a scheduler running (a test before may have killed it)."""
    return batch_stack.ensure_scheduler()


def test_deadline_callback_succeeds_once_as_one_batch_job(batch):
    deadline_succeeds_once(batch, "ok-1")


def test_failing_deadline_callback_runs_once_and_ends_failed_with_its_reason(batch):
    failing_deadline_runs_once(batch, "fails-1", "fails on purpose")


@pytest.mark.full
def test_dag_run_callbacks_run_once_on_batch_and_read_a_variable(batch):
    callbacks = dag_run_callbacks_run_once(batch)
    for callback in callbacks.values():
        assert len(batch.batch_jobs_for(callback["id"])) == 1, callback


@pytest.mark.full
def test_callback_with_large_kwargs_runs_once(batch):
    """10 kB of callback kwargs: the workload fits the 30 KiB of a SubmitJob payload as it is."""
    dag_id = "e2e_deadline_big"
    batch.trigger(dag_id, f"{dag_id}-1")

    callback = wait_deadline_finished(batch, dag_id)
    assert callback["state"] == "success", (callback["output"], batch.logs())
    assert deadline_phases(batch, dag_id) == {"started": 1, "ended": 1}
    assert len(batch.batch_jobs_for_run(dag_id)) == 1


@pytest.mark.full
def test_callback_larger_than_a_submit_job_request_allows_runs_once_sent_compressed(batch):
    """40 kB of callback kwargs: as JSON the workload does not fit the 30 KiB of a SubmitJob payload."""
    dag_id = "e2e_deadline_big_40k"
    batch.trigger(dag_id, f"{dag_id}-1")

    callback = wait_deadline_finished(batch, dag_id)
    assert callback["state"] == "success", (callback["output"], batch.logs())
    assert deadline_phases(batch, dag_id) == {"started": 1, "ended": 1}
    (job,) = batch.batch_jobs_for(callback["id"])
    assert "--json-zlib-base64" in job_command(job)


@pytest.mark.full
def test_callback_that_cannot_fit_a_submit_job_request_fails_at_once_naming_the_limit(batch):
    """64 kB of kwargs that do not compress enough: no SubmitJob request can carry the workload."""
    dag_id = "e2e_deadline_huge_64k"
    batch.trigger(dag_id, f"{dag_id}-1")

    callback = wait_deadline_finished(batch, dag_id)
    assert callback["state"] == "failed", (callback["output"], batch.logs())
    assert deadline_phases(batch, dag_id) == {}, "the callback cannot have run"
    assert batch.batch_jobs_for(callback["id"]) == []
    output = callback["output"] or ""
    assert f"more than the {SUBMIT_JOB_PAYLOAD_LIMIT} Batch accepts" in output, output


@pytest.mark.full
def test_burst_of_callbacks_runs_each_once(batch):
    callbacks = burst_runs_each_once(batch, BURST)
    assert all(len(batch.batch_jobs_for(c["id"])) == 1 for c in callbacks), "a callback ran in two Batch jobs"


@pytest.mark.full
def test_callback_whose_submission_fails_across_a_scheduler_restart_runs_once(batch):
    """SubmitJob refused, the scheduler killed while the executor retries: the next scheduler queues it again."""
    batch.aws.fail_next_submit_jobs(1000, message="Too many requests")
    batch.trigger("e2e_deadline_queue", "submit-retries-1")
    wait_for("a refused SubmitJob", lambda: len(batch.aws.submit_failures) < 1000, 120)
    killed = batch.running_scheduler()
    batch.kill(killed)
    batch.aws.submit_failures.clear()
    batch.scheduler(f"{killed}-after-refusals")

    callback = wait_deadline_finished(batch, "e2e_deadline_queue", timeout=120)
    assert callback["state"] == "success", (callback["output"], batch.logs())
    assert deadline_phases(batch, "e2e_deadline_queue") == {"started": 1, "ended": 1}
    assert len(batch.batch_jobs_for(callback["id"])) == 1


@pytest.mark.full
def test_callback_running_while_the_scheduler_is_stopped_is_adopted_and_reported_once(batch):
    """SIGTERM while the callback's Batch job runs: the scheduler leaves it; the next one adopts it."""
    running_callback_outlives_its_scheduler(batch, "stop", "e2e_deadline_slow", "scheduler-stopped-1")


def test_callback_running_while_the_scheduler_is_killed_is_adopted_and_reported_once(batch):
    """SIGKILL while the callback's Batch job runs: the next scheduler adopts it; it ends once, successfully."""
    running_callback_outlives_its_scheduler(batch, "kill", "e2e_deadline_watch", "scheduler-killed-1")
