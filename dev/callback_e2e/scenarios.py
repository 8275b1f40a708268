"""Scenarios that every executor's end-to-end tests check the same way, on any :class:`AirflowStack`.

Each triggers runs of the DAGs in ``dags/`` (``e2e_dags.py``, ``e2e_deadline_dags.py``), waits for
their callbacks to end, and asserts what must hold whatever the executor: each callback ended once,
with the state and reason expected, and its body ran once. What shows that a callback ran in one
place only (one ECS task, one Batch job, one Lambda invocation, one worker's log) differs per
executor; the caller checks it on the callbacks returned.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import pytest

from callback_e2e.common import FINISHED
from callback_e2e.stack import AirflowStack, StackError, wait_for

BURST_DAG = "e2e_deadline_burst"


def deadline_callbacks(stack: AirflowStack, dag_id: str) -> list[dict[str, Any]]:
    """The Deadline Alert callbacks of ``dag_id`` (their ``deadline`` callable is named after it)."""
    return [c for c in stack.executor_callbacks() if (c["data"].get("kwargs") or {}).get("name") == dag_id]


def deadline_phases(stack: AirflowStack, dag_id: str, run_ids: set[str] | None = None) -> Counter:
    """How often the ``deadline`` callable of ``dag_id`` started and ended (for ``run_ids`` only, if given)."""
    return Counter(
        m.extra["phase"]
        for m in stack.read_markers()
        if m.name == dag_id and m.extra and (run_ids is None or m.run_id in run_ids)
    )


def wait_deadline_finished(
    stack: AirflowStack, dag_id: str, timeout: float = 120, settle: float = 3
) -> dict[str, Any]:
    """
    The one Deadline Alert callback of ``dag_id`` once it is success or failed.

    Fails naming the states seen and the stack's logs when it does not end in time. After it ended,
    waits ``settle`` seconds (a second run or report of the same callback, a resubmitted container,
    would land then) and checks that it is still the only one.
    """
    try:
        wait_for(
            f"the callback of {dag_id} to finish",
            lambda: any(c["state"] in FINISHED for c in deadline_callbacks(stack, dag_id)),
            timeout,
        )
    except StackError as err:
        seen = deadline_callbacks(stack, dag_id)
        states = [(c["id"], c["state"], c["output"], stack.callback_diagnostics(c["id"])) for c in seen]
        pytest.fail(f"{err}; callbacks {states}\n{stack.logs()}")
    time.sleep(settle)
    callbacks = deadline_callbacks(stack, dag_id)
    assert len(callbacks) == 1, callbacks
    return callbacks[0]


def dag_run_callbacks_run_once(stack: AirflowStack, timeout: float = 180) -> dict[str, dict[str, Any]]:
    """
    DAG run callbacks on the executor: a failed run's two, a successful run's, one that reads the API.

    Each ran once, with the context the Dag Processor gives (the API one reads an XCom of its run and
    the Variable ``e2e_in``, which the caller created as ``from-the-test``); the failing one ended
    failed naming the callable and its error. Returns the callbacks by DAG id.
    """
    tag = uuid.uuid4().hex[:6]
    failed_run = stack.trigger("e2e_fail", f"dag-fail-{tag}")
    ok_run = stack.trigger("e2e_ok", f"dag-ok-{tag}")
    api_run = stack.trigger("e2e_api", f"dag-api-{tag}", logical_date="2026-01-01T00:00:00+00:00")
    runs = {failed_run, ok_run, api_run}

    def finished() -> dict[str, dict[str, Any]]:
        done = {
            c["data"]["dag_id"]: c
            for c in stack.dag_callbacks()
            if c["state"] in FINISHED and c["data"].get("run_id") in runs
        }
        return done if len(done) == 3 else {}

    try:
        callbacks = wait_for("three finished DAG run callbacks", finished, timeout)
    except StackError as err:
        seen = [(c["data"].get("dag_id"), c["state"]) for c in stack.dag_callbacks()]
        pytest.fail(f"{err}; {seen}\n{stack.logs()}")
    time.sleep(3)  # a second run of one would show now
    markers = [m for m in stack.read_markers() if m.run_id in runs]
    assert sorted((m.name, m.run_id) for m in markers) == sorted(
        [("fail_a", failed_run), ("fail_b", failed_run), ("ok", ok_run), ("api", api_run)]
    ), stack.logs()
    assert callbacks["e2e_ok"]["state"] == "success", callbacks["e2e_ok"]["output"]
    assert callbacks["e2e_api"]["state"] == "success", callbacks["e2e_api"]["output"]
    (api,) = [m for m in markers if m.name == "api"]
    assert api.extra == {"xcom": "pushed-value", "variable": "from-the-test", "previous_run": None}
    failure = callbacks["e2e_fail"]
    assert failure["state"] == "failed"
    assert "e2e_callbacks.boom: ValueError: boom on purpose" in (failure["output"] or ""), failure["output"]
    return callbacks


def burst_runs_each_once(stack: AirflowStack, count: int, timeout: float = 300) -> list[dict[str, Any]]:
    """
    ``count`` runs of the burst DAG at once: each one's Deadline Alert callback succeeds, and runs once.

    Returns those callbacks (earlier runs of the DAG in the same stack are left out).
    """
    tag = uuid.uuid4().hex[:6]
    run_ids = {stack.trigger(BURST_DAG, f"burst-{tag}-{i:02d}") for i in range(count)}

    def mine() -> list[dict[str, Any]]:
        ids = {
            row_id
            for row_id, run_id in stack.query("SELECT id, run_id FROM dag_run WHERE dag_id = :d", d=BURST_DAG)
            if run_id in run_ids
        }
        return [
            c for c in deadline_callbacks(stack, BURST_DAG) if int(c["data"].get("dag_run_id", -1)) in ids
        ]

    try:
        wait_for(
            f"{count} finished callbacks",
            lambda: len([c for c in mine() if c["state"] in FINISHED]) >= count,
            timeout,
            poll=1,
        )
    except StackError as err:
        pytest.fail(f"{err}; states {Counter(c['state'] for c in mine())}\n{stack.logs()}")
    time.sleep(3)  # a second run of one would show now
    callbacks = mine()
    assert len(callbacks) == count
    assert Counter(c["state"] for c in callbacks) == {"success": count}, [
        c["output"] for c in callbacks if c["state"] != "success"
    ][:3]
    assert deadline_phases(stack, BURST_DAG, run_ids) == {"started": count, "ended": count}
    return callbacks
