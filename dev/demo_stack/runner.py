"""Orchestration: set up the home, start the components, trigger, watch, report, tear down."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from demo_stack.airflow_home import DemoHome, airflow_config, child_environment, write_env_file
from demo_stack.api import AirflowApi, ApiError
from demo_stack.markers import MarkerFile, read_marker_file
from demo_stack.metadb import enable_wal, run_callbacks
from demo_stack.ports import LOOPBACK, find_free_port
from demo_stack.procs import ManagedProcess, is_loopback, listening_addresses, stop_processes, tail
from demo_stack.results import (
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    ResultRow,
    exit_code_for,
    failing_rows,
    render_table,
)
from demo_stack.scenarios import (
    RUNS_ON_EXECUTOR,
    SCENARIOS,
    Scenario,
    Tracked,
    build_row,
    derive_processor_state,
)
from demo_stack.stacks import ExecutorStack, StackContext
from demo_stack.stacks.base import ProcessSpec

CORE_COMPONENTS: tuple[ProcessSpec, ...] = (
    # The log servers of scheduler and triggerer would listen on every interface; the
    # api-server reads the local log files directly, so they are not needed.
    ProcessSpec("api-server", ("api-server", "--host", LOOPBACK, "--workers", "1")),
    ProcessSpec("scheduler", ("scheduler", "--skip-serve-logs")),
    ProcessSpec("dag-processor", ("dag-processor",)),
    ProcessSpec("triggerer", ("triggerer", "--skip-serve-logs")),
)

POLL_SECONDS = 1.0
LOG_TAIL_LINES = 40


class DemoError(Exception):
    """The demo could not get to the point of judging callbacks (infrastructure failure)."""

    def __init__(self, message: str, logs: list[Path] | None = None, hint: str = "") -> None:
        super().__init__(message)
        self.logs = logs or []
        self.hint = hint


class Interrupted(BaseException):
    """Raised from the signal handler on SIGINT/SIGTERM/SIGHUP."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Options:
    python: str
    timeout: float = 180.0
    keep: bool = False
    json_path: Path | None = None
    grace: float = 15.0
    color: bool = False


@dataclass
class Timings:
    marks: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        return ", ".join(f"{name} {value:.1f}s" for name, value in self.marks.items())


class DemoRunner:
    """Runs one complete demo for one executor stack."""

    def __init__(
        self,
        options: Options,
        stack: ExecutorStack,
        scenarios: tuple[Scenario, ...] = SCENARIOS,
        out: TextIO = sys.stdout,
    ) -> None:
        self.options = options
        self.stack = stack
        self.scenarios = scenarios
        self.out = out
        self.started = time.monotonic()
        self.deadline = self.started + options.timeout
        self.timings = Timings()
        self.home: DemoHome | None = None
        self.procs: list[ManagedProcess] = []
        self._after_api: list[ProcessSpec] = []
        self.env: dict[str, str] = {}
        self.api: AirflowApi | None = None
        self.ctx: StackContext | None = None
        self.tracked = [Tracked(scenario) for scenario in scenarios]
        self._stopping = False
        self._hurry = False

    # ----------------------------------------------------------------- output
    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[demo {elapsed:6.1f}s] {message}", file=self.out, flush=True)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def mark(self, name: str) -> None:
        self.timings.marks[name] = time.monotonic() - self.started

    # ------------------------------------------------------------- lifecycle
    def run(self) -> int:
        previous = self._install_signal_handlers()
        rows: list[ResultRow] = []
        code = EXIT_INFRA
        try:
            self._setup()
            self._migrate()
            self._start_components()
            self._wait_ready()
            self._trigger()
            self._watch()
            rows = self._collect()
            code = self._report(rows)
        except DemoError as err:
            # Show what was seen before things broke (e.g. a component died mid-run).
            rows = self._partial_table()
            self._report_error(err)
            code = EXIT_INFRA
        except Interrupted as err:
            self.log(f"interrupted ({err}); stopping")
            rows = self._partial_table()
            code = EXIT_INTERRUPTED
        except Exception as err:  # noqa: BLE001 - report anything, then clean up
            self.log(f"unexpected error: {type(err).__name__}: {err}")
            traceback.print_exc(file=self.out)
            code = EXIT_INFRA
        finally:
            self._stopping = True
            self._teardown()
            self._restore_signal_handlers(previous)
        if self.options.json_path is not None:
            self._write_json(rows, code)
        return code

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                previous[signum] = signal.signal(signum, self._on_signal)
            except (ValueError, OSError):  # not the main thread, or unsupported
                continue
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:
            self._hurry = True
            # Already cleaning up: a second signal means "hurry", handled in _teardown.
            self.log(f"got {signal.Signals(signum).name} while stopping; killing without grace")
            return
        raise Interrupted(signum)

    # ---------------------------------------------------------------- phases
    def _setup(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="airflow-demo-"))
        self.home = home = DemoHome(root)
        home.create()
        api_port = find_free_port(LOOPBACK)
        api_url = f"http://{LOOPBACK}:{api_port}"
        self.ctx = StackContext(airflow_home=root, python=self.options.python, api_url=api_url)
        config = airflow_config(home, api_port)
        config.update(self.stack.config(self.ctx))
        self.env = child_environment(os.environ, config)
        self.ctx = dataclasses.replace(self.ctx, env=self.env)
        write_env_file(root / "demo.env", config, self.options.python)
        self.api = AirflowApi(api_url)
        self.log(f"AIRFLOW_HOME={root}")
        self.log(f"executor={self.stack.name}  api={api_url}  python={self.options.python}")
        self.stack.setup(self.ctx)

    def _airflow(self, *args: str) -> list[str]:
        return [self.options.python, "-m", "airflow", *args]

    def _migrate(self) -> None:
        assert self.home is not None
        log_path = self.home.process_log("db-migrate")
        self.log("airflow db migrate (SQLite) ...")
        with open(log_path, "wb") as handle:
            try:
                proc = subprocess.run(
                    self._airflow("db", "migrate"),
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.home.root,
                    timeout=max(1.0, self.remaining()),
                    check=False,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired:
                raise DemoError("airflow db migrate timed out", [log_path]) from None
        if proc.returncode != 0:
            hint = ""
            text = tail(log_path, 400)
            if "in config_templates" in text:
                hint = (
                    "The Task SDK cannot find Airflow's config.yml. This happens with an editable "
                    "install of the task-sdk sdist outside the Airflow monorepo; install the sdists "
                    "non-editable, or use the repository's .venv (dev/series env)."
                )
            raise DemoError(f"airflow db migrate failed (exit {proc.returncode})", [log_path], hint)
        try:
            mode = enable_wal(self.home.db)
        except sqlite3.Error as err:
            mode = f"unchanged ({err})"
        self.log(f"metadata DB ready: {self.home.db} (journal mode {mode})")
        self.mark("db migrate")

    def _start_components(self) -> None:
        assert self.home is not None and self.ctx is not None
        specs = list(CORE_COMPONENTS) + self.stack.extra_processes(self.ctx)
        self._after_api = [spec for spec in specs if spec.after_api]
        self._start([spec for spec in specs if not spec.after_api])

    def _start(self, specs: list[ProcessSpec]) -> None:
        assert self.home is not None
        for spec in specs:
            proc = ManagedProcess(
                spec.name, self._airflow(*spec.airflow_args), self.home.process_log(spec.name)
            )
            proc.start({**self.env, **spec.env}, cwd=self.home.root)
            self.procs.append(proc)
            self.log(f"started {spec.name} (pid {proc.pid}, log {proc.log_path})")

    def _check_components(self) -> None:
        for proc in self.procs:
            code = proc.returncode()
            if code is not None:
                raise DemoError(f"{proc.name} exited with code {code}", [proc.log_path])

    def _sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.remaining())))

    def _wait_ready(self) -> None:
        assert self.api is not None
        health: dict[str, Any] | None = None
        while health is None:
            self._check_components()
            if self.remaining() <= 0:
                raise DemoError("timed out waiting for the api-server", [self._proc("api-server").log_path])
            try:
                health = self.api.health()
            except ApiError:
                self._sleep(POLL_SECONDS)
        status = {name: str(value.get("status")) for name, value in health.items() if isinstance(value, dict)}
        self.log("api-server up; health: " + ", ".join(f"{k}={v}" for k, v in sorted(status.items())))
        self.mark("api-server healthy")
        # Processes that talk to the api-server from their start (an edge worker registers).
        if self._after_api:
            self.api.warm_execution_api()
        self._start(self._after_api)
        self._check_listeners()

        pending = {scenario.dag_id for scenario in self.scenarios}
        self.log(f"waiting for the Dag Processor to parse {', '.join(sorted(pending))} ...")
        while pending:
            self._check_components()
            if self.remaining() <= 0:
                raise DemoError(
                    f"timed out waiting for Dags to be parsed: {', '.join(sorted(pending))}",
                    [self._proc("dag-processor").log_path],
                )
            for dag_id in sorted(pending):
                try:
                    self.api.get_dag(dag_id)
                except ApiError as err:
                    if err.status != 404:
                        self.log(f"GET dag {dag_id}: {err}")
                    continue
                pending.discard(dag_id)
                self.log(f"Dag {dag_id} parsed")
            if pending:
                self._raise_on_import_errors()
                self._sleep(POLL_SECONDS)
        self.mark("dags parsed")

    def _raise_on_import_errors(self) -> None:
        assert self.api is not None
        try:
            errors = self.api.import_errors()
        except ApiError:
            return
        ours = {scenario.dag_file for scenario in self.scenarios}
        relevant = [err for err in errors if Path(str(err.get("filename", ""))).name in ours]
        if relevant:
            text = "\n".join(f"{err.get('filename')}:\n{err.get('stack_trace')}" for err in relevant)
            raise DemoError(f"demo Dags failed to import:\n{text}", [self._proc("dag-processor").log_path])

    def _check_listeners(self) -> None:
        pids: set[int] = set()
        for proc in self.procs:
            pids.update(proc.remaining())
        for pid, ip, port in listening_addresses(pids):
            if is_loopback(ip):
                continue
            self.log(f"WARNING: pid {pid} listens on {ip}:{port}, not only on loopback")

    def _proc(self, name: str) -> ManagedProcess:
        for proc in self.procs:
            if proc.name == name:
                return proc
        raise KeyError(name)

    def _trigger(self) -> None:
        assert self.api is not None
        for tracked in self.tracked:
            dag_id = tracked.scenario.dag_id
            try:
                self.api.set_paused(dag_id, False)
                tracked.trigger_ts = time.time()
                run = self.api.trigger(dag_id)
            except ApiError as err:
                raise DemoError(
                    f"could not unpause/trigger {dag_id}: {err}", [self.procs[0].log_path]
                ) from None
            tracked.run_id = str(run["dag_run_id"])
            tracked.run_state = run.get("state")
            self.log(f"triggered {dag_id}: run_id={tracked.run_id}")
        self.mark("triggered")

    def _observe(self, tracked: Tracked, marker_file: MarkerFile) -> None:
        assert self.api is not None and self.home is not None
        scenario = tracked.scenario
        if tracked.run_id is None:
            return
        # On an error keep the last known state; the api-server may be briefly busy.
        with contextlib.suppress(ApiError):
            tracked.run_state = self.api.get_run(scenario.dag_id, tracked.run_id).get("state")
        tracked.marker = marker_file.find(scenario.name, tracked.run_id)
        if scenario.runs_on == RUNS_ON_EXECUTOR:
            try:
                rows = run_callbacks(self.home.db, scenario.dag_id, tracked.run_id)
            except sqlite3.Error:
                rows = None  # busy; try again next poll
            if rows:
                tracked.callback = rows[0]
        else:
            tracked.processor_log = self._processor_log_for(scenario.dag_file)
            text = ""
            if tracked.processor_log is not None:
                text = tail(tracked.processor_log, lines=100_000, max_bytes=2_000_000)
            tracked.processor_state = derive_processor_state(tracked.marker is not None, text)

    def _processor_log_for(self, dag_file: str) -> Path | None:
        """The Dag Processor's per-file log: ``<dir>/<date>/<bundle>/<relative path>.log``."""
        assert self.home is not None
        candidates = [
            path
            for path in self.home.dag_processor_logs.glob(f"*/*/{dag_file}.log")
            if path.parent.parent.name != "latest"
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda path: path.stat().st_mtime)

    def _watch(self) -> None:
        self.log(f"watching runs and callbacks (timeout in {max(0.0, self.remaining()):.0f}s)")
        last: dict[str, dict[str, str]] = {}
        while True:
            assert self.home is not None
            marker_file = read_marker_file(self.home.marker_file)
            for tracked in self.tracked:
                self._observe(tracked, marker_file)
                snap = tracked.snapshot()
                previous = last.get(tracked.scenario.name, {})
                changes = [f"{key} {value}" for key, value in snap.items() if previous.get(key) != value]
                if changes:
                    since = time.time() - (tracked.trigger_ts or time.time())
                    self.log(f"{tracked.scenario.name:<15} +{since:5.1f}s  " + ", ".join(changes))
                    last[tracked.scenario.name] = snap
            if all(tracked.settled() for tracked in self.tracked):
                self.mark("callbacks settled")
                return
            self._check_components()
            if self.remaining() <= 0:
                self.log("timed out waiting for callbacks; reporting what was seen")
                return
            self._sleep(POLL_SECONDS)

    def _collect(self) -> list[ResultRow]:
        assert self.home is not None and self.ctx is not None
        rows = []
        for tracked in self.tracked:
            scenario = tracked.scenario
            callback_log = None
            if scenario.runs_on == RUNS_ON_EXECUTOR:
                executor = self.stack.executor_label(tracked.callback.executor if tracked.callback else None)
                if tracked.callback is not None and tracked.run_id is not None:
                    callback_log = self.home.executor_callback_log(
                        scenario.dag_id, tracked.run_id, tracked.callback.id
                    )
                tracked.extra_logs = [
                    path for path in (self.home.process_log("scheduler"), callback_log) if path is not None
                ]
            else:
                executor = "dag-processor"
                tracked.extra_logs = [self.home.process_log("dag-processor")]
                if tracked.processor_log is not None:
                    tracked.extra_logs.append(tracked.processor_log)
            rows.append(build_row(tracked, executor, callback_log))
        return rows

    # --------------------------------------------------------------- report
    def _report(self, rows: list[ResultRow]) -> int:
        print(file=self.out)
        print(render_table(rows, color=self.options.color), file=self.out)
        print(file=self.out)
        code = exit_code_for(rows)
        for row in failing_rows(rows):
            self.log(f"FAILED: {row.callback} ended {row.state!r}, expected {row.expected!r}")
            for path in row.relevant_logs:
                self._print_tail(Path(path))
        self.log(f"timings: {self.timings.summary()}")
        self.log("result: " + ("all callbacks ran as expected" if code == 0 else "some callbacks did not"))
        return code

    def _partial_table(self) -> list[ResultRow]:
        """Print and return the rows seen so far, if anything was triggered."""
        if not any(tracked.run_id for tracked in self.tracked):
            return []
        rows = self._collect()
        print("\n" + render_table(rows, color=self.options.color) + "\n", file=self.out, flush=True)
        return rows

    def _report_error(self, err: DemoError) -> None:
        self.log(f"ERROR: {err}")
        if err.hint:
            self.log(f"hint: {err.hint}")
        for path in err.logs:
            self._print_tail(path)

    def _print_tail(self, path: Path) -> None:
        text = tail(path, LOG_TAIL_LINES) if path.is_file() else ""
        print(f"----- last {LOG_TAIL_LINES} lines of {path} -----", file=self.out)
        print(text or "(empty or missing)", file=self.out)
        print("-----", file=self.out, flush=True)

    def _write_json(self, rows: list[ResultRow], code: int) -> None:
        assert self.options.json_path is not None
        payload = {
            "executor": self.stack.name,
            "exit_code": code,
            "airflow_home": str(self.home.root) if self.home else None,
            "kept": self.options.keep,
            "timings": self.timings.marks,
            "runs": [
                {"dag_id": t.scenario.dag_id, "run_id": t.run_id, "state": t.run_state} for t in self.tracked
            ],
            "rows": [row.to_json() for row in rows],
        }
        self.options.json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    # -------------------------------------------------------------- teardown
    def _teardown(self) -> None:
        if self.procs:
            self.log(f"stopping {len(self.procs)} components (grace {self.options.grace:.0f}s) ...")
            by_name = {proc.name: proc for proc in self.procs}
            groups = [[by_name[name] for name in group] for group in self.stack.stop_groups(list(by_name))]
            grouped = {proc.name for group in groups for proc in group}
            groups.append([proc for proc in self.procs if proc.name not in grouped])
            survivors = []
            for group in groups:
                survivors += stop_processes(
                    group, grace=self.options.grace, log=self.log, hurry=lambda: self._hurry
                )
            if survivors:
                self.log(f"WARNING: processes still alive after SIGKILL: {survivors}")
            else:
                self.log("all components stopped")
        if self.ctx is not None:
            try:
                self.stack.teardown(self.ctx)
            except Exception as err:  # noqa: BLE001
                self.log(f"stack teardown failed: {err}")
        if self.home is not None:
            if self.options.keep:
                self.log(f"kept AIRFLOW_HOME at {self.home.root} (source {self.home.root / 'demo.env'})")
            else:
                shutil.rmtree(self.home.root, ignore_errors=True)
                self.log("removed the throwaway AIRFLOW_HOME and its logs (run with --keep to keep them)")
