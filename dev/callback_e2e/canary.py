"""The secret canary check: no secret a callback (or task) reads leaves a masked channel.

A stack's callbacks and tasks read a Variable and a Connection holding canary strings, get another
in their kwargs, print and log all three, and fail. Then every file under the stack's root
(AIRFLOW_HOME, log folders, each process's captured output), every text column of the metadata
database not meant to hold them, and whatever else the stack collects (a fake's CloudWatch Logs, its
Lambda records) is searched for the canaries. Their own log files may hold ``***``, never a canary.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from callback_e2e.common import FINISHED
from callback_e2e.stack import AirflowStack, StackError, wait_for

CANARY_ENV = "CANARY_E2E_KWARG"
# Names the e2e DAGs use (dags/e2e_callbacks.py, dags/e2e_canary_dags.py).
VARIABLE = "e2e_canary_secret"
CONNECTION = "e2e_canary_conn"
DEADLINE_DAG = "e2e_canary_deadline"
DAG_RUN_DAG = "e2e_canary_dag"
DAG_IDS = [DEADLINE_DAG, DAG_RUN_DAG]

# Where a canary is stored by design: the DAG and its Deadline Alert's definition (the callback's
# kwargs are part of them), and the callback row's kwargs, which the worker needs. The Variable and the Connection's password are encrypted (the
# stacks set a Fernet key), so theirs never hold the clear value.
ALLOWED_COLUMNS = frozenset(
    {
        ("serialized_dag", "data"),
        ("dag", "deadline"),
        ("deadline_alert", "callback_def"),
        ("callback", "data"),
    }
)
# The metadata database's own files, searched by column instead.
DB_FILE_PREFIXES = ("airflow.db",)


@dataclass(frozen=True)
class Canaries:
    """Three distinct canary strings: a callback kwarg, a Variable, a Connection's password."""

    kwarg: str
    variable: str
    password: str

    @classmethod
    def make(cls) -> Canaries:
        tag = uuid.uuid4().hex[:12]
        return cls(
            kwarg=f"CanaryKwarg{tag}", variable=f"CanaryVariable{tag}", password=f"CanaryPassword{tag}"
        )

    def by_name(self) -> dict[str, str]:
        return {"kwarg": self.kwarg, "variable": self.variable, "password": self.password}

    def config(self) -> dict[str, str]:
        """The stack configuration that defines the canary DAGs, with the kwarg canary in their kwargs."""
        return {CANARY_ENV: self.kwarg}

    def found_in(self, data: bytes) -> list[str]:
        return [name for name, value in self.by_name().items() if value.encode() in data]


def create_secrets(stack: AirflowStack, canaries: Canaries) -> None:
    stack.api.request("POST", "/api/v2/variables", {"key": VARIABLE, "value": canaries.variable})
    stack.api.request(
        "POST",
        "/api/v2/connections",
        {
            "connection_id": CONNECTION,
            "conn_type": "http",
            "host": "example.invalid",
            "password": canaries.password,
        },
    )


def run_canary_callbacks(stack: AirflowStack, timeout: float = 150) -> dict[str, dict[str, Any]]:
    """
    Trigger both canary DAGs and wait until their callbacks end; both fail (their callables raise).

    Returns the two callbacks by kind: ``"deadline"`` and ``"dag_run"``.
    """
    tag = uuid.uuid4().hex[:6]
    deadline_run = stack.trigger(DEADLINE_DAG, f"canary-deadline-{tag}")
    dag_run = stack.trigger(DAG_RUN_DAG, f"canary-dag-{tag}")

    def mine() -> dict[str, dict[str, Any]]:
        found = {}
        for callback in stack.executor_callbacks():
            data = callback["data"] if isinstance(callback["data"], dict) else {}
            if data.get("kind") == "dag_run" and data.get("run_id") == dag_run:
                found["dag_run"] = callback
            elif (data.get("kwargs") or {}).get("name") == DEADLINE_DAG:
                found["deadline"] = callback
        return found

    try:
        wait_for(
            "both canary callbacks to end",
            lambda: len(done := mine()) == 2 and all(c["state"] in FINISHED for c in done.values()),
            timeout,
        )
    except StackError as err:
        pytest.fail(f"{err}; {[(k, c['state']) for k, c in mine().items()]}\n{stack.logs()}")
    callbacks = mine()
    for kind, callback in callbacks.items():
        assert callback["state"] == "failed", (kind, callback["output"], stack.logs())
    assert stack.run_state(DEADLINE_DAG, deadline_run) is not None
    assert stack.run_state(DAG_RUN_DAG, dag_run) == "failed"
    return callbacks


def scan_files(roots: Iterable[Path], canaries: Canaries, record_dirs: Iterable[Path] = ()) -> list[str]:
    """
    ``path: canary names`` for every file under ``roots`` holding a canary (database files left out).

    Files under ``record_dirs`` are a fake's records of the workloads it ran (a Lambda invocation's
    event), which carry the callback's kwargs by design: the kwarg canary is allowed there.
    """
    records = [Path(d) for d in record_dirs]
    leaks = []
    for root in roots:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            if path.name.startswith(DB_FILE_PREFIXES):
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found = canaries.found_in(data)
            if any(path.is_relative_to(d) for d in records):
                found = [name for name in found if name != "kwarg"]
            if found:
                leaks.append(f"file {path}: {', '.join(found)}")
    return leaks


def _columns(stack: AirflowStack) -> list[tuple[str, str]]:
    if stack.config["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
        tables = [row[0] for row in stack.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [(t, row[1]) for t in tables for row in stack.query(f'PRAGMA table_info("{t}")')]
    return [
        (table, column)
        for table, column in stack.query(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        )
    ]


def scan_database(
    stack: AirflowStack, canaries: Canaries, allowed: frozenset[tuple[str, str]] = ALLOWED_COLUMNS
) -> list[str]:
    """``table.column: canary names`` for every column of the metadata database holding a canary it should not."""
    leaks = []
    for table, column in _columns(stack):
        if (table, column) in allowed:
            continue
        found = [
            name
            for name, value in canaries.by_name().items()
            if stack.query(
                f'SELECT 1 FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE :pattern LIMIT 1',
                pattern=f"%{value}%",
            )
        ]
        if found:
            leaks.append(f"column {table}.{column}: {', '.join(found)}")
    return leaks


def scan_texts(
    texts: Mapping[str, str | bytes], canaries: Canaries, allowed: Iterable[str] = ()
) -> list[str]:
    """
    ``name: canary names`` for each of ``texts`` (a fake's log streams, records) holding a canary.

    ``allowed`` names canaries those texts hold by design (``"kwarg"`` in a record of the workload
    an executor sent: the workload carries the callback's kwargs).
    """
    leaks = []
    for name, text in texts.items():
        found = canaries.found_in(text.encode() if isinstance(text, str) else text)
        if found := [f for f in found if f not in set(allowed)]:
            leaks.append(f"{name}: {', '.join(found)}")
    return leaks


def cloudwatch_texts(client: Any) -> dict[str, str]:
    """Every CloudWatch Logs stream (``logs`` boto3 client), by ``cloudwatch <group>/<stream>``."""
    texts = {}
    for group in client.describe_log_groups()["logGroups"]:
        name = group["logGroupName"]
        for stream in client.describe_log_streams(logGroupName=name)["logStreams"]:
            events = client.get_log_events(
                logGroupName=name, logStreamName=stream["logStreamName"], startFromHead=True
            )["events"]
            texts[f"cloudwatch {name}/{stream['logStreamName']}"] = "\n".join(e["message"] for e in events)
    return texts


def stop_components(stack: AirflowStack) -> None:
    """Stop every component (each flushes its output), leaving the database and files in place."""
    from demo_stack.procs import stop_processes

    for group in stack.stop_groups():
        stop_processes([stack.procs[name] for name in group], grace=10)
    stop_processes(list(stack.procs.values()), grace=10)


def callbacks_wrote_masked_logs(stack: AirflowStack, callbacks: Mapping[str, Mapping[str, Any]]) -> None:
    """Each callback's own log file shows what it printed, masked."""
    for kind, callback in callbacks.items():
        log = stack.callback_log(callback["id"])
        assert "prints variable=***" in log, (kind, log[-3000:])


def secrets_stay_masked(
    stack: AirflowStack,
    canaries: Canaries,
    *,
    extra_texts: Callable[[], Mapping[str, str | bytes]] | None = None,
    records: Callable[[], Mapping[str, str | bytes]] | None = None,
    roots: Iterable[Path] = (),
    record_dirs: Iterable[Path] = (),
    timeout: float = 150,
) -> None:
    """
    The whole check on a stack whose scheduler is running: secrets created, callbacks run, then searched.

    ``extra_texts`` returns what else the stack collected (a fake's CloudWatch Logs) and ``records``
    what it holds of the workloads it ran (a fake's invocation events, which carry the callback's
    kwargs by design), and ``record_dirs`` hold such records as files; all are read after the
    components stopped.
    """
    create_secrets(stack, canaries)
    callbacks = run_canary_callbacks(stack, timeout)
    time.sleep(2)  # let the components write what they still hold
    callbacks_wrote_masked_logs(stack, callbacks)
    stop_components(stack)
    leaks = scan_files([stack.root, *roots], canaries, record_dirs) + scan_database(stack, canaries)
    if extra_texts:
        leaks += scan_texts(extra_texts(), canaries)
    if records:
        leaks += scan_texts(records(), canaries, allowed=["kwarg"])
    assert not leaks, "secret canaries outside a masked channel:\n" + "\n".join(leaks)
