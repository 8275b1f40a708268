"""Tests for dev/bench (bench_tool): statistics, table, JSON, PNG, goals, and an end-to-end smoke run.

Unit tests need only the standard library and pytest.  The end-to-end test runs
``dev/bench --smoke`` against the local PostgreSQL; it is marked ``e2e``.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from bench_tool import cli, dags, pg, png, report, stats
from bench_tool.runner import PENDING_RESULT_KEYS, ProbeReader
from bench_tool.statsd_listener import StatsdListener, parse_statsd

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


# ----------------------------------------------------------------- statistics
def test_percentile_interpolates_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 4.0
    assert stats.percentile(values, 50) == pytest.approx(2.5)
    assert stats.percentile(values, 90) == pytest.approx(3.7)
    assert stats.percentile([5.0], 99) == 5.0
    assert stats.percentile([], 50) is None
    assert stats.percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input


def test_percentile_rejects_out_of_range():
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_summarize_drops_none_and_handles_empty():
    summary = stats.summarize([0.5, None, 1.5, 1.0])
    assert summary["n"] == 3
    assert summary["p50"] == 1.0
    assert summary["max"] == 1.5
    assert summary["mean"] == pytest.approx(1.0)
    empty = stats.summarize([])
    assert empty["n"] == 0
    assert empty["p50"] is None and empty["max"] is None


# ---------------------------------------------------------------------- goals
def _results(**overrides):
    results = {
        "single": {
            "dag_processor": {"started": {"p50": 3.0, "p99": 6.0}},
            "executor": {"started": {"p50": 0.9, "p99": 5.0}},
        },
        "bursts": {"200": {"dag_processor": {"total": 40.0}, "executor": {"total": 30.0}}},
        "per_callback": {"supervise_callback": {"p50": 0.012}, "fork_floor": {"p50": 0.010}},
        "scheduler_loop": {
            "idle": {"n": 30, "p50": 20.0, "max": 25.0},
            "busy_idle": {"n": 30, "p50": 30.0, "max": 40.0},
            "busy_pending": {"n": 30, "p50": 31.5, "max": 44.0},
            "pending_count": 1000,
            "pending_queued_during_window": 0,
            "busy_slots": 8,
            "burst_size": 1000,
            "executor_burst": {"n": 100, "p50": 60.0, "max": 4000.0},
            "dag_processor_burst": {"n": 100, "p50": 400.0, "max": 900.0},
            "peak_pending_executor_callbacks": 808,
        },
        "tails": {"count": 0},
    }
    results.update(overrides)
    return results


def test_goals_all_pass_with_good_numbers():
    goals = stats.evaluate_goals(_results())
    assert [g.status for g in goals] == ["PASS"] * 6
    assert goals[0].value == pytest.approx(0.3)
    assert goals[3].value == pytest.approx(1.2)


def test_goals_fail_and_na():
    goals = stats.evaluate_goals(
        _results(
            bursts={},
            tails={"count": 2},
            scheduler_loop={"busy_idle": {"p50": 10.0}, "busy_pending": {"p50": 30.0}},
        )
    )
    by_name = {g.name: g for g in goals}
    assert by_name["burst 200 total: executor / dag-processor"].status == "n/a"
    assert by_name["5 s tails (supervised runs >= 5 s)"].status == "FAIL"
    assert by_name["scheduler loop: pending executor callbacks / idle"].value == pytest.approx(3.0)
    assert by_name["scheduler loop: pending executor callbacks / idle"].status == "FAIL"


def test_scheduler_loop_goal_is_pending_over_busy_idle_not_the_burst():
    goal = stats.scheduler_loop_goal(_results()["scheduler_loop"])
    assert goal.value == pytest.approx(31.5 / 30.0)  # busy_pending / busy_idle, not burst / idle
    assert goal.status == "PASS"
    assert "1000 pending" in goal.detail


def test_scheduler_loop_goal_ignores_the_informational_burst_rows():
    loop = {"idle": {"p50": 10.0}, "executor_burst": {"p50": 50.0}, "dag_processor_burst": {"p50": 90.0}}
    goal = stats.scheduler_loop_goal(loop)
    assert goal.value is None and goal.status == "n/a"
    assert stats.scheduler_loop_goal({"busy_idle": {"p50": 0.0}, "busy_pending": {"p50": 3.0}}).value is None


def test_goals_on_empty_results_are_na():
    assert {g.status for g in stats.evaluate_goals({})} == {"n/a"}


def test_ratio_guards_zero_and_none():
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(None, 1.0) is None
    assert stats.ratio(1.0, 4.0) == 0.25


# ---------------------------------------------------------------- table, JSON
def _payload():
    results = _results()
    results["single"]["dag_processor"].update(n=3, recorded={"n": 3, "p50": 3.1})
    results["single"]["dag_processor"]["started"].update(n=3, p90=5.0, max=6.0)
    results["bursts"]["200"]["executor"].update(size=200, completed=200, drain=1.0, event_spread=20.0)
    return {
        "mode": "default",
        "label": "t",
        "executor_callback": "deadline",
        "host": {"cpus": 2},
        "results": results,
        "goals": [g.to_json() for g in stats.evaluate_goals(results)],
        "raw": {
            "single": {"executor": [{"started": 1.0, "recorded": 1.2}, {"started": 0.5, "recorded": None}]}
        },
    }


def test_render_table_contains_sections_and_goals():
    text = report.render(_payload())
    for needle in (
        "1. single event latency",
        "2. bursts",
        "3./4. loop times",
        "5. per-callback fixed cost",
        "goals",
        "PASS",
    ):
        assert needle in text
    assert "3.00s" in text  # dag-processor p50
    assert "200/200" in text
    assert "12.0ms" in text  # supervise_callback p50


def test_render_table_shows_the_pending_window_rows():
    lines = report.render(_payload()).splitlines()
    busy_idle = next(line for line in lines if "all 8 executor slots busy, 0 pending" in line)
    assert "30.0ms" in busy_idle and "40.0ms" in busy_idle
    busy_pending = next(line for line in lines if "1000 pending executor callbacks" in line)
    assert "(0 queued meanwhile)" in busy_pending and "31.5ms" in busy_pending
    assert any("executor burst 1000 (peak 808 pending; info)" in line for line in lines)
    assert any("dag-processor burst 1000 (info)" in line and "400.0ms" in line for line in lines)
    goal = next(line for line in lines if line.startswith("scheduler loop: pending executor callbacks"))
    assert "1.05" in goal and "<= 1.10" in goal and "PASS" in goal


def test_render_table_without_a_pending_window():
    payload = _payload()
    payload["results"]["scheduler_loop"] = {"idle": {"n": 3, "p50": 20.0}}
    payload["goals"] = [g.to_json() for g in stats.evaluate_goals(payload["results"])]
    text = report.render(payload)
    assert "0 pending (goal base)" in text
    goal = next(line for line in text.splitlines() if line.startswith("scheduler loop: pending"))
    assert "n/a" in goal


def test_render_table_survives_empty_payload():
    text = report.render({"error": "boom"})
    assert "RUN DID NOT COMPLETE: boom" in text


def test_table_aligns_columns():
    text = report.table(["a", "bbb"], [["xx", "y"], ["z", "wwww"]])
    lines = text.splitlines()
    assert lines[0].startswith("a   bbb")
    assert len({line.index(line.split()[1]) for line in lines if not line.startswith("-")}) == 1


def test_payload_round_trips_through_json():
    payload = _payload()
    assert json.loads(json.dumps(payload, default=str)) == payload


# ------------------------------------------------------------------------ PNG
def _decode_png(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.setdefault(kind, b"")
        chunks[kind] += body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    return width, height, depth, color, zlib.decompress(chunks[b"IDAT"])


def test_encode_png_is_valid_and_pixel_exact():
    canvas = png.Canvas(3, 2)
    canvas.set(1, 0, (10, 20, 30))
    width, height, depth, color, raw = _decode_png(canvas.to_png())
    assert (width, height, depth, color) == (3, 2, 8, 2)
    assert len(raw) == 2 * (1 + 3 * 3)
    assert raw[0] == 0 and raw[1 + 3 : 1 + 6] == bytes((10, 20, 30))


def test_encode_png_rejects_wrong_buffer():
    with pytest.raises(ValueError):
        png.encode_png(2, 2, b"\x00" * 5)


def test_canvas_text_and_rect_draw_ink():
    canvas = png.Canvas(40, 20)
    end = canvas.text(0, 0, "P50", scale=1)
    assert end == 12
    canvas.rect(30, 10, 35, 15, (1, 2, 3))
    assert canvas.get(32, 12) == (1, 2, 3)
    assert any(canvas.get(x, y) != png.WHITE for x in range(12) for y in range(5))


def test_render_report_writes_png(tmp_path):
    out = tmp_path / "plot.png"
    png.write_png(out, png.render_report(_payload()))
    width, height, *_ = _decode_png(out.read_bytes())
    assert (width, height) == (1200, 820)


# ---------------------------------------------------------- small utilities
def test_parse_statsd_lines():
    assert parse_statsd("a.b:12.5|ms\nbad\nc:1|g|@0.5|#t:1\nd:x|c") == [("a.b", 12.5, "ms"), ("c", 1.0, "g")]


def test_statsd_listener_receives_udp():
    listener = StatsdListener(suffixes=("loop",)).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x.loop:3|ms", ("127.0.0.1", listener.port))
            sock.sendto(b"x.other:4|ms", ("127.0.0.1", listener.port))
        deadline = time.monotonic() + 5
        while not listener.select("x.loop") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [s.value for s in listener.select("x.loop")] == [3.0]
        assert listener.select("x.other") == []
    finally:
        listener.stop()


def test_statsd_shim_speaks_the_line_protocol():
    sys.path.insert(0, str(REPO / "dev" / "bench_tool" / "statsd_shim"))
    try:
        import statsd  # the shim, or the real client if installed
    finally:
        sys.path.pop(0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        client = statsd.StatsClient(host="127.0.0.1", port=server.getsockname()[1], prefix="p")
        client.gauge("g", 2)
        assert server.recv(100) == b"p.g:2|g"
        with client.timer("t"):
            pass
        assert server.recv(100).startswith(b"p.t:")


def test_probe_reader_reads_whole_lines_incrementally(tmp_path):
    path = tmp_path / "probe.jsonl"
    path.write_text('{"kind": "dag", "run_id": "r1", "started": 1.0, "ended": 1.1}\n{"kind": "dag", "ru')
    reader = ProbeReader(path)
    reader.poll()
    assert list(reader.records) == [("dag", "r1")]
    with open(path, "a") as handle:
        handle.write(
            'n_id": "r2", "started": 2.0}\nnot json\n{"kind": "dag", "run_id": "r1", "started": 3}\n'
        )
    reader.poll()
    assert set(reader.records) == {("dag", "r1"), ("dag", "r2")}
    assert reader.records[("dag", "r1")]["started"] == 1.0
    assert reader.records[("dag", "r1")]["calls"] == 2
    assert reader.bad == 1


def test_peak_pending_counts_open_executor_callbacks():
    log = [
        ("a", "executor", "created", 1.0),
        ("b", "executor", "pending", 1.1),
        ("x", "dag_processor", "created", 1.2),
        ("a", "executor", "success", 1.3),
        ("c", "executor", "queued", 1.4),
        ("b", "executor", "failed", 1.5),
    ]
    assert pg.peak_pending(log) == 2
    assert pg.peak_pending(log, "dag_processor") == 1


def test_parse_sizes_and_presets():
    assert cli.parse_sizes("50, 200,1000") == (50, 200, 1000)
    with pytest.raises(Exception, match="integers"):
        cli.parse_sizes("a")
    assert cli.PRESETS["smoke"][1] == (5,)
    assert 1000 not in cli.PRESETS["quick"][1]
    assert cli.PRESETS["default"][5] == 1000 and cli.PRESETS["smoke"][5] == 50


def test_pending_options(monkeypatch, tmp_path):
    captured = {}

    class FakeBench:
        def __init__(self, options):
            captured["options"] = options

        def run(self, render):
            return 0

    import bench_tool.runner

    monkeypatch.setattr(bench_tool.runner, "Bench", FakeBench)
    python = str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable)
    common = ["--python", python, "--executor-callback", "dag", "--json", str(tmp_path / "b.json")]
    assert cli.main(["--smoke", *common]) == 0
    options = captured["options"]
    assert (options.pending, options.pending_seconds, options.idle_seconds) == (50, None, 5.0)
    assert cli.main([*common, "--pending", "200", "--pending-seconds", "7"]) == 0
    assert (captured["options"].pending, captured["options"].pending_seconds) == (200, 7.0)
    assert cli.main(common) == 0
    assert captured["options"].pending == 1000


# ------------------------------------------------------------ pending window
def test_clone_callback_sql_copies_the_template_and_resets_the_queue_columns():
    columns = ["id", "type", "fetch_method", "data", "state", "output", "priority_weight", "created_at"]
    columns += ["queued_by_job_id", "queued_at", "trigger_id", "bundle_name"]
    sql = pg.clone_callback_sql(columns)
    head, _, tail = sql.partition(" SELECT ")
    assert head == "INSERT INTO callback (" + ", ".join(f'"{c}"' for c in columns) + ")"
    values = tail.split(" FROM ")[0].split(", ")
    assert dict(zip(columns, values, strict=True)) == {
        "id": "gen_random_uuid()",
        "type": 't."type"',
        "fetch_method": 't."fetch_method"',
        "data": 't."data"',
        "state": "'pending'",
        "output": "NULL",
        "priority_weight": 't."priority_weight"',
        "created_at": "clock_timestamp()",
        "queued_by_job_id": "NULL",
        "queued_at": "NULL",
        "trigger_id": "NULL",
        "bundle_name": 't."bundle_name"',
    }
    assert "generate_series(1, %s)" in sql and "WHERE t.id = %s::uuid" in sql
    assert sql.endswith("RETURNING id::text")
    assert sql.count("%s") == 2


def test_clone_callback_sql_follows_the_schema_it_is_given():
    sql = pg.clone_callback_sql(["id", "type", "state", "data"])  # an older schema: no queue columns
    assert "queued_at" not in sql and "created_at" not in sql
    with pytest.raises(ValueError, match="state"):
        pg.clone_callback_sql(["id", "type"])


class FakePostgres:
    """Answers ``query`` from a list of canned results and records the statements."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def query(self, dbname, sql, params=()):
        self.calls.append((dbname, " ".join(sql.split()), params))
        return self.answers.pop(0)


def test_insert_pending_callbacks_reads_the_schema_then_clones():
    fake = FakePostgres([("id",), ("type",), ("state",)], [("u1",), ("u2",), ("u3",)])
    ids = pg.insert_pending_callbacks(fake, "db", "tmpl-id", 3)
    assert ids == ["u1", "u2", "u3"]
    assert "information_schema.columns" in fake.calls[0][1]
    assert fake.calls[1][1] == pg.clone_callback_sql(["id", "type", "state"])
    assert fake.calls[1][2] == (3, "tmpl-id")


def test_callback_state_counts_reports_deleted_rows():
    fake = FakePostgres([("pending", 7), ("queued", 1)])
    assert pg.callback_state_counts(fake, "db", [f"id{i}" for i in range(10)]) == {
        "pending": 7,
        "queued": 1,
        "deleted": 2,
    }
    assert "id = ANY(%s::uuid[])" in fake.calls[0][1]
    assert pg.callback_state_counts(fake, "db", []) == {}


def test_delete_pending_callbacks_only_deletes_pending_rows_by_id():
    fake = FakePostgres([("a",), ("b",)])
    assert pg.delete_pending_callbacks(fake, "db", ["a", "b", "c"]) == 2
    _, sql, params = fake.calls[0]
    assert sql.startswith("DELETE FROM callback WHERE id = ANY(%s::uuid[]) AND state = 'pending'")
    assert params == (["a", "b", "c"],)
    assert pg.delete_pending_callbacks(fake, "db", []) == 0


def test_task_state_counts_and_pending_count():
    fake = FakePostgres([("running", 8), ("none", 1)], [(12,)], [("success",)], [])
    assert pg.task_state_counts(fake, "db", "bench_hold", "r1") == {"running": 8, "none": 1}
    assert fake.calls[0][2] == ("bench_hold", "r1")
    assert pg.pending_executor_callbacks(fake, "db") == 12
    assert pg.run_state(fake, "db", "bench_hold", "r1") == "success"
    assert pg.run_state(fake, "db", "bench_hold", "r2") is None


def test_hold_dag_has_one_task_per_slot_and_no_timeout(tmp_path):
    ids = dags.write_dags(tmp_path, fillers=1, deadline=False, hold_tasks=8)
    assert dags.HOLD_DAG_ID in ids
    source = (tmp_path / f"{dags.HOLD_DAG_ID}.py").read_text()
    compile(source, "bench_hold.py", "exec")
    assert "range(8)" in source and "max_active_tasks=8" in source
    assert "dagrun_timeout" not in source and "pool=" not in source  # the default pool, not the blocked one
    assert 'conf.get("seconds"' in source and 'conf.get("stop_file")' in source
    with pytest.raises(ValueError):
        dags.hold_dag_source(0)


def test_pending_result_keys_land_in_scheduler_loop():
    assert PENDING_RESULT_KEYS["pending_count"] == "pending_count"
    assert set(PENDING_RESULT_KEYS.values()) >= {
        "pending_count",
        "pending_queued_during_window",
        "busy_slots",
    }


def test_launcher_help_works():
    proc = subprocess.run(
        [str(REPO / "dev" / "bench"), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "--smoke" in proc.stdout and "--executor-callback" in proc.stdout


# ------------------------------------------------------------------- end to end
def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.e2e
@pytest.mark.slow
def test_bench_smoke_end_to_end(tmp_path):
    if not VENV_PYTHON.exists():
        pytest.skip("no .venv: run dev/series env")
    if not _postgres_up():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    result = tmp_path / "smoke.json"
    proc = subprocess.run(
        [
            str(REPO / "dev" / "bench"),
            "--smoke",
            "--json",
            str(result),
            "--database",
            "airflow_bench_e2e",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "goals" in proc.stdout
    payload = json.loads(result.read_text())
    assert payload["exit_code"] == 0
    results = payload["results"]
    for path in ("dag_processor", "executor"):
        single = results["single"][path]
        assert single["started"]["n"] >= 1 and single["missing"] == 0
        assert single["started"]["p50"] is not None and single["recorded"]["p50"] is not None
        burst = results["bursts"]["5"][path]
        assert burst["completed"] == 5 and burst["total"] is not None
    loop = results["scheduler_loop"]
    assert loop["pending_count"] == 50
    assert loop["busy_idle"]["n"] > 0 and loop["busy_pending"]["n"] > 0
    assert "pending executor callbacks" in proc.stdout
    goal = next(g for g in payload["goals"] if g["name"].startswith("scheduler loop"))
    assert goal["value"] is not None
    assert results["per_callback"]["supervise_callback"]["n"] > 0
    assert result.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    listed = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SELECT datname FROM pg_database"],
        capture_output=True,
        text=True,
        check=False,
    )
    if shutil.which("psql") and listed.returncode == 0:
        assert "airflow_bench_e2e" not in listed.stdout  # dropped at the end


def test_executor_config_names_the_airflow_variable():
    from bench_tool.cli import build_parser

    args = build_parser().parse_args(
        ["--executor-config", "callbacks.fork_server_idle_timeout=0", "--executor-config", "core.x=a=b"]
    )
    assert dict(args.executor_config) == {
        "AIRFLOW__CALLBACKS__FORK_SERVER_IDLE_TIMEOUT": "0",
        "AIRFLOW__CORE__X": "a=b",
    }


@pytest.mark.parametrize("bad", ["no_equals", "nosection=1", ".key=1", "section.=1", "a.b.c=1"])
def test_executor_config_refuses_what_is_not_section_key_value(bad, capsys):
    from bench_tool.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--executor-config", bad])
    assert "expected SECTION.KEY=VALUE" in capsys.readouterr().err


def test_render_table_shows_dag_callback_costs_only_when_measured():
    payload = _payload()
    assert "DAG callback" not in report.render(payload)
    payload["results"]["per_callback"]["dag_callback_parsed_each_time"] = {"n": 4, "p50": 0.1, "p99": 0.2}
    payload["results"]["per_callback"]["dag_callback_fork_server"] = {"n": 4, "p50": 0.05, "p99": 0.06}
    lines = report.render(payload).splitlines()
    parsed = next(line for line in lines if line.startswith("DAG callback, file parsed per callback"))
    forked = next(line for line in lines if line.startswith("DAG callback, forked from a fork server"))
    assert "100.0ms" in parsed
    assert "50.0ms" in forked
