"""End to end: no secret a callback or task reads leaves a masked channel (see ``dev/callback_e2e/canary.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callback_e2e.canary import (
    DAG_IDS,
    Canaries,
    cloudwatch_texts,
    scan_files,
    scan_texts,
    secrets_stay_masked,
)
from callback_e2e.common import PYTHON
from callback_e2e.scenarios import start_scheduling
from callback_e2e.stack import AirflowStack

LOCAL_EXECUTOR = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__CALLBACKS__RUNNER": "executor",
}


def test_scans_name_every_place_a_canary_is_found(tmp_path):
    """The scans (no Airflow involved) report each file and text holding a canary, and nothing else."""
    canaries = Canaries.make()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "masked.log").write_text("variable=*** password=***")
    (tmp_path / "logs" / "leaky.log").write_text(f"password={canaries.password} kwarg={canaries.kwarg}")
    (tmp_path / "airflow.db").write_text(canaries.variable)  # searched by column, not as a file

    assert scan_files([tmp_path], canaries) == [f"file {tmp_path / 'logs' / 'leaky.log'}: kwarg, password"]
    assert scan_texts({"stream a": "***", "stream b": canaries.variable.encode()}, canaries) == [
        "stream b: variable"
    ]
    # A record of the workload holds the kwarg by design, never the others.
    record = f"{canaries.kwarg} {canaries.password}"
    assert scan_texts({"event": record}, canaries, allowed=["kwarg"]) == ["event: password"]
    assert len({*canaries.by_name().values()}) == 3
    # A fake's record of a workload holds the kwarg by design, never the others.
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "e.json").write_text(f"{canaries.kwarg}")
    (tmp_path / "events" / "f.json").write_text(f"{canaries.kwarg} {canaries.variable}")
    assert scan_files([tmp_path / "events"], canaries, record_dirs=[tmp_path / "events"]) == [
        f"file {tmp_path / 'events' / 'f.json'}: variable"
    ]


@pytest.mark.e2e
def test_secret_canaries_stay_masked_on_local_executor():
    canaries = Canaries.make()
    with AirflowStack(PYTHON, "sqlite", {**LOCAL_EXECUTOR, **canaries.config()}) as stack:
        start_scheduling(stack, DAG_IDS)
        secrets_stay_masked(stack, canaries)


# The same check on the other executors' stacks: slower (each starts its workers or fakes), so only
# with scripts/test --full.
all_executors = pytest.mark.full


@pytest.mark.e2e
@pytest.mark.slow
@all_executors
def test_secret_canaries_stay_masked_on_celery_executor():
    from celery_e2e import CeleryStack

    canaries = Canaries.make()
    # Task and callback output copied to the worker's stdout too: that copy is checked as well.
    config = {
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CELERY__TASK_LOGS_TO_STDOUT": "True",
        **canaries.config(),
    }
    with CeleryStack(PYTHON, "sqlite", config) as stack:
        stack.prepare()
        stack.worker("worker", ("default",))
        stack.scheduler()
        stack.wait_dags(DAG_IDS)
        secrets_stay_masked(stack, canaries, timeout=300)


@pytest.mark.e2e
@pytest.mark.slow
@all_executors
def test_secret_canaries_stay_masked_on_ecs_executor():
    from aws_e2e import EcsStack

    canaries = Canaries.make()
    with EcsStack(PYTHON, "sqlite", {"AIRFLOW__CORE__PARALLELISM": "4", **canaries.config()}) as stack:
        start_scheduling(stack, DAG_IDS)
        secrets_stay_masked(
            stack,
            canaries,
            extra_texts=lambda: cloudwatch_texts(stack.aws.client("logs")),
            # The container command carries the workload, the callback's kwargs included.
            records=lambda: {
                f"ecs task {task.id} overrides": json.dumps(task.overrides or {}, default=str)
                for task in stack.aws.ecs_tasks()
            },
            timeout=360,  # each ECS task starts a fresh interpreter: slow on a loaded machine
        )


@pytest.mark.e2e
@pytest.mark.slow
@all_executors
def test_secret_canaries_stay_masked_on_lambda_executor():
    from aws_e2e.lambda_stack import LambdaStack

    canaries = Canaries.make()
    with LambdaStack(PYTHON, "sqlite", {"AIRFLOW__CORE__PARALLELISM": "4", **canaries.config()}) as stack:
        start_scheduling(stack, DAG_IDS)
        secrets_stay_masked(
            stack,
            canaries,
            extra_texts=lambda: cloudwatch_texts(stack.aws.client("logs")),
            # The invocation event carries the workload, the callback's kwargs included.
            records=lambda: {
                f"lambda invocation {i.request_id} event": i.payload for i in list(stack.lam.invocations)
            },
            record_dirs=[stack.lam.logs_dir / "events"],  # the fake's copy of each invocation's event
            timeout=360,  # each invocation starts a fresh interpreter: slow on a loaded machine
        )
