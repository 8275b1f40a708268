"""Callables of the end-to-end DAGs: each appends one JSON line to the markers file."""

from __future__ import annotations

import json
import os


def record(name):
    def callback(context):
        dag_run = context.get("dag_run")
        line = {
            "name": name,
            "dag_id": context["dag"].dag_id,
            "run_id": context.get("run_id") or (dag_run.run_id if dag_run else None),
            "reason": context.get("reason"),
            "keys": sorted(context),
            "pid": os.getpid(),
        }
        with open(os.environ["CALLBACK_E2E_MARKERS"], "a") as f:
            f.write(json.dumps(line) + "\n")

    callback.__name__ = callback.__qualname__ = f"record_{name}"
    return callback


def boom(context):
    raise ValueError("boom on purpose")
