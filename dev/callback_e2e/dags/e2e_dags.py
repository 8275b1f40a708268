"""DAGs whose runs end with callbacks, for the end-to-end tests."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, task
from e2e_callbacks import boom, reads_the_api, record, record_task, started_then_sleeps


@task
def fails():
    raise RuntimeError("this run exists to fail")


@task
def succeeds():
    return None


with DAG(
    "e2e_fail",
    schedule=None,
    on_failure_callback=[record("fail_a"), boom, record("fail_b")],
    default_args={"retries": 0},
    max_active_runs=500,
):
    fails()

with DAG("e2e_ok", schedule=None, on_success_callback=record("ok"), max_active_runs=500):
    succeeds()

with DAG(
    "e2e_burst",
    schedule=None,
    on_failure_callback=record("burst"),
    default_args={"retries": 0},
    max_active_runs=500,
):
    fails()


@task
def sleeps():
    import time

    time.sleep(600)


# Holds the only executor slot of a scheduler with parallelism 1.
with DAG("e2e_sleep", schedule=None, max_active_runs=1):
    sleeps()

# Times out while its task waits for a slot: its on_failure_callback is created, not queued.
with DAG(
    "e2e_timeout",
    schedule=None,
    on_failure_callback=record("timeout"),
    dagrun_timeout=datetime.timedelta(seconds=2),
):
    succeeds()


@task
def pushes():
    return "pushed-value"


# Its callback reads XCom, a Variable and the previous run through the API, and writes a Variable.
with DAG("e2e_api", schedule=None, on_success_callback=reads_the_api, max_active_runs=1):
    pushes()


# Runs until the test kills it and its supervisor (a worker lost): the scheduler ends the try when
# its heartbeats stop, first with a retry left, then for good.
with DAG("e2e_task_lost", schedule=None, max_active_runs=1):
    from airflow.providers.standard.operators.python import PythonOperator

    PythonOperator(
        task_id="gets_lost",
        python_callable=started_then_sleeps,
        on_failure_callback=record_task("task_failure"),
        on_retry_callback=record_task("task_retry"),
        email="ops@example.com",
        email_on_failure=True,
        email_on_retry=True,
        retries=1,
        retry_delay=datetime.timedelta(seconds=1),
    )

# Runs until the test SIGKILLs its task process alone, as an out-of-memory kill does.
with DAG("e2e_task_oom", schedule=None, max_active_runs=1):
    from airflow.providers.standard.operators.python import PythonOperator

    PythonOperator(
        task_id="gets_killed",
        python_callable=started_then_sleeps,
        on_failure_callback=record_task("oom_failure"),
        on_retry_callback=record_task("oom_retry"),
        email="ops@example.com",
        email_on_failure=True,
        retries=0,
    )
