"""Orchestration: per-callback cost, stacks up, idle window, single events, bursts, pending window,
teardown."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench_tool import pg as pgmod
from bench_tool.dags import BLOCKED_POOL, DEADLINE_DAG_ID, FAIL_DAG_ID, FILLER_PREFIX, HOLD_DAG_ID
from bench_tool.stack import NON_DEFAULT_SETTINGS, PARALLELISM, Stack, StackError
from bench_tool.stats import evaluate_goals, summarize
from bench_tool.statsd_listener import StatsdListener
from demo_stack.api import ApiError

PROC = "dag_processor"
EXEC = "executor"
PATHS = (PROC, EXEC)
TAIL_SECONDS = 5.0
LOOP_METRIC = "scheduler.scheduler_loop_duration"
HOLD_START_TIMEOUT = 180.0  # for PARALLELISM hold tasks to be running
HOLD_END_TIMEOUT = 30.0  # for the hold run to end once released (not an error when exceeded)
# Measured.pending key -> results.scheduler_loop key
PENDING_RESULT_KEYS = {
    "pending_count": "pending_count",
    "queued_during_window": "pending_queued_during_window",
    "seconds": "pending_window_seconds",
    "slots": "busy_slots",
    "hold_running_after": "busy_slots_running_after",
    "pending_before": "pending_before_insert",
    "deleted_after": "pending_deleted_after",
}
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Options:
    python: str
    executor_callback: str = "deadline"  # or "dag"
    events: int = 20
    bursts: tuple[int, ...] = (50, 200, 1000)
    fillers: int = 50
    idle_seconds: float = 30.0
    percall_runs: int = 200
    pending: int = 1000  # PENDING executor callbacks in the pending window; 0 skips it
    pending_seconds: float | None = None  # each pending-window sample; None: idle_seconds
    db_prefix: str = "airflow_bench"
    json_path: Path | None = None
    png_path: Path | None = None
    keep: bool = False
    label: str = "default"
    event_timeout: float = 120.0
    trigger_threads: int = 4
    mode: str = "default"
    # AIRFLOW__* settings for the executor path's stack only (A/B runs of an option).
    executor_config: dict[str, str] = field(default_factory=dict)


@dataclass
class PathSetup:
    """Where one callback path runs: which stack, which Dag, how its event time is read."""

    name: str
    stack: Stack
    dag_id: str
    kind: str  # the probe's "kind": "dag" or "deadline"
    event_source: str  # "run_end" or "deadline"


class Interrupted(BaseException):
    pass


class ProbeReader:
    """Incrementally reads a stack's probe file: (kind, run_id) -> record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.bad = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for line in data[: end + 1].splitlines():
            try:
                record = json.loads(line)
                key = (str(record["kind"]), str(record["run_id"]))
            except (ValueError, KeyError, TypeError):
                self.bad += 1
                continue
            self.records.setdefault(key, record)  # the first call counts; repeats are counted below
            self.records[key]["calls"] = self.records[key].get("calls", 0) + 1


class ParsePoller:
    """Polls ``dag.last_parsed_time`` of the filler Dags and keeps every distinct value.

    The time between two parses of the same file is the Dag Processor's loop time for
    that file (it includes ``[dag_processor] min_file_process_interval``, 30 s by default).
    """

    def __init__(self, pg: pgmod.Postgres, dbname: str, every: float = 2.0) -> None:
        self.pg = pg
        self.dbname = dbname
        self.every = every
        self.parses: dict[str, list[float]] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="parse-poller", daemon=True)

    def start(self) -> ParsePoller:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                times = pgmod.parse_times(self.pg, self.dbname, FILLER_PREFIX)
            except Exception:  # noqa: BLE001 - a busy database: try again next time
                self.errors += 1
                continue
            for dag_id, ts in times.items():
                seen = self.parses.setdefault(dag_id, [])
                if not seen or seen[-1] != ts:
                    seen.append(ts)

    def intervals(self) -> list[tuple[float, float]]:
        """(previous parse, next parse) of every file, over the whole run."""
        return [(a, b) for seen in self.parses.values() for a, b in itertools.pairwise(seen)]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Measured:
    single: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {p: [] for p in PATHS})
    bursts: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    idle_window: dict[str, tuple[float, float]] = field(default_factory=dict)
    warmup: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    percall: dict[str, Any] = field(default_factory=dict)
    # The pending window: "busy_idle" / "busy_pending" sample windows, counts.
    pending: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, options: Options, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.started = time.monotonic()
        self.root: Path | None = None
        self.pg: pgmod.Postgres | None = None
        self.databases: list[str] = []
        self.stacks: list[Stack] = []
        self.paths: dict[str, PathSetup] = {}
        self.readers: dict[str, ProbeReader] = {}
        self.listener: StatsdListener | None = None
        self.poller: ParsePoller | None = None
        self.measured = Measured()
        self.stopping = False

    # ---------------------------------------------------------------- output
    def log(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.started:6.1f}s] {message}", file=self.out, flush=True)

    # ------------------------------------------------------------- lifecycle
    def run(self, render: Callable[[dict[str, Any]], str]) -> int:
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                previous[signum] = signal.signal(signum, self._on_signal)
        code = EXIT_FAILED
        error: str | None = None
        try:
            self.root = Path(tempfile.mkdtemp(prefix="airflow-bench-"))
            self.log(
                f"work dir {self.root}; mode {self.options.mode}; executor side {self.options.executor_callback}"
            )
            self._per_callback_cost()
            self._setup_stacks()
            self._idle_window()
            self._single_events()
            self._bursts()
            self._pending_window()
            code = EXIT_OK
        except Interrupted:
            self.log("interrupted; stopping")
            error = "interrupted"
            code = EXIT_INTERRUPTED
        except StackError as err:
            error = str(err)
            self.log(f"ERROR: {err}")
            for path in err.logs:
                from demo_stack.procs import tail

                print(f"----- {path} -----\n{tail(path, 40)}\n-----", file=self.out)
        except Exception as err:  # noqa: BLE001 - report, then always clean up
            error = f"{type(err).__name__}: {err}"
            self.log(f"unexpected error: {error}")
            traceback.print_exc(file=self.out)
        finally:
            self.stopping = True
            payload = self._payload(code, error)
            self._teardown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        print(file=self.out)
        print(render(payload), file=self.out, flush=True)
        self._write_outputs(payload)
        if code == EXIT_OK and not self._complete(payload):
            code = EXIT_FAILED
        return code

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stopping:
            return
        raise Interrupted(signal.Signals(signum).name)

    # ------------------------------------------------------ per-callback cost
    def _per_callback_cost(self) -> None:
        assert self.root is not None
        runs = self.options.percall_runs
        if runs <= 0:
            return
        self.log(f"per-callback cost: {runs} supervise_callback no-ops vs {runs} forked no-ops ...")
        out = self.root / "percall.json"
        home = self.root / "percall-home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(AIRFLOW_HOME=str(home), PYTHONPATH=str(REPO / "dev"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
        log_path = self.root / "percall.log"
        with open(log_path, "wb") as handle:
            proc = subprocess.run(
                [self.options.python, "-m", "bench_tool.percall", "--runs", str(runs), "--out", str(out)],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=600,
                check=False,
            )
        if proc.returncode != 0:
            raise StackError("per-callback cost measurement failed", [log_path])
        self.measured.percall = json.loads(out.read_text())

    # ------------------------------------------------------------ the stacks
    def _statsd_available(self) -> bool:
        probe = subprocess.run(
            [self.options.python, "-c", "import statsd"],
            capture_output=True,
            check=False,
            env={"PATH": "/usr/bin"},
        )
        return probe.returncode == 0

    def _setup_stacks(self) -> None:
        assert self.root is not None
        opts = self.options
        self.pg = pg = pgmod.Postgres()
        self.listener = StatsdListener(suffixes=(LOOP_METRIC,)).start()
        use_shim = not self._statsd_available()
        if use_shim:
            self.measured.notes.append(
                "statsd client not installed in the venv; components used bench_tool's shim"
            )
        two = opts.executor_callback == "dag"
        names = ["proc", "exec"] if two else ["main"]
        for name in names:
            extra = {"AIRFLOW__CALLBACKS__RUNNER": "executor"} if name == "exec" else {}
            if name in ("exec", "main"):
                extra.update(opts.executor_config)
            stack = Stack(
                name,
                self.root / name,
                f"{opts.db_prefix}_{name}" if two else opts.db_prefix,
                opts.python,
                self.listener.port,
                extra_env=extra,
                use_shim=use_shim,
                base_env=os.environ,
            )
            self.stacks.append(stack)
        dag_ids = {s.name: s.prepare(fillers=opts.fillers, deadline=not two) for s in self.stacks}

        first = self.stacks[0]
        self.log(f"creating database {first.dbname} and running airflow db migrate ...")
        self.databases.append(first.dbname)
        pg.create_database(first.dbname)
        first.run_cli("db", "migrate", log_name="db-migrate")
        pg.instrument(first.dbname)
        for stack in self.stacks[1:]:
            self.databases.append(stack.dbname)
            pg.create_database(stack.dbname, template=first.dbname)

        for stack in self.stacks:
            stack.start()
            self.readers[stack.name] = ProbeReader(stack.probe_file)
        self.log(
            f"started {', '.join(p.name for s in self.stacks for p in s.procs)}; waiting for parsing ..."
        )
        for stack in self.stacks:
            stack.wait_ready(dag_ids[stack.name], timeout=300)
            stack.api.request("POST", "/api/v2/pools", {"name": BLOCKED_POOL, "slots": 0})
            for dag_id in (FAIL_DAG_ID, DEADLINE_DAG_ID):
                if dag_id in dag_ids[stack.name]:
                    stack.api.set_paused(dag_id, False)
        self.log("stacks ready")
        self.poller = ParsePoller(pg, first.dbname).start()
        if two:
            self.paths = {
                PROC: PathSetup(PROC, self.stacks[0], FAIL_DAG_ID, "dag", "run_end"),
                EXEC: PathSetup(EXEC, self.stacks[1], FAIL_DAG_ID, "dag", "run_end"),
            }
        else:
            self.paths = {
                PROC: PathSetup(PROC, first, FAIL_DAG_ID, "dag", "run_end"),
                EXEC: PathSetup(EXEC, first, DEADLINE_DAG_ID, "deadline", "deadline"),
            }

    def _check_alive(self) -> None:
        for stack in self.stacks:
            stack.check_alive()

    # ----------------------------------------------------------- the phases
    def _window(self, seconds: float) -> tuple[float, float]:
        """Wait ``seconds`` while watching the stacks; return the (start, end) wall-clock window."""
        start = time.time()
        end = start + seconds
        while time.time() < end:
            self._check_alive()
            time.sleep(min(1.0, max(0.0, end - time.time())))
        return start, time.time()

    def _idle_window(self) -> None:
        seconds = self.options.idle_seconds
        self.log(f"idle window: {seconds:.0f}s with nothing to do (scheduler / parse-loop baseline)")
        window = self._window(seconds)
        for stack in self.stacks:
            self.measured.idle_window[stack.name] = window

    def _trigger(self, path: PathSetup) -> str:
        run = path.stack.api.trigger(path.dag_id)
        return str(run["dag_run_id"])

    def _single_events(self) -> None:
        n = self.options.events
        if n > 0:
            # One untimed event per path first: the first callback after start pays one-off
            # costs (LocalExecutor worker start, first imports); it is reported separately.
            for name in PATHS:
                path = self.paths[name]
                run_id = self._trigger(path)
                self._wait_done(path, [run_id], self.options.event_timeout, poll=0.1)
                self.measured.warmup[name] = self._collect(path, [run_id])
            self.log(
                "warm-up: "
                + ", ".join(
                    f"{name} {_fmt_s(recs[0].get('started'))}" for name, recs in self.measured.warmup.items()
                )
            )
        self.log(f"single events: {n} per path, interleaved, one at a time")
        for index in range(n):
            order = PATHS if index % 2 == 0 else PATHS[::-1]
            for name in order:
                path = self.paths[name]
                run_id = self._trigger(path)
                self._wait_done(path, [run_id], self.options.event_timeout, poll=0.1)
                records = self._collect(path, [run_id])
                self.measured.single[name] += records
            if (index + 1) % 5 == 0 or index + 1 == n:
                self.log(f"  {index + 1}/{n} pairs done")

    def _bursts(self) -> None:
        for index, size in enumerate(self.options.bursts):
            order = PATHS if index % 2 == 0 else PATHS[::-1]
            result: dict[str, Any] = {}
            for name in order:
                result[name] = self._burst(self.paths[name], size)
            self.measured.bursts[str(size)] = result

    def _burst(self, path: PathSetup, size: int) -> dict[str, Any]:
        self.log(f"burst {size} on {path.name}: triggering ...")
        t0 = time.time()
        with ThreadPoolExecutor(self.options.trigger_threads) as pool:
            run_ids = list(pool.map(lambda _: self._trigger_retry(path), range(size)))
        t_triggered = time.time()
        timeout = max(180.0, size * 0.8)
        done = self._wait_done(path, run_ids, timeout, poll=1.0)
        t_end = time.time()
        records = self._collect(path, run_ids)
        event_ts = [r["event_ts"] for r in records if r.get("event_ts") is not None]
        started = [r["started_ts"] for r in records if r.get("started_ts") is not None]
        recorded = [r["recorded_ts"] for r in records if r.get("recorded_ts") is not None]
        first_event = min(event_ts) if event_ts else None
        info: dict[str, Any] = {
            "size": size,
            "completed": len(started),
            "missing": size - len(started),
            "timed_out": not done,
            "trigger_seconds": t_triggered - t0,
        }
        if first_event is not None and started:
            info["total"] = max(started) - first_event
            info["total_recorded"] = (max(recorded) - first_event) if recorded else None
            info["event_spread"] = max(event_ts) - first_event
            info["drain"] = max(started) - max(event_ts)
            info["throughput_per_s"] = len(started) / info["total"] if info["total"] > 0 else None
        window = (t0, max(recorded + started) if started else t_end)
        info["window"] = window
        loop = self._loop_samples(path.stack, *window)
        info["scheduler_loop_ms"] = summarize(loop)
        assert self.pg is not None
        log = pgmod.callback_log(self.pg, path.stack.dbname, window[0], window[1] + 5)
        info["peak_pending_executor_callbacks"] = pgmod.peak_pending(log, "executor")
        info["records"] = records
        total = info.get("total")
        self.log(
            f"burst {size} on {path.name}: {len(started)}/{size} ran"
            + (f", total {total:.1f}s" if total is not None else "")
            + f" (triggering took {info['trigger_seconds']:.1f}s)"
        )
        time.sleep(2.0)
        return info

    def _pending_window(self) -> None:
        """Scheduler loop with every executor slot busy: no pending callbacks, then ``pending``.

        A run of the hold Dag occupies all PARALLELISM slots of the executor stack, so the
        scheduler cannot queue executor callbacks; the loop time is sampled for W seconds with
        none pending, then W seconds after inserting N PENDING rows cloned from a real
        executor callback.  Both windows have the same busy scheduler; only the pending rows
        differ.
        """
        n = self.options.pending
        if n <= 0 or not self.paths:
            return
        assert self.pg is not None
        stack = self.paths[EXEC].stack
        template = pgmod.latest_executor_callback(self.pg, stack.dbname)
        if template is None:
            self.measured.notes.append("pending window skipped: no executor callback row to clone")
            self.log("pending window skipped: no executor callback row to clone")
            return
        seconds = self._pending_seconds()
        self.log(f"pending window on {stack.name}: occupying all {PARALLELISM} executor slots ...")
        stop_file = stack.root / "hold.stop"
        run_id = self._hold_slots(stack, stop_file, hold_seconds=HOLD_START_TIMEOUT + 2 * seconds + 120)
        info = self.measured.pending
        info.update(hold_run_id=run_id, slots=PARALLELISM, seconds=seconds)
        ids: list[str] = []
        try:
            info["pending_before"] = pgmod.pending_executor_callbacks(self.pg, stack.dbname)
            self.log(f"pending window: {seconds:.0f}s busy, {info['pending_before']} pending ...")
            info["busy_idle"] = self._window(seconds)
            ids = pgmod.insert_pending_callbacks(self.pg, stack.dbname, template, n)
            if len(ids) != n:
                raise StackError(f"pending window: inserted {len(ids)} executor callbacks, expected {n}")
            pending = pgmod.callback_state_counts(self.pg, stack.dbname, ids).get("pending", 0)
            info["pending_count"] = pending
            if pending != n:
                self._note(f"pending window: only {pending} of {n} inserted callbacks were still pending")
            self.log(f"pending window: {seconds:.0f}s busy, {pending} pending ...")
            info["busy_pending"] = self._window(seconds)
            states = pgmod.callback_state_counts(self.pg, stack.dbname, ids)
            info["queued_during_window"] = n - states.get("pending", 0)
            info["states_after"] = states
            running = pgmod.task_state_counts(self.pg, stack.dbname, HOLD_DAG_ID, run_id).get("running", 0)
            info["hold_running_after"] = running
            if running < PARALLELISM:
                self._note(f"pending window: only {running} of {PARALLELISM} hold tasks were still running")
        finally:
            self._release_hold(stack, stop_file, ids)
        self.log(
            f"pending window: {info['queued_during_window']} of {n} pending callbacks were queued "
            "during the window; hold released"
        )
        self._wait_hold_ended(stack, run_id)

    def _pending_seconds(self) -> float:
        seconds = self.options.pending_seconds
        return self.options.idle_seconds if seconds is None else seconds

    def _note(self, message: str) -> None:
        self.measured.notes.append(message)
        self.log(f"WARNING: {message}")

    def _hold_slots(self, stack: Stack, stop_file: Path, hold_seconds: float) -> str:
        """Trigger the hold Dag and wait until all PARALLELISM of its tasks are running."""
        assert self.pg is not None
        stop_file.unlink(missing_ok=True)
        stack.api.set_paused(HOLD_DAG_ID, False)
        conf = {"seconds": hold_seconds, "stop_file": str(stop_file)}
        run = stack.api.request(
            "POST", f"/api/v2/dags/{HOLD_DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
        )
        run_id = str(run["dag_run_id"])
        deadline = time.monotonic() + HOLD_START_TIMEOUT
        while True:
            counts = pgmod.task_state_counts(self.pg, stack.dbname, HOLD_DAG_ID, run_id)
            if counts.get("running", 0) >= PARALLELISM:
                return run_id
            if time.monotonic() > deadline:
                raise StackError(
                    f"pending window: {HOLD_DAG_ID} run {run_id} did not get all {PARALLELISM} tasks "
                    f"running within {HOLD_START_TIMEOUT:.0f}s (task states: {counts or 'none'})",
                    [stack.log_path("scheduler")],
                )
            self._check_alive()
            time.sleep(0.5)

    def _release_hold(self, stack: Stack, stop_file: Path, callback_ids: Sequence[str]) -> None:
        """Delete the inserted callbacks still pending, then let the hold tasks end."""
        try:
            if callback_ids:
                assert self.pg is not None
                deleted = pgmod.delete_pending_callbacks(self.pg, stack.dbname, callback_ids)
                self.measured.pending["deleted_after"] = deleted
        finally:
            stop_file.touch()

    def _wait_hold_ended(self, stack: Stack, run_id: str) -> None:
        """Wait (bounded, not an error) for the released hold run to end, so teardown is quick."""
        assert self.pg is not None
        deadline = time.monotonic() + HOLD_END_TIMEOUT
        while time.monotonic() < deadline:
            state = pgmod.run_state(self.pg, stack.dbname, HOLD_DAG_ID, run_id)
            if state not in ("queued", "running"):
                return
            self._check_alive()
            time.sleep(0.5)
        self.log(
            f"  {HOLD_DAG_ID} run still running {HOLD_END_TIMEOUT:.0f}s after release; teardown stops it"
        )

    def _trigger_retry(self, path: PathSetup) -> str:
        for attempt in range(5):
            try:
                return self._trigger(path)
            except ApiError:
                if attempt == 4:
                    raise
                time.sleep(1.0)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ observing
    def _events(self, path: PathSetup, run_ids: Sequence[str]) -> dict[str, pgmod.EventRow]:
        assert self.pg is not None
        if path.event_source == "deadline":
            return pgmod.deadline_events(self.pg, path.stack.dbname, path.dag_id, run_ids)
        return pgmod.run_end_events(self.pg, path.stack.dbname, path.dag_id, run_ids)

    def _wait_done(self, path: PathSetup, run_ids: Sequence[str], timeout: float, poll: float) -> bool:
        reader = self.readers[path.stack.name]
        deadline = time.monotonic() + timeout
        pending = set(run_ids)
        while True:
            reader.poll()
            pending = {r for r in pending if (path.kind, r) not in reader.records}
            if not pending:
                if path.name == PROC:
                    return True
                if self._all_recorded(path, run_ids):
                    return True
            if time.monotonic() > deadline:
                self.log(f"  timeout: {len(pending)} of {len(run_ids)} callbacks on {path.name} did not run")
                return False
            self._check_alive()
            time.sleep(poll)

    def _all_recorded(self, path: PathSetup, run_ids: Sequence[str]) -> bool:
        assert self.pg is not None
        events = self._events(path, run_ids)
        ids = [e.callback_id for e in events.values() if e.callback_id]
        if len(ids) < len(run_ids):
            return False
        states = pgmod.callback_state_times(self.pg, path.stack.dbname, ids)
        return all({"success", "failed"} & set(states.get(i, {})) for i in ids)

    def _collect(self, path: PathSetup, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        assert self.pg is not None
        reader = self.readers[path.stack.name]
        reader.poll()
        events = self._events(path, run_ids)
        states: dict[str, dict[str, float]] = {}
        if path.name == EXEC:
            ids = [e.callback_id for e in events.values() if e.callback_id]
            states = pgmod.callback_state_times(self.pg, path.stack.dbname, ids)
        records = []
        for run_id in run_ids:
            event = events.get(run_id)
            probe = reader.records.get((path.kind, run_id))
            rec: dict[str, Any] = {
                "run_id": run_id,
                "event_ts": event.event_ts if event else None,
                "started_ts": probe["started"] if probe else None,
                "calls": probe.get("calls", 1) if probe else 0,
            }
            if path.name == PROC:
                rec["recorded_ts"] = probe["ended"] if probe else None
            else:
                st = states.get(event.callback_id, {}) if event and event.callback_id else {}
                rec["callback_id"] = event.callback_id if event else None
                rec["recorded_ts"] = st.get("success") or st.get("failed")
                rec["final_state"] = "success" if "success" in st else ("failed" if "failed" in st else None)
                rec["running_ts"] = st.get("running")
                rec["queued_ts"] = st.get("queued")
                # The executor's share: handed to it (queued) -> its state written back.
                begin = rec["queued_ts"] or rec["running_ts"]
                rec["supervised"] = (rec["recorded_ts"] - begin) if rec["recorded_ts"] and begin else None
            ev = rec["event_ts"]
            rec["started"] = rec["started_ts"] - ev if ev is not None and rec["started_ts"] else None
            rec["recorded"] = rec["recorded_ts"] - ev if ev is not None and rec["recorded_ts"] else None
            records.append(rec)
        return records

    def _loop_samples(self, stack: Stack, since: float, until: float) -> list[float]:
        assert self.listener is not None
        return [s.value for s in self.listener.select(f"bench_{stack.name}.{LOOP_METRIC}", since, until)]

    # -------------------------------------------------------------- results
    def _results(self) -> dict[str, Any]:
        m = self.measured
        results: dict[str, Any] = {"single": {}, "bursts": {}}
        for name in PATHS:
            records = m.single[name]
            results["single"][name] = {
                "n": len(records),
                "missing": sum(1 for r in records if r["started"] is None),
                "started": summarize(r["started"] for r in records),
                "recorded": summarize(r["recorded"] for r in records),
            }
        results["warmup"] = {
            name: {"started": recs[0].get("started"), "recorded": recs[0].get("recorded")}
            for name, recs in m.warmup.items()
            if recs
        }
        for size, per_path in m.bursts.items():
            results["bursts"][size] = {
                name: {k: v for k, v in info.items() if k not in ("records", "window")}
                for name, info in per_path.items()
            }
        results["scheduler_loop"] = self._scheduler_loop_results()
        results["parse_loop"] = self._parse_loop_results()
        if m.percall:
            results["per_callback"] = {
                "supervise_callback": summarize(m.percall["supervise_callback"]),
                "fork_floor": summarize(m.percall["fork_floor"]),
                "dag_callback_parsed_each_time": summarize(
                    m.percall.get("dag_callback_parsed_each_time", [])
                ),
                "dag_callback_fork_server": summarize(m.percall.get("dag_callback_fork_server", [])),
                "cold_first_supervise_callback": m.percall.get("cold_first_supervise_callback"),
            }
        results["tails"] = self._tails()
        return results

    def _scheduler_loop_results(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unit": "ms"}
        if not self.paths or self.listener is None:
            return out
        exec_stack = self.paths[EXEC].stack
        window = self.measured.idle_window.get(exec_stack.name)
        if window:
            out["idle"] = summarize(self._loop_samples(exec_stack, *window))
        pending = self.measured.pending
        for key in ("busy_idle", "busy_pending"):
            if key in pending:
                out[key] = summarize(self._loop_samples(exec_stack, *pending[key]))
        for key, name in PENDING_RESULT_KEYS.items():
            if key in pending:
                out[name] = pending[key]
        if self.measured.bursts:
            largest = max(self.measured.bursts, key=int)
            out["burst_size"] = int(largest)
            for name, key in ((EXEC, "executor_burst"), (PROC, "dag_processor_burst")):
                info = self.measured.bursts[largest].get(name)
                if info:
                    out[key] = info["scheduler_loop_ms"]
                    if name == EXEC:
                        out["peak_pending_executor_callbacks"] = info["peak_pending_executor_callbacks"]
        return out

    def _parse_loop_results(self) -> dict[str, Any]:
        if not self.paths or self.poller is None:
            return {}
        busy: list[tuple[float, float]] = []
        for records in [self.measured.single[PROC]] + [
            b[PROC]["records"] for b in self.measured.bursts.values() if PROC in b
        ]:
            for r in records:
                if r.get("event_ts") and r.get("started_ts"):
                    busy.append((r["event_ts"], r["started_ts"]))
        idle, loaded = [], []
        for begin, end in self.poller.intervals():
            overlaps = any(b0 <= end and b1 >= begin for b0, b1 in busy)
            (loaded if overlaps else idle).append(end - begin)
        return {
            "unit": "s",
            "method": "time between two parses of the same filler file (dag.last_parsed_time)",
            "fillers": self.options.fillers,
            "idle": summarize(idle),
            "with_callbacks": summarize(loaded),
        }

    def _tails(self) -> dict[str, Any]:
        stack_runs = [
            r.get("supervised")
            for r in self.measured.warmup.get(EXEC, [])
            + self.measured.single[EXEC]
            + [r for b in self.measured.bursts.values() if EXEC in b for r in b[EXEC]["records"]]
        ]
        stack_tails = sum(1 for v in stack_runs if v is not None and v >= TAIL_SECONDS)
        percall = self.measured.percall.get("supervise_callback", [])
        percall_tails = sum(1 for v in percall if v >= TAIL_SECONDS)
        return {
            "threshold_seconds": TAIL_SECONDS,
            "count": stack_tails + percall_tails,
            "stack": stack_tails,
            "stack_supervised_runs": sum(1 for v in stack_runs if v is not None),
            "per_callback": percall_tails,
            "per_callback_runs": len(percall),
        }

    def _payload(self, code: int, error: str | None) -> dict[str, Any]:
        results = self._results()
        raw_bursts = {
            size: {
                name: [[r["event_ts"], r["started_ts"], r["recorded_ts"]] for r in info["records"]]
                for name, info in per_path.items()
            }
            for size, per_path in self.measured.bursts.items()
        }
        settings = dict(NON_DEFAULT_SETTINGS)
        if self.paths and self.options.executor_callback == "dag":
            settings["AIRFLOW__CALLBACKS__RUNNER (executor stack)"] = "executor"
        for key, value in self.options.executor_config.items():
            settings[f"{key} (executor stack)"] = value
        return {
            "label": self.options.label,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mode": self.options.mode,
            "exit_code": code,
            "error": error,
            "executor_callback": self.options.executor_callback,
            "airflow_version": _airflow_version(self.options.python),
            "host": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": sys.version.split()[0],
            },
            "options": {
                "events": self.options.events,
                "bursts": list(self.options.bursts),
                "fillers": self.options.fillers,
                "idle_seconds": self.options.idle_seconds,
                "percall_runs": self.options.percall_runs,
                "pending": self.options.pending,
                "pending_seconds": self._pending_seconds(),
            },
            "non_default_settings": settings,
            "stacks": {s.name: {"database": s.dbname, "home": str(s.root)} for s in self.stacks},
            "notes": self.measured.notes,
            "results": results,
            "goals": [g.to_json() for g in evaluate_goals(results)],
            "raw": {"warmup": self.measured.warmup, "single": self.measured.single, "bursts": raw_bursts},
        }

    def _complete(self, payload: dict[str, Any]) -> bool:
        single = payload["results"]["single"]
        return all(single[p]["started"]["n"] > 0 for p in PATHS if self.options.events > 0)

    def _write_outputs(self, payload: dict[str, Any]) -> None:
        from bench_tool.png import render_report, write_png

        if self.options.json_path is not None:
            self.options.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.options.json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
            self.log(f"wrote {self.options.json_path}")
        if self.options.png_path is not None:
            write_png(self.options.png_path, render_report(payload))
            self.log(f"wrote {self.options.png_path}")

    # ------------------------------------------------------------- teardown
    def _teardown(self) -> None:
        for stack in self.stacks:
            if stack.procs:
                survivors = stack.stop()
                if survivors:
                    self.log(f"WARNING: still alive after SIGKILL: {survivors}")
        if self.stacks:
            self.log("all Airflow processes stopped")
        if self.listener is not None:
            self.listener.stop()
        if self.poller is not None:
            self.poller.stop()
        if self.options.keep:
            self.log(f"kept {self.root} and database(s) {', '.join(self.databases)}")
            return
        if self.pg is not None:
            for name in self.databases:
                try:
                    self.pg.drop_database(name)
                except Exception as err:  # noqa: BLE001
                    self.log(f"could not drop database {name}: {err}")
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _airflow_version(python: str) -> str | None:
    try:
        proc = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('apache-airflow-core'))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None
