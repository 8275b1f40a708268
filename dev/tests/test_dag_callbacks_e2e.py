"""End to end: DAG run callbacks through the executor, with real Airflow processes.

Each test starts its own api-server, dag-processor and scheduler(s) with LocalExecutor, on
SQLite or on a PostgreSQL database of its own (see ``dev/callback_e2e``).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callback_e2e.stack import AirflowStack, Marker, StackError, read_markers, wait_for
from demo_stack.api import ApiError

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")

EXECUTOR_MODE = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__CALLBACKS__RUNNER": "executor",
}
PROCESSOR_MODE = {"AIRFLOW__CALLBACKS__RUNNER": "dag_processor"}
# What the Dag processor logs when it runs a DAG callback (dag_processing/processor.py).
PROCESSOR_RAN_A_CALLBACK = "dag callback"


def _processor_ran_callbacks(stack: AirflowStack) -> bool:
    for path in [*stack.home.dag_processor_logs.rglob("*.log"), stack.home.process_log("dag-processor")]:
        if path.is_file() and PROCESSOR_RAN_A_CALLBACK in path.read_text(errors="replace"):
            return True
    return False


def _finished(callbacks: list[dict], count: int) -> bool:
    return len([c for c in callbacks if c["state"] in ("success", "failed")]) >= count


def test_marker_file_round_trip(tmp_path):
    """The harness reads back what the DAGs' callables write (no Airflow involved)."""
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"name": "a", "dag_id": "d", "run_id": "r", "reason": "success", "keys": ["dag"], "pid": 1}\n\n'
    )
    assert read_markers(path) == [Marker("a", "d", "r", "success", ("dag",), 1)]
    assert read_markers(tmp_path / "missing") == []


class _FlakyApi:
    """Answers each POST with the next of ``outcomes`` (an exception to raise, or a response)."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def request(self, method, path, body=None):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.mark.parametrize(
    ("outcomes", "expected", "calls"),
    [
        ([{"dag_run_id": "r1"}], "r1", 1),
        # Timed out, but the first request created it: the retry gets 409 and counts it.
        ([ApiError("timed out"), ApiError("conflict", 409)], "r1", 2),
        ([ApiError("timed out"), {"dag_run_id": "r1"}], "r1", 2),
    ],
)
def test_trigger_retries_a_named_run_without_making_two(outcomes, expected, calls):
    stack = AirflowStack(PYTHON)
    try:
        stack.api = _FlakyApi(*outcomes)
        assert stack.trigger("d", "r1") == expected
        assert stack.api.calls == calls
    finally:
        stack.__exit__(None, None, None)


def test_trigger_does_not_retry_unnamed_runs_or_real_errors():
    stack = AirflowStack(PYTHON)
    try:
        stack.api = _FlakyApi(ApiError("timed out"))
        with pytest.raises(ApiError, match="timed out"):
            stack.trigger("d")
        stack.api = _FlakyApi(ApiError("conflict", 409))
        with pytest.raises(ApiError, match="conflict"):  # a 409 on the first try is a real clash
            stack.trigger("d", "r1")
    finally:
        stack.__exit__(None, None, None)


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_dag_run_callbacks_run_once_on_the_executor(backend):
    with AirflowStack(PYTHON, backend, EXECUTOR_MODE) as stack:
        stack.scheduler()
        stack.wait_healthy()
        stack.wait_dags(["e2e_fail", "e2e_ok"])
        failed_run = stack.trigger("e2e_fail")
        ok_run = stack.trigger("e2e_ok")

        callbacks = wait_for("two finished callbacks", lambda: _finished(stack.dag_callbacks(), 2), 180)
        callbacks = {c["data"]["dag_id"]: c for c in stack.dag_callbacks()}
        time.sleep(3)  # anything run twice would show up by now
        markers = stack.read_markers()
        assert sorted((m.name, m.run_id) for m in markers) == sorted(
            [("fail_a", failed_run), ("fail_b", failed_run), ("ok", ok_run)]
        ), stack.logs()

        # The list with one raising callable: the others ran, the callback failed, saying why.
        failure = callbacks["e2e_fail"]
        assert failure["state"] == "failed"
        assert failure["output"] == (
            "1 of 3 callables of e2e_fail.on_failure_callback failed: e2e_callbacks.boom: "
            "ValueError: boom on purpose"
        )
        assert failure["data"]["reason"] == "task_failure"
        assert callbacks["e2e_ok"]["state"] == "success"
        assert stack.run_state("e2e_fail", failed_run) == "failed"
        assert not _processor_ran_callbacks(stack), "the Dag processor ran a callback in executor mode"

        # The same callback through the Dag processor gets the same context keys.
        executor_keys = next(m.keys for m in markers if m.name == "ok")
        stack.stop("scheduler")
        stack.scheduler("scheduler-processor-mode", config=PROCESSOR_MODE)
        processor_run = stack.trigger("e2e_ok")
        by_processor = wait_for(
            "the Dag processor to run on_success_callback",
            lambda: [m for m in stack.read_markers() if m.run_id == processor_run],
            180,
        )
        assert [m.name for m in by_processor] == ["ok"]
        assert by_processor[0].keys == executor_keys
        assert _processor_ran_callbacks(stack)
        assert len(stack.dag_callbacks()) == 2  # no executor callback for the processor-mode run


@pytest.mark.e2e
@pytest.mark.full
def test_two_schedulers_run_each_of_200_callbacks_once():
    runs = 200
    with AirflowStack(PYTHON, "postgres", {**EXECUTOR_MODE, "AIRFLOW__CORE__PARALLELISM": "8"}) as stack:
        stack.wait_healthy()
        stack.wait_dags(["e2e_burst"])
        # All runs exist before the schedulers start: they race for the same rows from the start,
        # and the api-server is not answering triggers while the machine is busy with the runs.
        run_ids = {stack.trigger("e2e_burst", f"burst-{i:03d}") for i in range(runs)}
        stack.scheduler("scheduler-1")
        stack.scheduler("scheduler-2")

        wait_for(f"{runs} finished callbacks", lambda: _finished(stack.dag_callbacks(), runs), 600, poll=2)
        time.sleep(5)
        callbacks = stack.dag_callbacks()
        markers = [m for m in stack.read_markers() if m.name == "burst"]
        assert len(callbacks) == runs
        # Once in CI (not reproduced since) all 200 ended failed: say why if it happens again.
        outputs = Counter((c["output"] or "")[:300] for c in callbacks if c["state"] != "success")
        assert Counter(c["state"] for c in callbacks) == {"success": runs}, (
            f"outputs of the callbacks that did not succeed: {outputs.most_common(3)}\n{stack.logs()}"
        )
        ran = Counter(m.run_id for m in markers)
        assert set(ran) == run_ids
        assert [run for run, count in ran.items() if count > 1] == []
        # Both schedulers were up throughout.
        assert all(stack.procs[name].alive() for name in ("scheduler-1", "scheduler-2")), stack.logs()


@pytest.mark.e2e
def test_callback_of_a_scheduler_killed_before_queueing_it_runs_once():
    # One slot, and no callbacks held beyond it (core 0016), so scheduler A stores the callback
    # but cannot queue it while the sleeping task holds the slot.
    config = {
        **EXECUTOR_MODE,
        "AIRFLOW__CORE__PARALLELISM": "1",
        "AIRFLOW__CALLBACKS__EXECUTOR_QUEUE_AHEAD": "0",
    }
    with AirflowStack(PYTHON, "postgres", config) as stack:
        stack.scheduler("scheduler-a")
        stack.wait_healthy()
        stack.wait_dags(["e2e_sleep", "e2e_timeout"])
        stack.trigger("e2e_sleep")
        wait_for(
            "the sleeping task to hold the only slot",
            lambda: stack.query(
                "SELECT 1 FROM task_instance WHERE dag_id = 'e2e_sleep' AND state = 'running'"
            ),
            120,
        )
        run_id = stack.trigger("e2e_timeout")
        (callback,) = wait_for("the timed-out run's callback row", stack.dag_callbacks, 120)
        time.sleep(3)
        (callback,) = stack.dag_callbacks()
        assert callback["state"] == "pending", "scheduler A had no slot, so it cannot have queued it"
        assert callback["data"]["reason"] == "timed_out"

        stack.kill("scheduler-a")
        stack.scheduler("scheduler-b", config={"AIRFLOW__CORE__PARALLELISM": "4"})
        wait_for("the callback to finish", lambda: _finished(stack.dag_callbacks(), 1), 180)
        time.sleep(3)
        (callback,) = stack.dag_callbacks()
        assert callback["state"] == "success", callback["output"]
        assert [m.run_id for m in stack.read_markers() if m.name == "timeout"] == [run_id]


@pytest.mark.e2e
def test_callback_whose_scheduler_alone_is_killed_is_recorded_by_its_worker():
    """
    LocalExecutor's workers outlive a scheduler killed alone; its result queue does not.

    The next scheduler finds the running callback orphaned and leaves it to its worker (core 0028),
    which records how it ended (task-sdk 0026), instead of failing it as "may already have run".
    """
    from callback_e2e.common import FAST_RECOVERY
    from callback_e2e.scenarios import deadline_phases, wait_deadline_finished

    dag_id = "e2e_deadline_long"  # a 60 s callback
    with AirflowStack(PYTHON, "postgres", {**EXECUTOR_MODE, **FAST_RECOVERY}) as stack:
        stack.prepare()
        stack.scheduler("scheduler-a")
        stack.wait_dags([dag_id])
        stack.trigger(dag_id, "killed-alone")
        wait_for("the callback to start", lambda: deadline_phases(stack, dag_id)["started"], 120)
        stack.kill("scheduler-a", alone=True)
        stack.scheduler("scheduler-b")
        try:
            wait_for(
                "the next scheduler to find the orphan",
                lambda: "Leaving orphaned running executor callback" in stack.logs_of("scheduler-b"),
                60,
            )
        except StackError as err:
            orphans = [line for line in stack.logs_of("scheduler-b").splitlines() if "rphan" in line]
            rows = stack.query("SELECT state, queued_by_job_id, last_heartbeat_at FROM callback")
            jobs = stack.query("SELECT id, state, latest_heartbeat FROM job")
            pytest.fail(f"{err}: {orphans}; callbacks {rows}; jobs {jobs}")
        assert deadline_phases(stack, dag_id)["ended"] == 0, "the orphan was found while it ran"

        callback = wait_deadline_finished(stack, dag_id, timeout=120)
        assert (callback["state"], callback["output"]) == ("success", None), stack.logs()
        assert deadline_phases(stack, dag_id) == {"started": 1, "ended": 1}


@pytest.mark.e2e
def test_dag_callbacks_read_and_write_through_the_api_on_both_paths():
    """XCom, Variables and previous-run lookups work with the callback's own token, as on the processor."""

    def api_marker(run_id: str) -> Marker:
        (marker,) = wait_for(
            f"the callback of {run_id}",
            lambda: [m for m in stack.read_markers() if m.run_id == run_id and m.name == "api"],
            180,
        )
        return marker

    with AirflowStack(PYTHON, "sqlite", EXECUTOR_MODE) as stack:
        stack.scheduler()
        stack.wait_healthy()
        stack.wait_dags(["e2e_api"])
        stack.api.request("POST", "/api/v2/variables", {"key": "e2e_in", "value": "from-the-test"})

        runs = {}
        for day, name in enumerate(("api-1", "api-2"), start=1):
            stack.trigger("e2e_api", name, logical_date=f"2026-01-0{day}T00:00:00+00:00")
            runs[name] = api_marker(name).extra
        assert runs == {
            "api-1": {"xcom": "pushed-value", "variable": "from-the-test", "previous_run": None},
            "api-2": {"xcom": "pushed-value", "variable": "from-the-test", "previous_run": "api-1"},
        }, stack.logs()
        written = stack.api.request("GET", "/api/v2/variables/e2e_out_api-2")
        assert json.loads(written["value"]) == runs["api-2"]
        # The callable has written its marker; its process may not have ended yet.
        wait_for("both callbacks to end", lambda: _finished(stack.dag_callbacks(), 2), 60)
        assert Counter(c["state"] for c in stack.dag_callbacks()) == {"success": 2}
        assert not _processor_ran_callbacks(stack)

        # The Dag processor path reads the same things for the next run.
        stack.stop("scheduler")
        stack.scheduler("scheduler-processor-mode", config=PROCESSOR_MODE)
        stack.trigger("e2e_api", "api-3", logical_date="2026-01-03T00:00:00+00:00")
        assert api_marker("api-3").extra == {
            "xcom": "pushed-value",
            "variable": "from-the-test",
            "previous_run": "api-2",
        }
