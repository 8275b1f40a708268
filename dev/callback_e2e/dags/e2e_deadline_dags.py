"""DAGs with Deadline Alerts whose SyncCallbacks run on the executor, for the end-to-end tests.

The only task of each waits in a pool without slots, so every run is still going when its
deadline (one second after it was queued) passes, and no task competes with the callbacks.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from airflow.sdk import DAG, DeadlineAlert, DeadlineReference, SyncCallback, task
from e2e_callbacks import deadline

BLOCKED_POOL = "e2e_blocked"


@task(pool=BLOCKED_POOL)
def never_runs():
    return None


def _deadline_dag(dag_id: str, *, queue: str | None = None, **callback_kwargs) -> None:
    # ``queue`` only where the task SDK has it (task-sdk 0012), so that this file still parses on
    # the stable SDK; a DAG that needs it is then left out.
    options = {"queue": queue} if queue else {}
    try:
        callback = SyncCallback(deadline, kwargs={"name": dag_id, **callback_kwargs}, **options)
    except TypeError:
        return
    with DAG(
        dag_id,
        schedule=None,
        max_active_runs=500,
        deadline=DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(seconds=1), callback=callback
        ),
    ):
        never_runs()


_deadline_dag("e2e_deadline_ok")
_deadline_dag("e2e_deadline_fails", fail=True)
_deadline_dag("e2e_deadline_slow", seconds=25)
_deadline_dag("e2e_deadline_watch", seconds=15)
_deadline_dag("e2e_deadline_burst")
# 10 kB of kwargs: the workload an executor stores for the callback is larger than 10 kB.
_deadline_dag("e2e_deadline_big", payload="x" * 10_240)
# 12 kB of kwargs that do not compress (a SHA-256 chain in hex): no packing makes them fit 8 kB.
_deadline_dag(
    "e2e_deadline_huge",
    payload="".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(12_288 // 64)),
)
# Past AWS Batch's 30 KiB SubmitJob payload: 40 kB that compress well, and 64 kB of hex that do not
# compress enough (a hex SHA-256 chain compresses to about half, then base64 adds a third).
_deadline_dag("e2e_deadline_big_40k", payload="x" * 40_960)
_deadline_dag(
    "e2e_deadline_huge_64k",
    payload="".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(65_536 // 64)),
)
_deadline_dag("e2e_deadline_queue")
# Its submission is refused for a while (the executor holds it across a scheduler restart).
_deadline_dag("e2e_deadline_refused")
# Names a queue of its own: the default one, where tasks go, not the configured callback queue.
_deadline_dag("e2e_deadline_own_queue", queue="default")
_deadline_dag("e2e_deadline_killed", seconds=25)
# Still running when the next scheduler finds its dead scheduler's callbacks.
_deadline_dag("e2e_deadline_long", seconds=60)
