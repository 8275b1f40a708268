"""Per-callback fixed cost: ``supervise_callback`` on a no-op against a forked no-op (the floor).

Run inside the Airflow virtualenv as ``python -m bench_tool.percall --runs N --out FILE``;
the bench starts it as a subprocess so Airflow's logging goes to a file of its own.  No
scheduler or api-server is needed: ``supervise_callback`` gets a fake ``client`` whose
token exchange (``client.callbacks.run``) does nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_tool.dags import small_dag_source

NOOP_MODULE = "bench_noop_callback"
TAIL_SECONDS = 5.0


class _FakeCallbacks:
    def run(self, callback_id: object, *, heartbeats: bool = False) -> None:
        return None

    def heartbeat(self, callback_id: object) -> None:
        return None


class FakeClient:
    """Stands in for the Task SDK's API client: the token exchange and the heartbeats (task-sdk 0011)."""

    callbacks = _FakeCallbacks()


def _write_noop_module(directory: Path) -> None:
    (directory / f"{NOOP_MODULE}.py").write_text("def noop(**kwargs):\n    return None\n", encoding="utf-8")


def time_supervised(runs: int) -> list[float]:
    from airflow.sdk.execution_time.callback_supervisor import supervise_callback

    client = FakeClient()
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        code = supervise_callback(
            id=str(uuid.uuid4()),
            callback_path=f"{NOOP_MODULE}.noop",
            callback_kwargs={},
            dag_rel_path=Path("bench.py"),
            client=client,  # type: ignore[arg-type]
        )
        durations.append(time.perf_counter() - start)
        if code != 0:
            raise RuntimeError(f"supervise_callback returned {code}")
    return durations


DAG_CALLBACK_FILE = "bench_percall_dag.py"
DAG_CALLBACK_DAG_ID = "bench_percall_dag"
DAG_CALLBACK_BUNDLE = "bench-percall"
# A small DAG like the bench's fillers, with a no-op on_failure_callback.
DAG_CALLBACK_SOURCE = small_dag_source(DAG_CALLBACK_DAG_ID, on_failure_callback=True)
FORK_SERVER_OPTION = "AIRFLOW__CALLBACKS__FORK_SERVER_IDLE_TIMEOUT"


def configure_dag_bundle(directory: Path) -> None:
    """Write the DAG file and point a local bundle at it; before Airflow reads its configuration."""
    (directory / DAG_CALLBACK_FILE).write_text(DAG_CALLBACK_SOURCE, encoding="utf-8")
    os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
        [
            {
                "name": DAG_CALLBACK_BUNDLE,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(directory)},
            }
        ]
    )


def time_dag_callback(runs: int, *, fork_server: bool) -> list[float]:
    """``supervise_callback`` of a DAG's on_failure_callback (``dag_attribute``); fork server on or off."""
    from airflow.sdk.api.datamodels._generated import BundleInfo
    from airflow.sdk.execution_time.callback_supervisor import supervise_callback

    os.environ[FORK_SERVER_OPTION] = "30" if fork_server else "0"
    client = FakeClient()
    data = {
        "kind": "dag_run",
        "dag_id": DAG_CALLBACK_DAG_ID,
        "run_id": "bench",
        "attribute": "on_failure_callback",
        "reason": "task_failure",
    }
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        code = supervise_callback(
            id=str(uuid.uuid4()),
            dag_rel_path=Path(DAG_CALLBACK_FILE),
            fetch_method="dag_attribute",
            callback_data=data,
            bundle_info=BundleInfo(name=DAG_CALLBACK_BUNDLE, version=None),
            client=client,  # type: ignore[arg-type]
        )
        durations.append(time.perf_counter() - start)
        if code != 0:
            raise RuntimeError(f"supervise_callback returned {code}")
    return durations


def _dag_callbacks_supported() -> bool:
    import inspect

    from airflow.sdk.execution_time.callback_supervisor import supervise_callback

    return "fetch_method" in inspect.signature(supervise_callback).parameters


def _floor_child() -> None:
    try:
        import airflow.sdk  # noqa: F401 - the floor includes importing the task SDK

        module = __import__(NOOP_MODULE)
        module.noop()
    finally:
        os._exit(0)


def time_fork_floor(runs: int) -> list[float]:
    """fork(); the child imports the task SDK and calls the no-op; the parent waits."""
    import airflow.sdk  # noqa: F401 - as for supervise_callback, the parent has it imported

    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _floor_child()
        os.waitpid(pid, 0)
        durations.append(time.perf_counter() - start)
    return durations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench_tool.percall")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-percall-"))
    _write_noop_module(workdir)
    sys.path.insert(0, str(workdir))
    configure_dag_bundle(workdir)

    cold_start = time.perf_counter()
    time_supervised(1)
    cold = time.perf_counter() - cold_start
    time_supervised(args.warmup)
    time_fork_floor(args.warmup)
    # Interleave the two in chunks so that drift in machine load hits both alike.
    supervised: list[float] = []
    floor: list[float] = []
    chunk = 10
    done = 0
    while done < args.runs:
        step = min(chunk, args.runs - done)
        supervised += time_supervised(step)
        floor += time_fork_floor(step)
        done += step
    # A DAG callback parses its DAG file in its own process, or is forked from a fork server that
    # parsed it (task SDK versions that have one). Interleaved in chunks too.
    dag_direct: list[float] = []
    dag_forked: list[float] = []
    if _dag_callbacks_supported():
        time_dag_callback(args.warmup, fork_server=False)
        time_dag_callback(args.warmup, fork_server=True)
        done = 0
        while done < args.runs:
            step = min(chunk, args.runs - done)
            dag_direct += time_dag_callback(step, fork_server=False)
            dag_forked += time_dag_callback(step, fork_server=True)
            done += step
    payload = {
        "supervise_callback": supervised,
        "fork_floor": floor,
        "dag_callback_parsed_each_time": dag_direct,
        "dag_callback_fork_server": dag_forked,
        "cold_first_supervise_callback": cold,
        "tail_threshold_seconds": TAIL_SECONDS,
    }
    args.out.write_text(json.dumps(payload), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
