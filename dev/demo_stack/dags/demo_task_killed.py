"""Demo Dag: its task's process is killed mid-run, so the task's ``on_failure_callback`` runs.

The task SIGKILLs its own process, as an out-of-memory kill would: it never gets to run its
failure callback itself. The scheduler fails the try as killed externally once the executor
reports that the workload ended and, with ``[callbacks] runner = executor`` (set by the demo),
stores the task's ``on_failure_callback`` as an executor callback that a worker runs, with a
state, an output and a log of its own.
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from demo_callbacks import on_task_failure

with DAG(
    dag_id="demo_task_killed",
    schedule=None,
    catchup=False,
    tags=["executor-callbacks-demo"],
    default_args={"retries": 0},
):

    @task(on_failure_callback=on_task_failure)
    def killed_mid_run() -> None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    killed_mid_run()
