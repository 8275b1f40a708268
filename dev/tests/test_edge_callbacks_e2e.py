"""End to end: executor callbacks on EdgeExecutor, run by real ``airflow edge worker`` processes.

Each stack (``dev/edge_e2e``) runs api-server (with the edge worker API), scheduler, dag-processor
and edge workers from the patched tree's .venv, each worker with its own hostname, queues and log
folder, the api-server with a log folder of its own (where pushed worker logs land). The DAGs are
``dev/callback_e2e/dags/e2e_deadline_dags.py``: a Deadline Alert one second after the run is
queued, whose ``deadline`` callable writes a ``started`` and an ``ended`` marker, so a callback
that ran twice (or not to its end) shows.

Two stacks are shared by the tests that fit together: SQLite (one worker on ``default``) and
PostgreSQL (``[edge] callback_queue = other``, one worker on ``default`` and one on ``other``,
short heartbeats and timeouts so that dead components are noticed within seconds). On the
PostgreSQL stack the tests that kill a component come after the ones that do not, and the 10 kB
payload comes last.

``EDGE_E2E_CONFIG`` (a JSON object of ``AIRFLOW__*`` variables) adds configuration to every stack,
for experiments such as ``{"AIRFLOW__EDGE__PUSH_LOGS": "False"}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callback_e2e.common import BLOCKED_POOL, GENERIC_FAILURE, OTHER_QUEUE, PYTHON, SUCCESS_LOG
from callback_e2e.common import FAST_RECOVERY as COMMON_FAST_RECOVERY
from callback_e2e.scenarios import deadline_callbacks, deadline_phases, wait_deadline_finished
from callback_e2e.stack import wait_for
from edge_e2e import EdgeStack

# A dead edge worker is noticed within seconds too.
FAST_RECOVERY = {
    **COMMON_FAST_RECOVERY,
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "10",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
}

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _callbacks(stack: EdgeStack, dag_id: str) -> list[dict]:
    return deadline_callbacks(stack, dag_id)


def _phases(stack: EdgeStack, dag_id: str) -> Counter:
    return deadline_phases(stack, dag_id)


def _wait_finished(stack: EdgeStack, dag_id: str, timeout: float = 60) -> dict:
    return wait_deadline_finished(stack, dag_id, timeout, settle=2)


@contextmanager
def edge_stack(backend: str = "sqlite", config: Mapping[str, str] | None = None) -> Iterator[EdgeStack]:
    """An EdgeExecutor stack, api-server healthy; workers and a scheduler are the caller's to start."""
    extra = json.loads(os.environ.get("EDGE_E2E_CONFIG") or "{}")
    config = {"AIRFLOW__CORE__PARALLELISM": "8", **(config or {}), **extra}
    with EdgeStack(PYTHON, backend, config) as stack:
        stack.wait_healthy()
        stack.api.request("POST", "/api/v2/pools", {"name": BLOCKED_POOL, "slots": 0})
        yield stack


def _wait_started(stack: EdgeStack, dag_id: str, timeout: float = 60) -> None:
    wait_for(f"the callback of {dag_id} to start", lambda: _phases(stack, dag_id)["started"], timeout)


def _ensure_worker(stack: EdgeStack, name: str, queues: tuple[str, ...]) -> None:
    if name not in stack.procs or not stack.procs[name].alive():
        stack.worker(name, queues)


def _assert_reason(callback: dict, mentions: str | None = None) -> None:
    """The callback's output says why it failed: not empty, not the scheduler's generic fallback."""
    output = callback["output"] or ""
    assert output and output != GENERIC_FAILURE, f"no reason in the callback's output: {output!r}"
    if mentions:
        assert mentions in output, f"the output does not name the failing callable: {output!r}"


def _assert_log_everywhere(stack: EdgeStack, callback: dict, text: str) -> str:
    """
    The callback's log: on the one worker that ran it (returned), pushed to the api-server's log
    folder and to the ``edge_logs`` table.
    """
    holders = [
        w for w in stack.workers if stack.callback_log_files(callback["id"], stack.worker_log_folder(w))
    ]
    assert len(holders) == 1, f"workers with a log of the callback: {holders}\n{stack.logs()}"
    on_worker = stack.callback_log(callback["id"], stack.worker_log_folder(holders[0]))
    assert text in on_worker, f"log on worker {holders[0]}: {on_worker[-2000:]!r}"
    pushed = stack.edge_log(callback["id"])
    assert text in pushed, f"edge_logs of the callback: {pushed[-2000:]!r}\n{stack.logs()}"
    on_api = stack.callback_log(callback["id"], stack.api_log_folder)
    assert text in on_api, f"log in the api-server's log folder: {on_api[-2000:]!r}"
    shown = _log_through_the_api(stack, callback)
    assert text in shown, f"the callback's log as the api-server serves it: {shown[-2000:]!r}"
    return holders[0]


def _log_through_the_api(stack: EdgeStack, callback: dict) -> str:
    """The log of a Deadline Alert callback as the UI reads it from the api-server."""
    dag_id = callback["data"]["dag_id"]
    ((run_id,),) = stack.query(
        "SELECT run_id FROM dag_run WHERE id = :id", id=int(callback["data"]["dag_run_id"])
    )
    path = f"/ui/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/callbacks/{callback['id']}/logs"
    content = stack.api.request("GET", path)["content"]
    return "\n".join(
        str(line.get("event", line)) if isinstance(line, dict) else str(line) for line in content
    )


def _check_succeeds_once_with_its_log(stack: EdgeStack) -> None:
    stack.trigger("e2e_deadline_ok", "ok-1")

    callback = _wait_finished(stack, "e2e_deadline_ok")
    assert callback["state"] == "success", (callback["output"], stack.logs())
    assert _phases(stack, "e2e_deadline_ok") == {"started": 1, "ended": 1}
    _assert_log_everywhere(stack, callback, SUCCESS_LOG)


def _check_fails_with_reason_and_log(stack: EdgeStack) -> None:
    stack.trigger("e2e_deadline_fails", "fails-1")

    callback = _wait_finished(stack, "e2e_deadline_fails")
    assert callback["state"] == "failed", (callback["output"], stack.logs())
    _assert_reason(callback, "deadline")
    assert _phases(stack, "e2e_deadline_fails") == {"started": 1}, "run once, not retried"
    _assert_log_everywhere(stack, callback, "fails on purpose")


# ---------------------------------------------------------------------------------------------- SQLite


@pytest.fixture(scope="module")
def sqlite_edge():
    with edge_stack("sqlite") as stack:
        stack.worker("worker", ("default",))
        stack.scheduler()
        stack.wait_dags(["e2e_deadline_ok", "e2e_deadline_fails"])
        yield stack


@pytest.mark.full
def test_sqlite_deadline_callback_succeeds_once_with_its_log(sqlite_edge):
    _check_succeeds_once_with_its_log(sqlite_edge)


@pytest.mark.full
def test_sqlite_failing_callback_ends_failed_with_reason_and_log(sqlite_edge):
    _check_fails_with_reason_and_log(sqlite_edge)


# ------------------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def pg_edge():
    config = {**FAST_RECOVERY, "AIRFLOW__EDGE__CALLBACK_QUEUE": OTHER_QUEUE}
    with edge_stack("postgres", config) as stack:
        stack.worker("worker", ("default",))
        stack.worker(OTHER_QUEUE, (OTHER_QUEUE,))
        stack.scheduler()
        stack.wait_dags(
            [
                "e2e_deadline_ok",
                "e2e_deadline_fails",
                "e2e_deadline_queue",
                "e2e_deadline_slow",
                "e2e_deadline_killed",
                "e2e_deadline_big",
            ]
        )
        yield stack


@pytest.fixture
def pg(pg_edge):
    """The PostgreSQL stack with a scheduler and both workers running."""
    pg_edge.ensure_scheduler()
    _ensure_worker(pg_edge, "worker", ("default",))
    _ensure_worker(pg_edge, OTHER_QUEUE, (OTHER_QUEUE,))
    return pg_edge


def test_postgres_deadline_callback_succeeds_once_with_its_log(pg):
    _check_succeeds_once_with_its_log(pg)


def test_postgres_failing_callback_ends_failed_with_reason_and_log(pg):
    _check_fails_with_reason_and_log(pg)


@pytest.mark.full
def test_callback_for_queue_other_runs_only_on_the_worker_of_that_queue(pg):
    pg.trigger("e2e_deadline_queue", "queue-1")
    _wait_started(pg, "e2e_deadline_queue")

    (callback,) = _callbacks(pg, "e2e_deadline_queue")
    jobs = pg.edge_jobs(callback["id"])
    assert [(j["queue"], j["edge_worker"]) for j in jobs] == [(OTHER_QUEUE, pg.hostname(OTHER_QUEUE))], jobs
    callback = _wait_finished(pg, "e2e_deadline_queue")
    assert callback["state"] == "success", (callback["output"], pg.logs())
    assert _phases(pg, "e2e_deadline_queue") == {"started": 1, "ended": 1}
    assert pg.callback_log_files(callback["id"], pg.worker_log_folder(OTHER_QUEUE))
    assert not pg.callback_log_files(callback["id"], pg.worker_log_folder("worker")), "ran on `default`"


def test_callback_running_while_the_scheduler_is_killed_succeeds_once(pg):
    pg.trigger("e2e_deadline_slow", "scheduler-killed-1")
    _wait_started(pg, "e2e_deadline_slow")
    (old,) = [name for name, proc in pg.procs.items() if name.startswith("scheduler") and proc.alive()]

    pg.kill(old)
    pg.scheduler(f"{old}-after-kill")

    callback = _wait_finished(pg, "e2e_deadline_slow", timeout=120)
    assert callback["state"] == "success", (callback["output"], pg.logs())
    assert _phases(pg, "e2e_deadline_slow") == {"started": 1, "ended": 1}
    assert len(pg.edge_jobs(callback["id"])) <= 1
    _assert_log_everywhere(pg, callback, SUCCESS_LOG)


def test_callback_of_a_killed_worker_ends_failed_with_a_reason(pg):
    pg.trigger("e2e_deadline_killed", "worker-killed-1")
    _wait_started(pg, "e2e_deadline_killed")
    (callback,) = _callbacks(pg, "e2e_deadline_killed")
    (job,) = pg.edge_jobs(callback["id"])
    (worker,) = [name for name in pg.workers if pg.hostname(name) == job["edge_worker"]]

    pg.kill(worker)  # the worker's process group and session: its callback process dies too

    callback = _wait_finished(pg, "e2e_deadline_killed", timeout=90)
    assert callback["state"] == "failed", (callback["output"], pg.logs())
    _assert_reason(callback)
    # A new worker on the queue does not run it again.
    pg.worker(worker, pg.workers[worker])
    time.sleep(5)
    assert _phases(pg, "e2e_deadline_killed") == {"started": 1}
    assert _callbacks(pg, "e2e_deadline_killed")[0]["state"] == "failed"


@pytest.mark.full
def test_callback_with_a_10kb_payload_succeeds_on_postgres(pg):
    pg.trigger("e2e_deadline_big", "big-1")

    callback = _wait_finished(pg, "e2e_deadline_big")
    assert len(callback["data"]["kwargs"]["payload"]) == 10_240
    assert callback["state"] == "success", (callback["output"], pg.logs())
    assert _phases(pg, "e2e_deadline_big") == {"started": 1, "ended": 1}
    (job,) = pg.edge_jobs(callback["id"])
    assert job["command_length"] > 10_240
