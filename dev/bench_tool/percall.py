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

NOOP_MODULE = "bench_noop_callback"
TAIL_SECONDS = 5.0


class _FakeCallbacks:
    def run(self, callback_id: object) -> None:
        return None


class FakeClient:
    """Stands in for the Task SDK's API client; only the token exchange is called."""

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
    payload = {
        "supervise_callback": supervised,
        "fork_floor": floor,
        "cold_first_supervise_callback": cold,
        "tail_threshold_seconds": TAIL_SECONDS,
    }
    args.out.write_text(json.dumps(payload), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
