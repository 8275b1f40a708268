"""Callables of the end-to-end DAGs: each appends one JSON line to the markers file."""

from __future__ import annotations

import json
import os


def _write(name, context, extra=None):
    dag_run = context.get("dag_run")
    line = {
        "name": name,
        "dag_id": context["dag"].dag_id,
        "run_id": context.get("run_id") or (dag_run.run_id if dag_run else None),
        "reason": context.get("reason"),
        "keys": sorted(context),
        "pid": os.getpid(),
    }
    if extra is not None:
        line["extra"] = extra
    with open(os.environ["CALLBACK_E2E_MARKERS"], "a") as f:
        f.write(json.dumps(line) + "\n")


def record(name):
    def callback(context):
        _write(name, context)

    callback.__name__ = callback.__qualname__ = f"record_{name}"
    return callback


def boom(context):
    raise ValueError("boom on purpose")


def reads_the_api(context):
    """Read what DAG callbacks read through the API (XCom, a Variable, the previous run); write a Variable."""
    from airflow.sdk import Variable

    ti = context["ti"]
    previous = ti.get_previous_dagrun(state="success")
    seen = {
        "xcom": ti.xcom_pull(task_ids="pushes"),
        "variable": Variable.get("e2e_in"),
        "previous_run": previous.run_id if previous else None,
    }
    Variable.set(f"e2e_out_{context['run_id']}", json.dumps(seen))
    _write("api", context, extra=seen)


def deadline(name, seconds=0.0, fail=False, context=None, **kwargs):
    """A Deadline Alert's SyncCallback: one line when it starts, one when it ends (unless it raises)."""
    import time

    dag_run = (context or {}).get("dag_run") or {}
    if isinstance(dag_run, dict):  # the serialized run a Deadline Alert's context holds names it dag_run_id
        run_id = dag_run.get("run_id") or dag_run.get("dag_run_id")
    else:
        run_id = getattr(dag_run, "run_id", None)

    def line(phase):
        extra = {"phase": phase, "time": time.time()}
        row = {"name": name, "dag_id": name, "run_id": run_id, "keys": [], "pid": os.getpid(), "extra": extra}
        with open(os.environ["CALLBACK_E2E_MARKERS"], "a") as f:
            f.write(json.dumps(row) + "\n")

    line("started")
    time.sleep(float(seconds))
    if fail:
        raise ValueError(f"deadline callback {name} fails on purpose")
    line("ended")


def record_task(name):
    """A task callback that also records the task instance it was given (task, try, state) and the reason."""

    def callback(context):
        ti = context["ti"]
        state = getattr(ti.state, "value", ti.state)
        _write(
            name,
            context,
            extra={"task_id": ti.task_id, "try_number": ti.try_number, "state": state},
        )

    callback.__name__ = callback.__qualname__ = f"record_task_{name}"
    return callback


def started_then_sleeps(**context):
    """A task that writes its own and its supervisor's pid, then runs until it is killed."""
    import time

    ti = context["ti"]
    extra = {"ppid": os.getppid(), "try_number": ti.try_number}
    _write("task_started", context, extra=extra)
    time.sleep(600)


# The secret canary test (dev/callback_e2e/canary.py): the names of its Variable and Connection.
CANARY_VARIABLE = "e2e_canary_secret"
CANARY_CONNECTION = "e2e_canary_conn"


def print_canaries(where, api_token=None):
    """Read the canary Variable and Connection, then print and log them (and ``api_token``) as user code may."""
    import logging
    import sys

    from airflow.sdk import Connection, Variable

    variable = Variable.get(CANARY_VARIABLE)
    password = Connection.get(CANARY_CONNECTION).password
    seen = f"variable={variable} password={password} api_token={api_token}"
    print(f"{where} prints {seen}", flush=True)
    print(f"{where} prints to stderr {seen}", file=sys.stderr, flush=True)
    logging.getLogger("e2e.canary").warning("%s logs %s", where, seen)


def canary_deadline(name, api_token=None, context=None, **kwargs):
    """A Deadline Alert's callable that prints its secrets, then fails."""
    print_canaries(f"deadline {name}", api_token)
    raise ValueError(f"deadline callback {name} fails on purpose")


def canary_dag_failure(context):
    """A DAG's on_failure_callback that prints its secrets, then fails."""
    print_canaries(f"dag {context['dag'].dag_id}")
    raise ValueError("the canary DAG callback fails on purpose")
