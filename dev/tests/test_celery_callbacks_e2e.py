"""End to end: executor callbacks on CeleryExecutor, run by real ``airflow celery worker`` processes.

Each stack (``dev/celery_e2e``) runs api-server, scheduler, dag-processor and Celery workers from
the patched tree's .venv, with the machine's Redis as broker (a Redis database of its own per
stack). The Deadline Alert DAGs are ``dev/callback_e2e/dags/e2e_deadline_dags.py`` (a ``deadline``
callable that writes a ``started`` and an ``ended`` marker, so a callback that ran twice, or not to
its end, shows); the DAG run callbacks are those of ``e2e_dags.py``, run on the executor
(``[callbacks] runner = executor``).

One PostgreSQL stack (result backend in the metadata database) is shared by most tests:
``[celery] callback_queue = other``, a worker on ``default`` (tasks) and one on ``other``
(callbacks), short heartbeats so that a killed scheduler is noticed within seconds. The test
that stops and kills the scheduler comes after the ones that do not. A SQLite stack with the
Redis result backend runs one smoke test, and one on the stable core (3.3.2, ``.venv-stable``)
success and failure once, first, before the PostgreSQL stack starts (two stacks at once on a
2-core machine take twice as long).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callback_e2e.common import (
    FAST_RECOVERY,
    GENERIC_FAILURE,
    OTHER_QUEUE,
    PYTHON,
    STABLE_PYTHON,
    SUCCESS_LOG,
)
from callback_e2e.scenarios import (
    burst_runs_each_once,
    dag_run_callbacks_run_once,
    deadline_callbacks,
    deadline_phases,
    wait_deadline_finished,
)
from callback_e2e.stack import wait_for
from celery_e2e import CeleryStack

# 20 in CI (more than the 4 worker slots); CELERY_E2E_BURST=50 for the 50.
BURST = int(os.environ.get("CELERY_E2E_BURST", "20"))
DAGS = [
    "e2e_deadline_ok",
    "e2e_deadline_fails",
    "e2e_deadline_queue",
    "e2e_deadline_own_queue",
    "e2e_deadline_watch",
    "e2e_deadline_slow",
    "e2e_deadline_burst",
    "e2e_deadline_killed",
    "e2e_deadline_big_40k",
    "e2e_fail",
    "e2e_ok",
    "e2e_api",
]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _callbacks(stack: CeleryStack, dag_id: str) -> list[dict]:
    return deadline_callbacks(stack, dag_id)


def _phases(stack: CeleryStack, dag_id: str) -> Counter:
    return deadline_phases(stack, dag_id)


def _wait_finished(stack: CeleryStack, dag_id: str, timeout: float = 90) -> dict:
    return wait_deadline_finished(stack, dag_id, timeout, settle=2)


def _start(stack: CeleryStack, workers: dict[str, tuple[str, ...]]) -> None:
    stack.prepare()
    for name, queues in workers.items():
        stack.worker(name, queues, wait=False)
    for name in workers:
        stack.wait_worker(name)
    stack.scheduler()


def _assert_reason(callback: dict, mentions: str | None = None) -> None:
    output = callback["output"] or ""
    assert output and output != GENERIC_FAILURE, f"no reason in the callback's output: {output!r}"
    if mentions:
        assert mentions in output, f"the output does not name the failing callable: {output!r}"


def _log_through_the_api(stack: CeleryStack, callback: dict) -> str:
    """The log of a Deadline Alert callback as the UI reads it from the api-server."""
    dag_id = callback["data"]["dag_id"]
    ((run_id,),) = stack.query(
        "SELECT run_id FROM dag_run WHERE id = :id", id=int(callback["data"]["dag_run_id"])
    )
    path = f"/ui/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/callbacks/{callback['id']}/logs"
    content = stack.api.request("GET", path)["content"]
    # Whole lines: a failure's reason is in a field of its own (``error_detail``), not in ``event``.
    return "\n".join(json.dumps(line) if isinstance(line, dict) else str(line) for line in content)


def _assert_ran_once_with_log(stack: CeleryStack, callback: dict, text: str) -> str:
    """The callback ran on exactly one worker (returned); its log has ``text``, on disk and through the API."""
    ran_on = stack.workers_that_ran(callback["id"])
    assert len(ran_on) == 1, f"workers that ran the callback: {ran_on}\n{stack.logs()}"
    on_disk = stack.callback_log(callback["id"])
    assert text in on_disk, f"the callback's log file: {on_disk[-2000:]!r}"
    shown = _log_through_the_api(stack, callback)
    assert text in shown, f"the callback's log as the api-server serves it: {shown[-2000:]!r}"
    return ran_on[0]


def _check_deadline_succeeds_once(stack: CeleryStack, run_id: str) -> str:
    stack.trigger("e2e_deadline_ok", run_id)
    callback = _wait_finished(stack, "e2e_deadline_ok")
    assert callback["state"] == "success", (callback["output"], stack.logs())
    assert _phases(stack, "e2e_deadline_ok") == {"started": 1, "ended": 1}
    return _assert_ran_once_with_log(stack, callback, SUCCESS_LOG)


# ---------------------------------------------------------------------------------------------- SQLite


@pytest.mark.full
def test_sqlite_with_the_redis_result_backend_runs_a_callback_once():
    """First in the file: it runs before the shared PostgreSQL stack starts, not next to it."""
    with CeleryStack(PYTHON, "sqlite", {"AIRFLOW__CORE__PARALLELISM": "4"}, result_backend="redis") as stack:
        _start(stack, {"worker": ("default",)})
        stack.wait_dags(["e2e_deadline_ok"])
        assert _check_deadline_succeeds_once(stack, "sqlite-ok-1") == "worker"


@pytest.mark.skipif(
    not os.path.exists(STABLE_PYTHON), reason="no .venv-stable (dev/series env --baseline stable)"
)
@pytest.mark.full
def test_stable_core_deadline_callbacks_succeed_once_and_fail_once_with_a_reason():
    """Core 3.3.2 with our Celery provider (and Celery 5.6): success once, a failure once, with a reason."""
    with CeleryStack(
        STABLE_PYTHON, "sqlite", {"AIRFLOW__CORE__PARALLELISM": "4"}, result_backend="redis"
    ) as stack:
        _start(stack, {"worker": ("default",)})
        stack.wait_dags(["e2e_deadline_ok", "e2e_deadline_fails"])
        stack.trigger("e2e_deadline_ok", "stable-ok-1")
        ok = _wait_finished(stack, "e2e_deadline_ok")
        assert ok["state"] == "success", (ok["output"], stack.logs())
        assert _phases(stack, "e2e_deadline_ok") == {"started": 1, "ended": 1}
        assert stack.workers_that_ran(ok["id"]) == ["worker"], stack.logs()
        assert SUCCESS_LOG in stack.callback_log(ok["id"])

        stack.trigger("e2e_deadline_fails", "stable-fails-1")
        failed = _wait_finished(stack, "e2e_deadline_fails")
        assert failed["state"] == "failed", (failed["output"], stack.logs())
        assert _phases(stack, "e2e_deadline_fails") == {"started": 1}, "run once, not retried"
        assert stack.workers_that_ran(failed["id"]) == ["worker"], stack.logs()
        _assert_reason(failed)


# ------------------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def pg_celery():
    config = {
        **FAST_RECOVERY,
        "AIRFLOW__CORE__PARALLELISM": "32",
        "AIRFLOW__CELERY__CALLBACK_QUEUE": OTHER_QUEUE,
        # A lost worker's callback is failed 20 s after its last heartbeat (sent every 5 s).
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    }
    with CeleryStack(PYTHON, "postgres", config) as stack:
        _start(stack, {"worker": ("default",), OTHER_QUEUE: (OTHER_QUEUE,)})
        stack.wait_dags(DAGS)
        stack.api.request("POST", "/api/v2/variables", {"key": "e2e_in", "value": "from-the-test"})
        yield stack


@pytest.fixture
def pg(pg_celery):
    """The PostgreSQL stack with a scheduler running (a test before may have killed it)."""
    pg_celery.ensure_scheduler()
    return pg_celery


def test_deadline_callback_succeeds_once_with_its_log(pg):
    _check_deadline_succeeds_once(pg, "ok-1")


def test_failing_deadline_callback_runs_once_and_ends_failed_with_a_reason(pg):
    pg.trigger("e2e_deadline_fails", "fails-1")

    callback = _wait_finished(pg, "e2e_deadline_fails")
    assert callback["state"] == "failed", (callback["output"], pg.logs())
    assert _phases(pg, "e2e_deadline_fails") == {"started": 1}, "run once, not retried"
    _assert_reason(callback, "deadline")
    _assert_ran_once_with_log(pg, callback, "fails on purpose")


@pytest.mark.full
def test_dag_run_callbacks_run_once_on_celery_and_read_a_variable(pg):
    callbacks = dag_run_callbacks_run_once(pg)
    assert callbacks["e2e_fail"]["output"] == (
        "1 of 3 callables of e2e_fail.on_failure_callback failed: e2e_callbacks.boom: "
        "ValueError: boom on purpose"
    )
    for callback in callbacks.values():
        assert pg.workers_that_ran(callback["id"]) == [OTHER_QUEUE], pg.logs()


@pytest.mark.full
def test_callback_goes_to_the_configured_queue(pg):
    pg.trigger("e2e_deadline_queue", "queue-1")

    callback = _wait_finished(pg, "e2e_deadline_queue")
    assert callback["state"] == "success", (callback["output"], pg.logs())
    assert _phases(pg, "e2e_deadline_queue") == {"started": 1, "ended": 1}
    assert _assert_ran_once_with_log(pg, callback, SUCCESS_LOG) == OTHER_QUEUE


def test_callback_goes_to_the_queue_it_names(pg):
    """``SyncCallback(queue="default")`` wins over ``[celery] callback_queue``: the tasks' worker runs it."""
    pg.trigger("e2e_deadline_own_queue", "own-queue-1")

    callback = _wait_finished(pg, "e2e_deadline_own_queue")
    assert callback["data"]["queue"] == "default"
    assert callback["state"] == "success", (callback["output"], pg.logs())
    assert _phases(pg, "e2e_deadline_own_queue") == {"started": 1, "ended": 1}
    assert _assert_ran_once_with_log(pg, callback, SUCCESS_LOG) == "worker"


@pytest.mark.full
def test_callback_with_40kb_of_kwargs_runs_once(pg):
    """A large workload: the Celery message (and the workload the worker gets) carries 40 kB of kwargs."""
    pg.trigger("e2e_deadline_big_40k", "big-1")

    callback = _wait_finished(pg, "e2e_deadline_big_40k")
    assert len(callback["data"]["kwargs"]["payload"]) == 40_960
    assert callback["state"] == "success", (callback["output"], pg.logs())
    assert _phases(pg, "e2e_deadline_big_40k") == {"started": 1, "ended": 1}
    assert _assert_ran_once_with_log(pg, callback, SUCCESS_LOG) == OTHER_QUEUE


@pytest.mark.full
def test_burst_of_callbacks_runs_each_once(pg):
    callbacks = burst_runs_each_once(pg, BURST, timeout=180)
    assert len({str(c["data"]["dag_run_id"]) for c in callbacks}) == BURST, "one callback per run"


def test_callback_of_a_killed_worker_is_failed_once_its_heartbeats_stop(pg):
    """
    SIGKILL of the worker running a callback, its whole session (a lost host).

    Its Celery task stays STARTED and its message unacknowledged, so only the callback's heartbeats
    tell: the scheduler fails it once they stop, and it does not run again when a worker is back.
    """
    pg.trigger("e2e_deadline_killed", "worker-killed-1")  # a 25 s callback
    wait_for("the callback to start", lambda: _phases(pg, "e2e_deadline_killed")["started"], 90)
    (callback,) = _callbacks(pg, "e2e_deadline_killed")
    assert pg.workers_that_ran(callback["id"]) == [OTHER_QUEUE]

    pg.kill(OTHER_QUEUE)
    try:
        callback = _wait_finished(pg, "e2e_deadline_killed", timeout=120)
    finally:
        pg.worker(OTHER_QUEUE, (OTHER_QUEUE,))
    assert callback["state"] == "failed", (callback["output"], pg.logs())
    assert "No heartbeat from its worker" in callback["output"], callback["output"]
    time.sleep(5)  # a worker back on the queue does not run it again
    assert _phases(pg, "e2e_deadline_killed") == {"started": 1}
    assert _callbacks(pg, "e2e_deadline_killed")[0]["state"] == "failed"


def test_callbacks_running_while_the_scheduler_is_stopped_or_killed_are_reported_once(pg):
    """SIGTERM, then SIGKILL, each while a callback runs: the next scheduler adopts it; it ends once."""
    pg.trigger("e2e_deadline_slow", "scheduler-stopped-1")  # a 25 s callback
    wait_for("the first callback to start", lambda: _phases(pg, "e2e_deadline_slow")["started"], 90)
    stopped = pg.running_scheduler()
    pg.stop(stopped)  # SIGTERM: the scheduler ends its job and exits
    pg.scheduler(f"{stopped}-after-stop")

    pg.trigger("e2e_deadline_watch", "scheduler-killed-1")  # a 15 s callback
    wait_for("the second callback to start", lambda: _phases(pg, "e2e_deadline_watch")["started"], 90)
    killed = pg.running_scheduler()
    pg.kill(killed)  # SIGKILL: the job is left running, found dead by its heartbeat
    pg.scheduler(f"{killed}-after-kill")

    for dag_id in ("e2e_deadline_slow", "e2e_deadline_watch"):
        callback = _wait_finished(pg, dag_id, timeout=120)
        assert callback["state"] == "success", (dag_id, callback["output"], pg.logs())
        assert _phases(pg, dag_id) == {"started": 1, "ended": 1}
        _assert_ran_once_with_log(pg, callback, SUCCESS_LOG)
