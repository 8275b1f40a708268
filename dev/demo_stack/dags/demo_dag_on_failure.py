"""Demo Dag: the run fails, so its Dag-level ``on_failure_callback`` runs.

The demo sets ``[callbacks] runner = executor``, so the scheduler stores the
callback as an executor callback and LocalExecutor runs it in a supervised process, with a
state, an output and a log of its own (without that setting it would run inside the Dag
Processor).
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from demo_callbacks import on_dag_failure

with DAG(
    dag_id="demo_dag_on_failure",
    schedule=None,
    catchup=False,
    tags=["executor-callbacks-demo"],
    on_failure_callback=on_dag_failure,
    default_args={"retries": 0},
):

    @task
    def always_fails() -> None:
        raise RuntimeError("intentional failure: this run exists to trigger on_failure_callback")

    always_fails()
