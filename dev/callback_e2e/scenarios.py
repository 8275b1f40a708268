"""Scenarios that every executor's end-to-end tests check the same way, on any :class:`AirflowStack`.

Each triggers runs of the DAGs in ``dags/`` (``e2e_dags.py``, ``e2e_deadline_dags.py``), waits for
their callbacks to end, and asserts what must hold whatever the executor: each callback ended once,
with the state and reason expected, and its body ran once. What shows that a callback ran in one
place only (one ECS task, one Batch job, one Lambda invocation, one worker's log) differs per
executor: the scenarios that check it ask the stack's :meth:`~AirflowStack.callback_runs`; the
others return the callbacks for the caller to check.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import pytest

from callback_e2e.common import FINISHED, GENERIC_FAILURE, SUCCESS_LOG
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


def deadline_succeeds_once(stack: AirflowStack, run_id: str) -> dict[str, Any]:
    """A run of ``e2e_deadline_ok``: its callback succeeds, ran once in one place, and logged its success."""
    stack.trigger("e2e_deadline_ok", run_id)
    callback = wait_deadline_finished(stack, "e2e_deadline_ok")
    assert callback["state"] == "success", (callback["output"], stack.logs())
    assert deadline_phases(stack, "e2e_deadline_ok") == {"started": 1, "ended": 1}
    assert stack.callback_runs(callback["id"]) == [0]
    assert SUCCESS_LOG in stack.callback_log(callback["id"])
    return callback


def failing_deadline_runs_once(stack: AirflowStack, run_id: str, reason: str) -> dict[str, Any]:
    """
    A run of ``e2e_deadline_fails``: its callback ends failed with ``reason`` in its output, after its
    body ran once, in one place (a failing callback is not an infrastructure failure to resubmit).
    """
    stack.trigger("e2e_deadline_fails", run_id)
    callback = wait_deadline_finished(stack, "e2e_deadline_fails")
    assert callback["state"] == "failed", (callback["output"], stack.logs())
    assert deadline_phases(stack, "e2e_deadline_fails") == {"started": 1}, "the body ran twice"
    runs = stack.callback_runs(callback["id"])
    assert len(runs) == 1, f"the failed callback was resubmitted: it ran {len(runs)} times"
    output = callback["output"] or ""
    assert output != GENERIC_FAILURE, f"no reason in the callback's output: {output!r}"
    assert reason in output, output
    return callback


def running_callback_outlives_its_scheduler(
    stack: AirflowStack, how: str, dag_id: str, run_id: str, *, adopted: bool = True
) -> dict[str, Any]:
    """
    The scheduler stopped (``how="stop"``: SIGTERM) or killed (``"kill"``) while the callback of
    ``dag_id`` runs; the next scheduler takes it over and it ends once, successfully, having run once.

    A stopped scheduler leaves the callback running and says so, without waiting for it to end;
    ``adopted`` also checks that the next scheduler logs the adoption (the executors that adopt).
    """
    if how not in ("stop", "kill"):
        raise ValueError(f"how must be 'stop' or 'kill', not {how!r}")
    stack.trigger(dag_id, run_id)
    wait_for("the callback to start", lambda: deadline_phases(stack, dag_id)["started"], 120)
    old = stack.running_scheduler()
    if how == "stop":
        began = time.monotonic()
        stack.stop(old)
        assert time.monotonic() - began < 20, "the scheduler waited for the callback"
        assert "Leaving 1 running callbacks to the next scheduler" in stack.logs_of(old)
        assert deadline_phases(stack, dag_id)["ended"] == 0, "the scheduler waited for the callback"
    else:
        stack.kill(old)
    new = stack.scheduler(f"{old}-after-{how}").name

    callback = wait_deadline_finished(stack, dag_id, timeout=120)
    assert callback["state"] == "success", (callback["output"], stack.logs())
    assert deadline_phases(stack, dag_id) == {"started": 1, "ended": 1}
    assert len(stack.callback_runs(callback["id"])) == 1
    if adopted:
        assert "Adopted the following 1 callbacks" in stack.logs_of(new)
    return callback


def start_scheduling(stack: AirflowStack, dag_ids: list[str]) -> None:
    """:meth:`~AirflowStack.prepare` the stack, start a scheduler and wait until ``dag_ids`` are parsed."""
    stack.prepare()
    stack.scheduler()
    stack.wait_dags(dag_ids)


# What task SDK 1.3.2's supervise_callback reports of a failed callback: only its process's exit code.
STABLE_FAILURE_REASON = "Callback subprocess exited with code 1"


def stable_core_deadline_callbacks(stack: AirflowStack) -> None:
    """On the stable core (3.3.2), a Deadline Alert callback succeeds once and a failing one fails once."""
    start_scheduling(stack, ["e2e_deadline_ok", "e2e_deadline_fails"])
    deadline_succeeds_once(stack, "stable-ok-1")
    failing_deadline_runs_once(stack, "stable-fails-1", STABLE_FAILURE_REASON)
