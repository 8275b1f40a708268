"""The Dag files the bench writes into each stack's dags folder."""

from __future__ import annotations

from pathlib import Path

PROBE_ENV_VAR = "AIRFLOW_BENCH_PROBE_FILE"
PROBE_MODULE = "bench_probe"
FAIL_DAG_ID = "bench_fail"
DEADLINE_DAG_ID = "bench_deadline"
HOLD_DAG_ID = "bench_hold"
BLOCKED_POOL = "bench_blocked"
FILLER_PREFIX = "bench_filler_"

PROBE_SOURCE = '''\
"""Timing probe: appends one JSON line per call to $AIRFLOW_BENCH_PROBE_FILE (not a Dag file)."""

from __future__ import annotations

import json
import os
import time


def _run_id(context):
    dag_run = None
    if context is not None:
        dag_run = context.get("dag_run") if hasattr(context, "get") else None
    if isinstance(dag_run, dict):
        return dag_run.get("dag_id"), dag_run.get("run_id") or dag_run.get("dag_run_id")
    return getattr(dag_run, "dag_id", None), getattr(dag_run, "run_id", None)


def _record(kind, context):
    started = time.time()
    dag_id, run_id = _run_id(context)
    line = {"kind": kind, "dag_id": dag_id, "run_id": run_id, "started": started, "pid": os.getpid()}
    line["ended"] = time.time()
    with open(os.environ["AIRFLOW_BENCH_PROBE_FILE"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\\n")


def on_failure(context):
    """Dag-level on_failure_callback."""
    _record("dag", context)


def on_deadline(context=None, **kwargs):
    """SyncCallback of the Deadline Alert."""
    _record("deadline", context)
'''

# The runs fail by dagrun_timeout on their first scheduling pass: no task ever runs (the
# only task sits in a pool with no slots), so neither path competes with task processes.
FAIL_DAG_SOURCE = f'''\
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task
from {PROBE_MODULE} import on_failure

with DAG(
    dag_id="{FAIL_DAG_ID}",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=100000,
    dagrun_timeout=timedelta(milliseconds=1),
    on_failure_callback=on_failure,
):

    @task(pool="{BLOCKED_POOL}")
    def never_runs():
        pass

    never_runs()
'''

DEADLINE_DAG_SOURCE = f'''\
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, DeadlineAlert, DeadlineReference, SyncCallback, task
from {PROBE_MODULE} import on_deadline

with DAG(
    dag_id="{DEADLINE_DAG_ID}",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=100000,
    dagrun_timeout=timedelta(milliseconds=1),
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(milliseconds=1),
        callback=SyncCallback(on_deadline),
    ),
):

    @task(pool="{BLOCKED_POOL}")
    def never_runs():
        pass

    never_runs()
'''

# The pending window: one run of this Dag occupies every executor slot (``tasks`` tasks in
# the default pool, which has enough slots) for as long as the bench needs.  Each task waits
# until ``dag_run.conf["seconds"]`` have passed or the file ``dag_run.conf["stop_file"]``
# exists, so the bench can end them at once instead of leaving them for the teardown.
# No dagrun_timeout, no retries: nothing ends a hold run but the bench.
HOLD_DAG_SOURCE = """\
from __future__ import annotations

import os
import time
from datetime import datetime

from airflow.sdk import DAG, get_current_context, task

with DAG(
    dag_id="{dag_id}",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    max_active_tasks={tasks},
):

    @task(retries=0)
    def hold():
        conf = get_current_context()["dag_run"].conf or {{}}
        end = time.monotonic() + float(conf.get("seconds", {default_seconds}))
        stop_file = conf.get("stop_file")
        while time.monotonic() < end and not (stop_file and os.path.exists(stop_file)):
            time.sleep(0.5)

    for index in range({tasks}):
        hold.override(task_id=f"hold_{{index:02d}}")()
"""
HOLD_DEFAULT_SECONDS = 600

FILLER_SOURCE = """\
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task
{callback}
with DAG(dag_id="{dag_id}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False{dag_kwargs}):

    @task
    def extract():
        return 1

    @task
    def transform(value):
        return value + 1

    @task
    def load(value):
        print(value)

    load(transform(extract()))
"""


NOOP_FAILURE_CALLBACK = """

def on_failure(context):
    return None

"""


def small_dag_source(dag_id: str, *, on_failure_callback: bool = False) -> str:
    """A small Dag (three TaskFlow tasks), with a no-op ``on_failure_callback`` if asked."""
    return FILLER_SOURCE.format(
        dag_id=dag_id,
        callback=NOOP_FAILURE_CALLBACK if on_failure_callback else "",
        dag_kwargs=", on_failure_callback=on_failure" if on_failure_callback else "",
    )


def hold_dag_source(tasks: int) -> str:
    """The source of the hold Dag with ``tasks`` parallel tasks."""
    if tasks <= 0:
        raise ValueError(f"the hold Dag needs at least one task, got {tasks}")
    return HOLD_DAG_SOURCE.format(dag_id=HOLD_DAG_ID, tasks=tasks, default_seconds=HOLD_DEFAULT_SECONDS)


def write_dags(folder: Path, fillers: int, deadline: bool, hold_tasks: int) -> list[str]:
    """Write the probe module, the bench Dags and ``fillers`` filler Dags; return the Dag ids.

    ``hold_tasks`` is the number of tasks of the hold Dag (the executor's parallelism).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PROBE_MODULE}.py").write_text(PROBE_SOURCE, encoding="utf-8")
    (folder / ".airflowignore").write_text(f"{PROBE_MODULE}.py\n", encoding="utf-8")
    (folder / f"{FAIL_DAG_ID}.py").write_text(FAIL_DAG_SOURCE, encoding="utf-8")
    (folder / f"{HOLD_DAG_ID}.py").write_text(hold_dag_source(hold_tasks), encoding="utf-8")
    dag_ids = [FAIL_DAG_ID, HOLD_DAG_ID]
    if deadline:
        (folder / f"{DEADLINE_DAG_ID}.py").write_text(DEADLINE_DAG_SOURCE, encoding="utf-8")
        dag_ids.append(DEADLINE_DAG_ID)
    for index in range(fillers):
        dag_id = f"{FILLER_PREFIX}{index:03d}"
        (folder / f"{dag_id}.py").write_text(small_dag_source(dag_id), encoding="utf-8")
        dag_ids.append(dag_id)
    return dag_ids
