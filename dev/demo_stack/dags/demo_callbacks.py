"""Callbacks used by the demo Dags.

This module lives in the dags folder (the Dag bundle).  The executor-run callback is
imported by its path, ``demo_callbacks.on_deadline_missed``, on the worker: the callback
supervisor puts the bundle's path on ``sys.path`` before importing it.  ``.airflowignore``
keeps the Dag Processor from parsing this file as a Dag file.

Each callback appends one JSON line to the marker file named by the
``AIRFLOW_DEMO_MARKER_FILE`` environment variable, which the demo reads to see it ran.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

MARKER_ENV_VAR = "AIRFLOW_DEMO_MARKER_FILE"


def _append_marker(name: str, dag_id: str | None, run_id: str | None, **extra: Any) -> None:
    path = os.environ.get(MARKER_ENV_VAR)
    if not path:
        raise RuntimeError(f"{MARKER_ENV_VAR} is not set; the demo cannot record that {name} ran")
    record = {
        "name": name,
        "ts": time.time(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "dag_id": dag_id,
        "run_id": run_id,
        "argv0": " ".join(sys.argv[:3]),
        **extra,
    }
    # One short write in append mode: concurrent writers do not interleave lines.
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def on_deadline_missed(name: str = "deadline_alert", context: dict | None = None) -> str:
    """SyncCallback for the Deadline Alert; run by the executor via ``supervise_callback``.

    The scheduler passes a small JSON context: ``dag_run`` (the REST representation of the
    run) and ``deadline``.
    """
    dag_run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    _append_marker(
        name,
        dag_id=dag_run.get("dag_id"),
        run_id=dag_run.get("dag_run_id") or dag_run.get("run_id"),
        deadline_time=deadline.get("deadline_time"),
    )
    print(f"demo: deadline callback {name!r} ran in pid {os.getpid()}")
    return f"{name} recorded"


def on_dag_failure(context: Any) -> None:
    """Dag-level ``on_failure_callback``; today the Dag Processor runs it."""
    dag_run = context.get("dag_run") if hasattr(context, "get") else None
    dag_id = getattr(dag_run, "dag_id", None)
    run_id = getattr(dag_run, "run_id", None)
    if isinstance(dag_run, dict):
        dag_id, run_id = dag_run.get("dag_id"), dag_run.get("run_id")
    _append_marker(
        "dag_on_failure",
        dag_id=dag_id,
        run_id=run_id,
        reason=str(context.get("reason")) if hasattr(context, "get") else None,
    )


def on_task_failure(context: Any) -> None:
    """Task-level ``on_failure_callback`` of a task killed mid-run; the executor runs it."""
    ti = context["ti"]
    _append_marker(
        "task_on_failure",
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        reason=str(context.get("reason")),
    )
