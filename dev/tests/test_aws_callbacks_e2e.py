"""End to end: executor callbacks on AwsEcsExecutor, each run as an ECS task by dev/aws_e2e's fake.

Each stack (``dev/aws_e2e``) runs api-server, scheduler and dag-processor, with moto in server mode
in this test process and its agent running every ECS task's container command (the workload the
executor submitted, ``python -m airflow.sdk.execution_time.execute_workload --json-string ...``)
as a local process with the stack's virtualenv and configuration, then reporting the task
``STOPPED`` with the container's real exit code, as ECS does. The Deadline Alert DAGs are
``dev/callback_e2e/dags/e2e_deadline_dags.py`` (a ``deadline`` callable that writes a ``started``
and an ``ended`` marker, so a callback run twice, or not to its end, shows); the DAG run
callbacks are those of ``e2e_dags.py``, run on the executor (``[callbacks] runner =
executor``), and their DAGs' tasks run on ECS too.

One PostgreSQL stack on the patched core (``.venv``) is shared by most tests. A SQLite stack on
the stable core (``.venv-stable``: core 3.3.2, our amazon provider) runs the Deadline Alert
scenarios there, first in the file: before the PostgreSQL stack starts (one fake AWS per process, and
two stacks at once on a 2-core machine take twice as long).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("moto")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aws_e2e import EcsStack
from aws_e2e.fake import OVERRIDES_LIMIT, overrides_length
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

# 20 in CI (more than the 4 ECS tasks the fake runs at once); AWS_E2E_BURST=50 for the 50.
BURST = int(os.environ.get("AWS_E2E_BURST", "20"))
DAGS = [
    "e2e_deadline_ok",
    "e2e_deadline_watch",
    "e2e_deadline_slow",
    "e2e_deadline_queue",
    "e2e_deadline_refused",
    "e2e_deadline_burst",
    "e2e_deadline_fails",
    "e2e_deadline_big",
    "e2e_deadline_huge",
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
    with EcsStack(STABLE_PYTHON, "sqlite", {"AIRFLOW__CORE__PARALLELISM": "4"}, capacity=2) as stack:
        stable_core_deadline_callbacks(stack)


# ------------------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def ecs_stack():
    config = {**FAST_RECOVERY, "AIRFLOW__CORE__PARALLELISM": "8"}
    with EcsStack(PYTHON, "postgres", config, capacity=4) as stack:
        start_scheduling(stack, DAGS)
        stack.api.request("POST", "/api/v2/variables", {"key": "e2e_in", "value": "from-the-test"})
        yield stack


@pytest.fixture
def ecs(ecs_stack):
    """The PostgreSQL stack with a scheduler running (a test before may have killed it)."""
    return ecs_stack.ensure_scheduler()


def test_deadline_callback_succeeds_once_as_one_ecs_task(ecs):
    deadline_succeeds_once(ecs, "ok-1")


def test_failing_deadline_callback_runs_once_and_ends_failed_with_its_reason(ecs):
    failing_deadline_runs_once(ecs, "fails-1", "fails on purpose")


@pytest.mark.full
def test_callback_ecs_cannot_place_at_first_is_retried_and_runs_once(ecs):
    """An infrastructure failure before start (no capacity) is still retried."""
    ecs.aws.fail_next_run_tasks(1, reason="RESOURCE:MEMORY")
    ecs.trigger("e2e_deadline_queue", "capacity-1")

    callback = wait_deadline_finished(ecs, "e2e_deadline_queue")
    assert callback["state"] == "success", (callback["output"], ecs.logs())
    assert ecs.aws.faults.run_task_failures == [], "RunTask was never refused"
    assert deadline_phases(ecs, "e2e_deadline_queue") == {"started": 1, "ended": 1}
    assert len(ecs.ecs_tasks_for(callback["id"])) == 1


@pytest.mark.full
def test_callback_ecs_cannot_place_across_a_scheduler_restart_runs_once(ecs):
    """No capacity, the scheduler killed while the executor retries: the next scheduler queues it again."""
    ecs.aws.fail_next_run_tasks(1000, reason="RESOURCE:MEMORY")
    ecs.trigger("e2e_deadline_refused", "capacity-restart-1")
    wait_for("a refused RunTask", lambda: len(ecs.aws.faults.run_task_failures) < 1000, 120)
    killed = ecs.running_scheduler()
    ecs.kill(killed)
    ecs.aws.faults.run_task_failures.clear()
    ecs.scheduler(f"{killed}-after-refusals")

    callback = wait_deadline_finished(ecs, "e2e_deadline_refused", timeout=120)
    assert callback["state"] == "success", (callback["output"], ecs.logs())
    assert deadline_phases(ecs, "e2e_deadline_refused") == {"started": 1, "ended": 1}
    assert ecs.callback_runs(callback["id"]) == [0]


def test_dag_run_callbacks_run_once_on_ecs_and_read_a_variable(ecs):
    callbacks = dag_run_callbacks_run_once(ecs)
    for callback in callbacks.values():
        assert len(ecs.ecs_tasks_for(callback["id"])) == 1, callback


@pytest.mark.full
def test_callback_larger_than_ecs_overrides_allow_runs_once(ecs):
    """10 kB of callback kwargs: as JSON the workload does not fit the 8192 characters of ECS overrides."""
    ecs.trigger("e2e_deadline_big", "big-1")

    callback = wait_deadline_finished(ecs, "e2e_deadline_big")
    assert callback["state"] == "success", (callback["output"], ecs.logs())
    assert deadline_phases(ecs, "e2e_deadline_big") == {"started": 1, "ended": 1}
    (task,) = ecs.ecs_tasks_for_run("e2e_deadline_big")
    assert overrides_length(task.overrides) <= OVERRIDES_LIMIT


@pytest.mark.full
def test_callback_that_cannot_fit_ecs_overrides_fails_at_once_naming_the_limit(ecs):
    """12 kB of kwargs that do not compress: no ECS task can carry the workload."""
    ecs.trigger("e2e_deadline_huge", "huge-1")

    callback = wait_deadline_finished(ecs, "e2e_deadline_huge")
    assert callback["state"] == "failed", (callback["output"], ecs.logs())
    assert deadline_phases(ecs, "e2e_deadline_huge") == {}, "the callback cannot have run"
    assert ecs.ecs_tasks_for_run("e2e_deadline_huge") == []
    output = callback["output"] or ""
    assert f"more than the {OVERRIDES_LIMIT} ECS accepts" in output, output


@pytest.mark.full
def test_burst_of_callbacks_runs_each_once(ecs):
    callbacks = burst_runs_each_once(ecs, BURST)
    assert all(len(ecs.ecs_tasks_for(c["id"])) == 1 for c in callbacks), "a callback ran in two ECS tasks"


@pytest.mark.full
def test_callback_running_while_the_scheduler_is_stopped_is_adopted_and_reported_once(ecs):
    """SIGTERM while the callback's ECS task runs: the scheduler leaves it; the next one adopts it."""
    running_callback_outlives_its_scheduler(ecs, "stop", "e2e_deadline_slow", "scheduler-stopped-1")


def test_callback_running_while_the_scheduler_is_killed_is_adopted_and_reported_once(ecs):
    """SIGKILL while the callback's ECS task runs: the next scheduler adopts it; it ends once, successfully."""
    running_callback_outlives_its_scheduler(ecs, "kill", "e2e_deadline_watch", "scheduler-killed-1")
