"""DAGs of the secret canary test (``dev/callback_e2e/canary.py``), defined only in its stacks.

The Deadline Alert's kwargs hold a canary the test passes in the environment, so that the file
itself (copied into every stack's AIRFLOW_HOME) never holds one.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, DeadlineAlert, DeadlineReference, SyncCallback, task
from e2e_callbacks import canary_dag_failure, canary_deadline, print_canaries

KWARG_CANARY = os.environ.get("CANARY_E2E_KWARG")
BLOCKED_POOL = "e2e_blocked"


@task(pool=BLOCKED_POOL)
def never_runs():
    return None


@task
def prints_and_fails():
    print_canaries("task")
    raise RuntimeError("the canary task fails on purpose")


if KWARG_CANARY:
    with DAG(
        "e2e_canary_deadline",
        schedule=None,
        deadline=DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=timedelta(seconds=1),
            callback=SyncCallback(
                canary_deadline, kwargs={"name": "e2e_canary_deadline", "api_token": KWARG_CANARY}
            ),
        ),
    ):
        never_runs()

    with DAG(
        "e2e_canary_dag",
        schedule=None,
        on_failure_callback=canary_dag_failure,
        default_args={"retries": 0},
    ):
        prints_and_fails()
