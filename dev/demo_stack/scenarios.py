"""The callbacks the demo expects to see, and how to judge each one.

Everything here is pure (no processes, no network) so it can be unit tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from demo_stack.markers import MarkerRecord
from demo_stack.metadb import CallbackRow
from demo_stack.results import EXECUTOR_TERMINAL_STATES, PROCESSOR_TERMINAL_STATES, ResultRow

RUNS_ON_EXECUTOR = "executor"
RUNS_ON_DAG_PROCESSOR = "dag-processor"

DAG_RUN_TERMINAL_STATES = frozenset({"success", "failed"})

# Lines the Dag Processor logs (in the per-Dag-file log) when a Dag callback raised.
PROCESSOR_FAILURE_SIGNATURES = ("Callback failed", "Failed to execute callback request")
PROCESSOR_RUNNING_SIGNATURES = ("Executing on_failure dag callback",)


@dataclass(frozen=True)
class Scenario:
    """A demo Dag and the callback it should cause."""

    name: str  # marker name, shown in the "callback" column
    dag_id: str
    dag_file: str  # relative to the dags folder
    kind: str
    runs_on: str
    expected: str = "success"
    # The Dag run state the scenario produces when things work.
    expected_run_state: str = "success"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="deadline_alert",
        dag_id="demo_deadline_alert",
        dag_file="demo_deadline_alert.py",
        kind="deadline alert",
        runs_on=RUNS_ON_EXECUTOR,
    ),
    # With ``[callbacks] runner = executor`` (set by the demo) the Dag's
    # on_failure_callback runs on the executor, not in the Dag Processor.
    Scenario(
        name="dag_on_failure",
        dag_id="demo_dag_on_failure",
        dag_file="demo_dag_on_failure.py",
        kind="dag on_failure_callback",
        runs_on=RUNS_ON_EXECUTOR,
        expected_run_state="failed",
    ),
    # A task whose process is killed mid-run (as an out-of-memory kill does): the scheduler fails
    # it as killed externally and its on_failure_callback runs on the executor too.
    Scenario(
        name="task_on_failure",
        dag_id="demo_task_killed",
        dag_file="demo_task_killed.py",
        kind="task on_failure_callback",
        runs_on=RUNS_ON_EXECUTOR,
        expected_run_state="failed",
    ),
)


@dataclass
class Tracked:
    """What the demo has observed so far for one scenario."""

    scenario: Scenario
    run_id: str | None = None
    trigger_ts: float | None = None  # wall clock (time.time()) just before triggering
    run_state: str | None = None
    callback: CallbackRow | None = None  # executor-run callbacks only
    processor_state: str | None = None  # dag-processor-run callbacks only
    marker: MarkerRecord | None = None
    processor_log: Path | None = None
    extra_logs: list[Path] = field(default_factory=list)

    @property
    def callback_state(self) -> str | None:
        if self.scenario.runs_on == RUNS_ON_EXECUTOR:
            return self.callback.state if self.callback else None
        return self.processor_state

    def snapshot(self) -> dict[str, str]:
        """Values whose changes are reported as progress lines."""
        snap = {"run": self.run_state or "-", "callback": self.callback_state or "-"}
        if self.marker is not None:
            snap["marker"] = f"written by pid {self.marker.pid}"
        return snap

    def settled(self) -> bool:
        """Nothing more to wait for: the run ended and the callback reached a final state."""
        if self.run_state not in DAG_RUN_TERMINAL_STATES:
            return False
        if self.scenario.runs_on == RUNS_ON_DAG_PROCESSOR and self.run_state == "success":
            return True  # an on_failure_callback will never come
        state = self.callback_state
        terminal = (
            EXECUTOR_TERMINAL_STATES
            if self.scenario.runs_on == RUNS_ON_EXECUTOR
            else PROCESSOR_TERMINAL_STATES
        )
        return state in terminal


def derive_processor_state(marker_found: bool, processor_log_text: str | None) -> str:
    """State of a Dag Processor-run callback, which has no row in the ``callback`` table.

    ``success`` if the callback wrote its marker line, ``failed`` if the Dag Processor
    logged that the callback raised, ``running`` if it logged that it started the
    callback, else ``pending``.
    """
    if marker_found:
        return "success"
    text = processor_log_text or ""
    if any(signature in text for signature in PROCESSOR_FAILURE_SIGNATURES):
        return "failed"
    if any(signature in text for signature in PROCESSOR_RUNNING_SIGNATURES):
        return "running"
    return "pending"


def final_processor_state(state: str | None) -> str:
    """Collapse non-final processor states to ``missing`` once the demo stops waiting."""
    return state if state in PROCESSOR_TERMINAL_STATES else "missing"


def build_row(
    tracked: Tracked,
    executor_label: str,
    callback_log: Path | None,
) -> ResultRow:
    """Turn the observations for one scenario into the result row shown in the table."""
    scenario = tracked.scenario
    marker = tracked.marker
    seconds = None
    if marker is not None and tracked.trigger_ts is not None:
        seconds = max(0.0, marker.ts - tracked.trigger_ts)

    details: list[str] = []
    if scenario.runs_on == RUNS_ON_EXECUTOR:
        callback = tracked.callback
        state = (callback.state or "none") if callback else "missing"
        if callback is None:
            details.append("no callback row for this run (was it created, and did the run end?)")
        elif callback.state == "failed" and callback.output:
            details.append(f"callback output: {callback.output.strip()[:300]}")
        log = callback_log
        executor = executor_label
    else:
        state = final_processor_state(tracked.processor_state)
        log = tracked.processor_log
        executor = "dag-processor"
        if tracked.run_state == "success":
            details.append("the Dag run succeeded, so no on_failure_callback was requested")

    if tracked.run_id is None:
        details.append("the Dag was never triggered")
    elif tracked.run_state not in DAG_RUN_TERMINAL_STATES:
        details.append(f"Dag run {tracked.run_id} still {tracked.run_state or 'unknown'}")
    elif tracked.run_state != scenario.expected_run_state:
        details.append(f"Dag run ended {tracked.run_state}, expected {scenario.expected_run_state}")
    if state == scenario.expected and marker is None:
        details.append("the callback reported success but wrote no marker line")

    log_text = "-"
    if log is not None:
        log_text = str(log) if log.exists() else f"{log} (not found)"

    return ResultRow(
        callback=scenario.name,
        kind=scenario.kind,
        executor=executor,
        state=state,
        expected=scenario.expected,
        seconds=seconds,
        pid=marker.pid if marker else None,
        log=log_text,
        detail="; ".join(details),
        marker_seen=marker is not None,
        relevant_logs=[str(path) for path in tracked.extra_logs],
    )
