"""The EdgeExecutor harness without Airflow: configuration, worker arguments, stop order, log lookup."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callback_e2e.stack import AirflowStack, callback_log_files
from demo_stack.procs import ManagedProcess
from edge_e2e import EDGE_EXECUTOR, EdgeStack, executor_config, worker_args, worker_log_folder


@pytest.fixture
def stack():
    stack = EdgeStack(sys.executable, "postgres", {"AIRFLOW__EDGE__JOB_POLL_INTERVAL": "3"})
    yield stack
    shutil.rmtree(stack.root, ignore_errors=True)


def test_executor_config_points_workers_at_the_api_server():
    config = executor_config("http://127.0.0.1:8123/")
    assert config["AIRFLOW__CORE__EXECUTOR"] == EDGE_EXECUTOR
    assert config["AIRFLOW__EDGE__API_ENABLED"] == "True"
    assert config["AIRFLOW__EDGE__API_URL"] == "http://127.0.0.1:8123/edge_worker/v1/rpcapi"
    assert "EdgeDBManager" in config["AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS"]


def test_worker_args_name_hostname_queues_and_concurrency(tmp_path):
    args = worker_args("edge-e2e-a", tmp_path / "a.pid", ("default", "other"), concurrency=3)
    assert args[:2] == ("edge", "worker")
    assert args[args.index("--queues") + 1] == "default,other"
    assert args[args.index("--edge-hostname") + 1] == "edge-e2e-a"
    assert args[args.index("--concurrency") + 1] == "3"
    assert args[args.index("--pid") + 1] == str(tmp_path / "a.pid")
    assert worker_log_folder(tmp_path, "a") != worker_log_folder(tmp_path, "b")


def test_stack_config_own_names_and_log_folders(stack):
    assert stack.root.name.startswith("edge-e2e-")
    assert stack.db_name.startswith("edge_e2e_")
    assert stack.config["AIRFLOW__CORE__EXECUTOR"] == EDGE_EXECUTOR
    assert stack.config["AIRFLOW__EDGE__API_URL"].endswith(f":{stack.api_port}/edge_worker/v1/rpcapi")
    # The caller's configuration wins over the harness defaults.
    assert stack.config["AIRFLOW__EDGE__JOB_POLL_INTERVAL"] == "3"
    api_logs = stack.component_config["api-server"]["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]
    assert api_logs == str(stack.api_log_folder)
    folders = {api_logs, stack.config["AIRFLOW__LOGGING__BASE_LOG_FOLDER"], str(stack.worker_log_folder("w"))}
    assert len(folders) == 3
    assert stack.hostname("a") != stack.hostname("b")


def test_component_config_reaches_the_component(monkeypatch):
    seen: dict[str, dict[str, str]] = {}

    def fake_start(self, env, cwd=None):
        seen[self.name] = dict(env)

    monkeypatch.setattr(ManagedProcess, "start", fake_start)
    stack = AirflowStack(sys.executable)
    try:
        stack.component_config["probe"] = {"AIRFLOW__PROBE__A": "component", "AIRFLOW__PROBE__B": "component"}
        stack.start("probe", "version", config={"AIRFLOW__PROBE__B": "call"})
        stack.start("plain", "version")
    finally:
        shutil.rmtree(stack.root, ignore_errors=True)
    assert seen["probe"]["AIRFLOW__PROBE__A"] == "component"
    assert seen["probe"]["AIRFLOW__PROBE__B"] == "call"
    assert "AIRFLOW__PROBE__A" not in seen["plain"]


def test_stop_groups_workers_first_api_server_last(stack, tmp_path):
    for name in ("api-server", "dag-processor", "scheduler", "worker", "other"):
        stack.procs[name] = ManagedProcess(name, ["true"], tmp_path / f"{name}.log")
    stack.workers = {"worker": ("default",), "other": ("other",)}
    assert stack.stop_groups() == [["worker", "other"], ["dag-processor", "scheduler"], ["api-server"]]


def test_stop_groups_of_the_plain_stack_stop_everything_at_once(tmp_path):
    stack = AirflowStack(sys.executable)
    try:
        for name in ("api-server", "scheduler"):
            stack.procs[name] = ManagedProcess(name, ["true"], tmp_path / f"{name}.log")
        assert stack.stop_groups() == [["api-server", "scheduler"]]
    finally:
        shutil.rmtree(stack.root, ignore_errors=True)


def test_exit_stops_in_order_even_when_a_component_is_dead(stack, tmp_path):
    """Every group is stopped (a dead worker included), and the home is removed."""
    stopped: list[str] = []
    for name in ("api-server", "scheduler", "worker"):
        proc = ManagedProcess(name, [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / name)
        proc.start({})
        stack.procs[name] = proc
    stack.workers = {"worker": ("default",)}
    stack.procs["worker"].popen.kill()
    stack.procs["worker"].popen.wait()
    stack.db_name = None  # no database was created
    original = stack.stop_groups

    def spy() -> list[list[str]]:
        groups = original()
        stopped.extend(name for group in groups for name in group)
        return groups

    stack.stop_groups = spy
    stack.__exit__(None, None, None)
    assert stopped == ["worker", "scheduler", "api-server"]
    assert not any(proc.alive() for proc in stack.procs.values())
    assert not stack.root.exists()


def test_callback_log_files_are_found_by_callback_id(tmp_path):
    log = tmp_path / "executor_callbacks" / "dag" / "run" / "0123-id"
    log.parent.mkdir(parents=True)
    log.write_text("Callback executed successfully\n")
    assert callback_log_files(tmp_path, "0123-id") == [log]
    assert callback_log_files(tmp_path, "other") == []
    assert callback_log_files(tmp_path / "missing", "0123-id") == []


def test_warm_execution_api_asks_the_execution_api_once_and_waits_for_it():
    """The warm-up is one GET of the execution API's health, with a timeout longer than the default."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from demo_stack.api import AirflowApi

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            time.sleep(0.3)  # longer than the client's default timeout below
            body = b'{"status": "healthy"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        AirflowApi(f"http://127.0.0.1:{server.server_port}", timeout=0.1).warm_execution_api(timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["/execution/health"]
