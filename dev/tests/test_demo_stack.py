"""Tests for dev/demo_stack (the orchestrator behind scripts/demo).

Unit tests need only the standard library and pytest.  The end-to-end test runs
``scripts/demo`` for real; it is marked ``e2e`` (deselect with ``-m "not e2e"``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

# pyproject.toml puts dev/ on sys.path for pytest; this also covers other invocations.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo_stack import cli, ports, procs
from demo_stack.airflow_home import DemoHome, airflow_config, child_environment, fernet_key
from demo_stack.markers import MarkerRecord, parse_marker_line, parse_marker_text, read_marker_file
from demo_stack.metadb import CallbackRow, deadline_callbacks, normalize_uuid, run_callbacks
from demo_stack.results import EXIT_USAGE, ResultRow, exit_code_for, failing_rows, render_table
from demo_stack.scenarios import (
    RUNS_ON_DAG_PROCESSOR,
    RUNS_ON_EXECUTOR,
    SCENARIOS,
    Scenario,
    Tracked,
    build_row,
    derive_processor_state,
    final_processor_state,
)
from demo_stack.stacks import PLANNED, LocalExecutorStack, StackContext, UnsupportedExecutor, get_stack

REPO = Path(__file__).resolve().parents[2]
DEADLINE, DAG_ON_FAILURE, TASK_ON_FAILURE = SCENARIOS
# The Dag Processor path the demo no longer takes by default (``[callbacks] runner = dag_processor``).
ON_FAILURE = Scenario(
    name="dag_on_failure",
    dag_id="demo_dag_on_failure",
    dag_file="demo_dag_on_failure.py",
    kind="dag on_failure_callback",
    runs_on=RUNS_ON_DAG_PROCESSOR,
    expected_run_state="failed",
)


def _row(**overrides) -> ResultRow:
    values = {
        "callback": "deadline_alert",
        "kind": "deadline alert",
        "executor": "LocalExecutor",
        "state": "success",
        "expected": "success",
        "seconds": 12.34,
        "pid": 4242,
        "log": "/tmp/x/logs/executor_callbacks/d/r/c",
        "marker_seen": True,
    }
    values.update(overrides)
    return ResultRow(**values)


# --------------------------------------------------------------------------- ports


def test_find_free_port_is_bindable_on_loopback():
    port = ports.find_free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_find_free_ports_are_distinct():
    found = ports.find_free_ports(5)
    assert len(set(found)) == 5


def test_is_port_free_detects_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not ports.is_port_free(port)
    assert ports.is_port_free(ports.find_free_port())


# ------------------------------------------------------------------------- markers


def test_parse_marker_line_roundtrip():
    line = json.dumps({"name": "deadline_alert", "ts": 1.5, "pid": 7, "run_id": "r1", "dag_id": "d", "x": 1})
    record = parse_marker_line(line)
    assert record == MarkerRecord(
        name="deadline_alert", ts=1.5, pid=7, dag_id="d", run_id="r1", extra={"x": 1}
    )


@pytest.mark.parametrize(
    "line",
    ["", "   ", "not json", "[1, 2]", '{"name": "a", "ts": 1}', '{"name": "a", "ts": "soon", "pid": 1}'],
)
def test_parse_marker_line_rejects_bad_lines(line):
    assert parse_marker_line(line) is None


def test_parse_marker_text_keeps_bad_lines_and_finds_by_run():
    text = "\n".join(
        [
            json.dumps({"name": "dag_on_failure", "ts": 1, "pid": 1, "run_id": "old"}),
            "garbage {",
            json.dumps({"name": "dag_on_failure", "ts": 2, "pid": 2, "run_id": "new"}),
            json.dumps({"name": "deadline_alert", "ts": 3, "pid": 3}),
            "",
        ]
    )
    parsed = parse_marker_text(text)
    assert len(parsed.records) == 3
    assert parsed.bad_lines == ["garbage {"]
    assert parsed.find("dag_on_failure", "new").pid == 2
    assert parsed.find("dag_on_failure", "missing-run") is None
    # A record without run_id matches any run.
    assert parsed.find("deadline_alert", "whatever").pid == 3
    assert parsed.find("nope") is None


def test_read_marker_file_missing_is_empty(tmp_path):
    parsed = read_marker_file(tmp_path / "absent.jsonl")
    assert parsed.records == [] and parsed.bad_lines == []


def test_demo_callback_module_writes_marker(tmp_path, monkeypatch):
    """The callbacks shipped in the dags folder append parsable marker lines."""
    marker = tmp_path / "markers.jsonl"
    monkeypatch.setenv("AIRFLOW_DEMO_MARKER_FILE", str(marker))
    monkeypatch.syspath_prepend(str(REPO / "dev" / "demo_stack" / "dags"))
    sys.modules.pop("demo_callbacks", None)
    import demo_callbacks

    demo_callbacks.on_deadline_missed(
        name="deadline_alert",
        context={"dag_run": {"dag_id": "d", "dag_run_id": "r"}, "deadline": {"deadline_time": "t"}},
    )

    class _Run:
        dag_id = "d2"
        run_id = "r2"

    demo_callbacks.on_dag_failure({"dag_run": _Run(), "reason": "task_failure"})
    parsed = read_marker_file(marker)
    assert [(r.name, r.dag_id, r.run_id, r.pid) for r in parsed.records] == [
        ("deadline_alert", "d", "r", os.getpid()),
        ("dag_on_failure", "d2", "r2", os.getpid()),
    ]
    monkeypatch.delenv("AIRFLOW_DEMO_MARKER_FILE")
    with pytest.raises(RuntimeError, match="AIRFLOW_DEMO_MARKER_FILE"):
        demo_callbacks.on_dag_failure({})


# ---------------------------------------------------------- table and exit code


def test_render_table_lists_rows_and_headers():
    rows = [
        _row(),
        _row(
            callback="dag_on_failure",
            kind="dag on_failure_callback",
            executor="dag-processor",
            seconds=None,
            pid=None,
            log="",
        ),
    ]
    text = render_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["callback", "kind", "executor", "state", "secs", "pid", "log"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].startswith("OK") and "12.3" in lines[2] and "4242" in lines[2]
    assert "dag-processor" in lines[3] and " - " in lines[3]
    assert "\033[" not in text
    assert all(line == line.rstrip() for line in lines)


def test_render_table_highlights_failures():
    rows = [_row(), _row(callback="bad", state="failed", detail="callback output: boom")]
    plain = render_table(rows)
    assert "FAIL  bad" in plain
    assert "failed (want success)" in plain
    assert "bad: callback output: boom" in plain
    colored = render_table(rows, color=True)
    assert "\033[31;1mFAIL" in colored
    assert "\033[32mOK" in colored


def test_row_ok_requires_state_and_marker():
    assert _row().ok
    assert not _row(state="failed").ok
    assert not _row(marker_seen=False).ok
    assert "success (no marker)" in render_table([_row(marker_seen=False)])


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ([], 1),
        ([_row()], 0),
        ([_row(), _row(callback="x", expected="success", state="missing")], 1),
        ([_row(state="running")], 1),
    ],
)
def test_exit_code_for(rows, code):
    assert exit_code_for(rows) == code
    assert len(failing_rows(rows)) == sum(1 for row in rows if not row.ok)


def test_row_json_has_ok_flag():
    data = _row(state="failed").to_json()
    assert data["ok"] is False and data["state"] == "failed"
    json.dumps(data)


# --------------------------------------------------------------- state evaluation


@pytest.mark.parametrize(
    ("marker", "log", "state"),
    [
        (True, None, "success"),
        (True, "Callback failed", "success"),
        (False, '{"event":"Callback failed","dag_id":"x"}', "failed"),
        (False, "Failed to execute callback request", "failed"),
        (False, "Executing on_failure dag callback", "running"),
        (False, "Filling up the DagBag", "pending"),
        (False, None, "pending"),
    ],
)
def test_derive_processor_state(marker, log, state):
    assert derive_processor_state(marker, log) == state


@pytest.mark.parametrize(
    ("state", "final"),
    [
        ("success", "success"),
        ("failed", "failed"),
        ("running", "missing"),
        ("pending", "missing"),
        (None, "missing"),
    ],
)
def test_final_processor_state(state, final):
    assert final_processor_state(state) == final


def _callback(state: str | None, output: str | None = None) -> CallbackRow:
    return CallbackRow(
        id=str(uuid.uuid4()), type="executor", state=state, output=output, data={"executor": None}
    )


def test_tracked_settled_rules():
    tracked = Tracked(DEADLINE, run_id="r", run_state="running", callback=_callback("success"))
    assert not tracked.settled()  # the run is still going
    tracked.run_state = "success"
    assert tracked.settled()
    tracked.callback = _callback("running")
    assert not tracked.settled()

    failure = Tracked(ON_FAILURE, run_id="r", run_state="failed", processor_state="pending")
    assert not failure.settled()
    failure.processor_state = "success"
    assert failure.settled()
    # A run that unexpectedly succeeds will never produce an on_failure_callback.
    assert Tracked(ON_FAILURE, run_id="r", run_state="success", processor_state="pending").settled()


def test_build_row_executor_success(tmp_path):
    log = tmp_path / "cb.log"
    log.write_text("x")
    marker = MarkerRecord(name="deadline_alert", ts=110.0, pid=99)
    tracked = Tracked(
        DEADLINE,
        run_id="r",
        trigger_ts=100.0,
        run_state="success",
        callback=_callback("success"),
        marker=marker,
    )
    row = build_row(tracked, "LocalExecutor", log)
    assert row.ok
    assert (row.state, row.executor, row.seconds, row.pid, row.log) == (
        "success",
        "LocalExecutor",
        10.0,
        99,
        str(log),
    )
    assert row.detail == ""


def test_build_row_executor_failed_shows_output(tmp_path):
    tracked = Tracked(
        DEADLINE,
        run_id="r",
        trigger_ts=1.0,
        run_state="success",
        callback=_callback("failed", "Execution failed"),
    )
    row = build_row(tracked, "LocalExecutor", tmp_path / "missing")
    assert not row.ok
    assert row.state == "failed"
    assert "Execution failed" in row.detail
    assert row.log.endswith("(not found)")
    assert row.seconds is None


def test_build_row_executor_without_callback_row():
    row = build_row(Tracked(DEADLINE, run_id="r", run_state="running"), "LocalExecutor", None)
    assert row.state == "missing" and not row.ok
    assert "no callback row" in row.detail and "still running" in row.detail


def test_build_row_processor_states(tmp_path):
    proc_log = tmp_path / "demo_dag_on_failure.py.log"
    proc_log.write_text("")
    ok = build_row(
        Tracked(
            ON_FAILURE,
            run_id="r",
            trigger_ts=0.0,
            run_state="failed",
            processor_state="success",
            processor_log=proc_log,
            marker=MarkerRecord(name="dag_on_failure", ts=5.0, pid=1),
        ),
        "ignored",
        None,
    )
    assert ok.ok and ok.executor == "dag-processor" and ok.log == str(proc_log)

    missing = build_row(
        Tracked(ON_FAILURE, run_id="r", run_state="failed", processor_state="running"), "ignored", None
    )
    assert missing.state == "missing" and not missing.ok and missing.log == "-"

    never = build_row(Tracked(ON_FAILURE), "ignored", None)
    assert "never triggered" in never.detail


# ------------------------------------------------------------ process groups


def _wait_gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    try:
        stat = procs.parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.state not in ("Z", "X")


def _start_group(tmp_path: Path, script: str) -> tuple[procs.ManagedProcess, list[int]]:
    pid_file = tmp_path / "children.pids"
    proc = procs.ManagedProcess(
        "sleeper", ["bash", "-c", script, "sleeper", str(pid_file)], tmp_path / "s.log"
    )
    proc.start(os.environ)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pid_file.exists() and len(pid_file.read_text().split()) >= 2:
            break
        time.sleep(0.05)
    children = [int(pid) for pid in pid_file.read_text().split()]
    assert proc.pid is not None
    return proc, [proc.pid, *children]


def test_stop_processes_terminates_whole_group(tmp_path):
    proc, pids = _start_group(tmp_path, 'sleep 300 & echo $! >> "$1"; sleep 300 & echo $! >> "$1"; wait')
    assert all(_alive(pid) for pid in pids)
    assert set(pids) <= set(proc.remaining())
    start = time.monotonic()
    survivors = procs.stop_processes([proc], grace=5)
    assert survivors == []
    assert time.monotonic() - start < 5
    assert not any(_alive(pid) for pid in pids)
    assert proc.returncode() is not None


def test_stop_processes_escalates_to_sigkill(tmp_path):
    # The group ignores SIGTERM, and one child moves to a process group of its own (as
    # Task SDK task runners do); both must still be gone afterwards.
    script = (
        "trap '' TERM; "
        'sleep 300 & echo $! >> "$1"; '
        "python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(300)' & echo $! >> \"$1\"; "
        "while true; do sleep 1; done"
    )
    proc, pids = _start_group(tmp_path, script)
    messages: list[str] = []
    start = time.monotonic()
    survivors = procs.stop_processes([proc], grace=1, log=messages.append)
    assert survivors == []
    assert 1 <= time.monotonic() - start < 8
    assert any("SIGKILL" in message for message in messages)
    assert _wait_gone(pids)
    assert proc.returncode() == -signal.SIGKILL


def test_stop_processes_hurry_cuts_grace_short(tmp_path):
    proc, pids = _start_group(tmp_path, 'trap "" TERM; sleep 300 & echo $! >> "$1"; echo $$ >> "$1"; wait')
    start = time.monotonic()
    assert procs.stop_processes([proc], grace=60, hurry=lambda: True) == []
    assert time.monotonic() - start < 8
    assert _wait_gone(pids)


def test_stop_processes_ignores_never_started(tmp_path):
    assert procs.stop_processes([procs.ManagedProcess("x", ["true"], tmp_path / "x.log")]) == []


def test_parse_proc_stat_with_odd_command_name():
    stat = procs.parse_proc_stat("123 (we ird) (name)) S 1 456 789 0 -1 4194560 100 0 0 0")
    assert (stat.pid, stat.state, stat.ppid, stat.pgrp, stat.session) == (123, "S", 1, 456, 789)


def test_tail(tmp_path):
    path = tmp_path / "log"
    path.write_text("\n".join(str(i) for i in range(100)))
    assert procs.tail(path, 3) == "97\n98\n99"
    assert procs.tail(tmp_path / "missing") == ""


def test_parse_listening_sockets():
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1\n"
        "   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1\n"
        "   2: 0100007F:1F92 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3333 1\n"
    )
    assert procs.parse_listening_sockets(table) == {1111: ("127.0.0.1", 8080), 2222: ("0.0.0.0", 8081)}
    assert procs.is_loopback("127.0.0.1") and not procs.is_loopback("0.0.0.0")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_listening_addresses_finds_own_socket():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert (os.getpid(), "127.0.0.1", port) in procs.listening_addresses([os.getpid()])


# ------------------------------------------------------------- configuration


def test_child_environment_scrubs_callers_airflow_settings():
    base = {
        "PATH": "/bin",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW_HOME": "/home/me/airflow",
        "AIRFLOW_CONN_X": "y",
        "PYTHONPATH": "/somewhere",
    }
    env = child_environment(base, {"AIRFLOW_HOME": "/tmp/demo"})
    assert env["PATH"] == "/bin" and env["AIRFLOW_HOME"] == "/tmp/demo"
    assert "AIRFLOW__CORE__EXECUTOR" not in env and "AIRFLOW_CONN_X" not in env and "PYTHONPATH" not in env


def test_airflow_config_is_loopback_only_and_all_admin(tmp_path):
    home = DemoHome(tmp_path)
    config = airflow_config(home, 12345)
    assert config["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert config["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:12345"
    assert config["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:12345/execution/"
    assert config["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "True"
    assert config["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert config["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path}/airflow.db"
    assert config["AIRFLOW_DEMO_MARKER_FILE"] == str(home.marker_file)
    import base64

    assert len(base64.urlsafe_b64decode(fernet_key())) == 32


def test_demo_home_create_copies_dags(tmp_path):
    home = DemoHome(tmp_path / "home")
    home.create()
    names = {path.name for path in home.dags.iterdir()}
    assert {
        "demo_deadline_alert.py",
        "demo_dag_on_failure.py",
        "demo_callbacks.py",
        ".airflowignore",
    } <= names
    assert "demo_callbacks.py" in (home.dags / ".airflowignore").read_text()
    assert home.process_logs.is_dir() and home.dag_processor_logs.is_dir()
    assert home.executor_callback_log("d", "r", "c") == home.logs / "executor_callbacks" / "d" / "r" / "c"


# ------------------------------------------------------------------ metadata DB


def test_demo_runs_the_dag_callback_on_the_executor():
    assert DAG_ON_FAILURE.runs_on == RUNS_ON_EXECUTOR
    config = airflow_config(DemoHome(Path("/tmp/x")), 8080)
    assert config["AIRFLOW__CALLBACKS__RUNNER"] == "executor"


def _callback_tables(db: Path) -> sqlite3.Connection:
    """The columns of dag_run, callback and deadline the demo reads, in a fresh SQLite file."""
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE dag_run (id INTEGER PRIMARY KEY, dag_id TEXT, run_id TEXT);
        CREATE TABLE callback (id CHAR(32) PRIMARY KEY, type TEXT, state TEXT, output TEXT, data TEXT,
                               created_at TEXT);
        CREATE TABLE deadline (id CHAR(32), dagrun_id INTEGER, callback_id CHAR(32));
        """
    )
    return conn


def test_run_callbacks_reads_deadline_and_dag_run_callbacks(tmp_path):
    db = tmp_path / "airflow.db"
    conn = _callback_tables(db)
    dag_cb, other = uuid.uuid4(), uuid.uuid4()

    def serialized(**data):
        return json.dumps({"__type": "dict", "__var": data})

    conn.execute(
        "INSERT INTO callback VALUES (?, 'executor', 'failed', 'why', ?, '2026-01-01')",
        (dag_cb.hex, serialized(kind="dag_run", dag_id="d", run_id="r1", executor="LocalExecutor")),
    )
    conn.execute(
        "INSERT INTO callback VALUES (?, 'executor', 'success', NULL, ?, '2026-01-02')",
        (other.hex, serialized(kind="dag_run", dag_id="d", run_id="r2")),
    )
    conn.commit()
    conn.close()

    (row,) = run_callbacks(db, "d", "r1")
    assert (row.id, row.state, row.output, row.executor) == (str(dag_cb), "failed", "why", "LocalExecutor")
    assert run_callbacks(db, "other", "r1") == []


def test_deadline_callbacks_reads_callback_rows(tmp_path):
    db = tmp_path / "airflow.db"
    conn = _callback_tables(db)
    cb_id = uuid.uuid4()
    conn.execute("INSERT INTO dag_run VALUES (1, 'demo_deadline_alert', 'run1'), (2, 'other', 'run1')")
    conn.execute(
        "INSERT INTO callback VALUES (?, 'executor', 'success', NULL, ?, '2026-01-01')",
        (cb_id.hex, json.dumps({"executor": None, "path": "demo_callbacks.on_deadline_missed"})),
    )
    conn.execute("INSERT INTO deadline VALUES ('x', 1, ?)", (cb_id.hex,))
    conn.commit()
    conn.close()

    rows = deadline_callbacks(db, "demo_deadline_alert", "run1")
    assert len(rows) == 1
    assert rows[0].id == str(cb_id)
    assert rows[0].state == "success"
    assert rows[0].path == "demo_callbacks.on_deadline_missed" and rows[0].executor is None
    assert deadline_callbacks(db, "other", "run1") == []


def test_normalize_uuid():
    value = uuid.uuid4()
    assert normalize_uuid(value.hex) == str(value)
    assert normalize_uuid(value.bytes) == str(value)
    assert normalize_uuid("not-a-uuid") == "not-a-uuid"


# ------------------------------------------------------------- stacks and CLI


def test_get_stack_local():
    stack = get_stack("LocalExecutor")
    assert isinstance(stack, LocalExecutorStack)
    assert stack.executor_label(None) == "LocalExecutor"


def test_kubernetes_stack_points_the_executor_at_its_fake_cluster(tmp_path):
    stack = get_stack("KubernetesExecutor")
    ctx = StackContext(airflow_home=tmp_path, python=sys.executable, api_url="http://127.0.0.1:1", env={})
    config = stack.config(ctx)
    assert config["AIRFLOW__CORE__EXECUTOR"] == "KubernetesExecutor"
    kubeconfig = Path(config["AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE"])
    template = Path(config["AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE"])
    stack.setup(ctx)
    try:
        server = json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        assert server.startswith("http://127.0.0.1:")
        assert "restartPolicy: Never" in template.read_text()
        with urllib.request.urlopen(f"{server}/api/v1/namespaces/default/pods", timeout=10) as response:
            assert json.loads(response.read())["kind"] == "PodList"
    finally:
        stack.teardown(ctx)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server}/version", timeout=5)
    stack.teardown(ctx)  # a second teardown is harmless


@pytest.mark.parametrize("name", [*PLANNED, "NoSuchExecutor"])
def test_unsupported_executors(name, capsys):
    with pytest.raises(UnsupportedExecutor):
        get_stack(name)
    assert cli.main(["--executor", name]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert name in err and "LocalExecutor" in err
    if name in PLANNED:
        assert "does not exist yet" in err


def _copy_script(tmp_path: Path) -> Path:
    fake_repo = tmp_path / "repo"
    (fake_repo / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "demo", fake_repo / "scripts" / "demo")
    return fake_repo


def test_script_brings_tree_and_venv_up_to_date_first(tmp_path):
    fake_repo = _copy_script(tmp_path)
    series = fake_repo / "dev" / "series"
    series.parent.mkdir()
    calls = tmp_path / "calls"
    # A stand-in for dev/series that logs its calls; `env` links .venv/bin/python to this Python.
    series.write_text(
        '#!/usr/bin/env bash\nset -e\nroot="$(cd "$(dirname "$0")/.." && pwd)"\n'
        f'echo "$1" >> {calls}\n'
        'if [ "$1" = env ]; then mkdir -p "$root/.venv/bin"; '
        f'ln -sf {sys.executable} "$root/.venv/bin/python"; fi\n'
    )
    series.chmod(0o755)
    (fake_repo / "dev" / "demo_stack").symlink_to(REPO / "dev" / "demo_stack")
    env = {key: value for key, value in os.environ.items() if key != "DEMO_PYTHON"}
    proc = subprocess.run(
        [str(fake_repo / "scripts" / "demo"), "--executor", "NoSuchExecutor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert calls.read_text().split() == ["materialize", "env"]
    assert (fake_repo / ".venv" / "bin" / "python").exists()
    assert proc.returncode == EXIT_USAGE and "NoSuchExecutor" in proc.stderr


# ------------------------------------------------------------------- end to end


def _demo_python() -> str | None:
    if os.environ.get("DEMO_PYTHON"):
        return os.environ["DEMO_PYTHON"]
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else None


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("executor", "budget"),
    [("LocalExecutor", 150), ("KubernetesExecutor", 300), ("EdgeExecutor", 240), ("CeleryExecutor", 240)],
)
def test_demo_end_to_end(tmp_path, executor, budget):
    python = _demo_python()
    if python is None:
        pytest.skip("no Airflow interpreter: set DEMO_PYTHON or create .venv with dev/series env")
    result_file = tmp_path / "result.json"
    env = dict(os.environ, DEMO_PYTHON=python)
    proc = subprocess.run(
        [
            str(REPO / "scripts" / "demo"),
            *("--executor", executor, "--timeout", str(budget), "--grace", "10"),
            *("--json", str(result_file)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=budget + 40,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]

    result = json.loads(result_file.read_text())
    rows = {row["callback"]: row for row in result["rows"]}
    assert set(rows) == {"deadline_alert", "dag_on_failure", "task_on_failure"}
    deadline = rows["deadline_alert"]
    assert (deadline["kind"], deadline["executor"], deadline["state"]) == (
        "deadline alert",
        executor,
        "success",
    )
    assert "/executor_callbacks/demo_deadline_alert/" in deadline["log"]
    on_failure = rows["dag_on_failure"]
    assert (on_failure["kind"], on_failure["executor"], on_failure["state"]) == (
        "dag on_failure_callback",
        executor,
        "success",
    )
    assert "/executor_callbacks/demo_dag_on_failure/" in on_failure["log"]
    task_on_failure = rows["task_on_failure"]
    assert (task_on_failure["kind"], task_on_failure["executor"], task_on_failure["state"]) == (
        "task on_failure_callback",
        executor,
        "success",
    )
    assert "/executor_callbacks/demo_task_killed/" in task_on_failure["log"]
    assert all(row["ok"] and row["seconds"] is not None for row in rows.values())

    # The printed table has every row, marked OK.
    table_lines = [line for line in proc.stdout.splitlines() if line.startswith(("OK", "FAIL"))]
    assert len(table_lines) == 3 and all(line.startswith("OK") for line in table_lines)
    # Everything was stopped and the throwaway home removed.
    assert "all components stopped" in proc.stdout
    assert not Path(result["airflow_home"]).exists()


def test_edge_stack_runs_a_worker_with_its_own_log_folder_and_stops_it_first(tmp_path):
    stack = get_stack("EdgeExecutor")
    ctx = StackContext(airflow_home=tmp_path, python=sys.executable, api_url="http://127.0.0.1:8793", env={})
    config = stack.config(ctx)
    assert config["AIRFLOW__CORE__EXECUTOR"] == "airflow.providers.edge3.executors.EdgeExecutor"
    assert config["AIRFLOW__EDGE__API_URL"] == "http://127.0.0.1:8793/edge_worker/v1/rpcapi"
    (worker,) = stack.extra_processes(ctx)
    assert worker.airflow_args[:2] == ("edge", "worker")
    assert worker.after_api
    folder = Path(worker.env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
    assert folder.is_dir() and folder.parent == tmp_path
    names = ["api-server", "scheduler", "dag-processor", "triggerer", worker.name]
    assert stack.stop_groups(names) == [
        [worker.name],
        ["scheduler", "dag-processor", "triggerer"],
        ["api-server"],
    ]
    assert stack.executor_label("airflow.providers.edge3.executors.EdgeExecutor") == "EdgeExecutor"
    assert stack.executor_label(None) == "EdgeExecutor"


def test_celery_stack_runs_a_worker_without_a_log_server_and_stops_it_first(tmp_path):
    stack = get_stack("CeleryExecutor")
    ctx = StackContext(airflow_home=tmp_path, python=sys.executable, api_url="http://127.0.0.1:8793", env={})
    (worker,) = stack.extra_processes(ctx)
    args = worker.airflow_args
    assert args[:2] == ("celery", "worker")
    assert args[args.index("--queues") + 1] == "default"
    assert args[args.index("--pid") + 1] == str(tmp_path / "celery-worker.pid")
    assert "--skip-serve-logs" in args  # no log server on port 8793
    names = ["api-server", "scheduler", "dag-processor", "triggerer", worker.name]
    assert stack.stop_groups(names) == [
        [worker.name],
        ["scheduler", "dag-processor", "triggerer"],
        ["api-server"],
    ]
    stack.teardown(ctx)  # nothing claimed yet: harmless


def test_runner_stops_the_components_in_the_groups_of_its_stack(monkeypatch, tmp_path):
    from demo_stack import runner as runner_module

    groups: list[list[str]] = []

    def fake_stop(procs_, **kwargs):
        groups.append([proc.name for proc in procs_])
        return []

    monkeypatch.setattr(runner_module, "stop_processes", fake_stop)
    demo = runner_module.DemoRunner(runner_module.Options(python=sys.executable), get_stack("EdgeExecutor"))
    names = ["api-server", "scheduler", "dag-processor", "triggerer", "edge-worker"]
    demo.procs = [procs.ManagedProcess(name, ["true"], tmp_path / name) for name in names]
    demo._teardown()
    assert [group for group in groups if group] == [
        ["edge-worker"],
        ["scheduler", "dag-processor", "triggerer"],
        ["api-server"],
    ]
