"""Demo Dag: a Deadline Alert whose SyncCallback runs on the executor.

The deadline is a few seconds after the run is queued, and the only task sleeps far
longer, so the deadline is always missed while the run is still going.
"""

from __future__ import annotations

import time
from datetime import timedelta

from airflow.sdk import DAG, DeadlineAlert, DeadlineReference, SyncCallback, task
from demo_callbacks import on_deadline_missed

DEADLINE_SECONDS = 4
TASK_SLEEP_SECONDS = 12

with DAG(
    dag_id="demo_deadline_alert",
    schedule=None,
    catchup=False,
    tags=["executor-callbacks-demo"],
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=DEADLINE_SECONDS),
        callback=SyncCallback(on_deadline_missed, kwargs={"name": "deadline_alert"}),
    ),
):

    @task
    def slower_than_the_deadline() -> None:
        time.sleep(TASK_SLEEP_SECONDS)

    slower_than_the_deadline()
