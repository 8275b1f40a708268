from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from upstream_suites import runner

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
  <testcase classname="providers.x.tests.unit.test_a.TestA" name="test_ok" time="0.1"/>
  <testcase classname="providers.x.tests.unit.test_a.TestA" name="test_fail[p1]" time="0.1">
    <failure message="assert 1 == 2">boom</failure>
  </testcase>
  <testcase classname="providers.x.tests.unit.test_a.TestA" name="test_skip" time="0.0">
    <skipped type="pytest.skip" message="nope"/>
  </testcase>
  <testcase classname="providers.x.tests.unit.test_b" name="test_setup_error" time="0.0">
    <error message="failed on setup">E</error>
  </testcase>
  <testcase classname="providers.x.tests.unit.test_b" name="test_fail_then_teardown" time="0.0">
    <failure message="f">F</failure>
  </testcase>
  <testcase classname="providers.x.tests.unit.test_b" name="test_fail_then_teardown" time="0.0">
    <error message="failed on teardown">E</error>
  </testcase>
</testsuite></testsuites>
"""

A = "providers.x.tests.unit.test_a.TestA::"
B = "providers.x.tests.unit.test_b::"


@pytest.fixture
def junit_file(tmp_path: Path) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    return path


def test_parse_junit_outcomes_and_counts(junit_file):
    result = runner.parse_junit(junit_file)
    assert result.outcomes == {
        A + "test_ok": "passed",
        A + "test_fail[p1]": "failed",
        A + "test_skip": "skipped",
        B + "test_setup_error": "error",
        B + "test_fail_then_teardown": "error",  # worst outcome of the duplicated id wins
    }
    assert result.counts == {"passed": 1, "skipped": 1, "failed": 1, "error": 2}
    assert list(result.not_passing) == sorted(result.not_passing)
    assert A + "test_ok" not in result.not_passing


def test_parse_junit_keeps_why_each_test_failed(junit_file):
    result = runner.parse_junit(junit_file)
    assert result.details == {
        A + "test_fail[p1]": "failure: assert 1 == 2\nboom",
        B + "test_setup_error": "error: failed on setup\nE",
        B + "test_fail_then_teardown": "failure: f\nF\nerror: failed on teardown\nE",
    }


def test_failure_detail_keeps_the_end_of_a_long_traceback(tmp_path):
    frames = "".join(f"frame {i}\n" for i in range(1000)) + "E   AssertionError: the real reason"
    path = tmp_path / "junit.xml"
    path.write_text(
        '<testsuites><testsuite><testcase classname="m" name="t">'
        f'<failure message="assert False">{frames}</failure></testcase></testsuite></testsuites>'
    )
    detail = runner.parse_junit(path).details["m::t"]
    assert len(detail) <= runner.DETAIL_CHARS + 3
    assert detail.startswith("...")
    assert detail.endswith("E   AssertionError: the real reason")


def test_format_record_is_deterministic(junit_file):
    result = runner.parse_junit(junit_file)
    text = runner.format_record(result, {"z": "flaky z", "a": "flaky a"})
    assert text == runner.format_record(runner.parse_junit(junit_file), {"a": "flaky a", "z": "flaky z"})
    assert text.endswith("}\n")
    record = json.loads(text)
    assert list(record) == ["counts", "flaky", "not_passing"]
    assert list(record["flaky"]) == ["a", "z"]
    assert record["counts"]["error"] == 2
    assert record["not_passing"][A + "test_skip"] == "skipped"


def _result(**outcomes: str) -> runner.SuiteResult:
    return runner.SuiteResult(outcomes=dict(outcomes))


def test_compare_reports_regressions_and_newly_passing():
    record = {"not_passing": {"t_fail": "failed", "t_skip": "skipped", "t_gone": "error"}, "flaky": {}}
    current = _result(t_ok="passed", t_broke="failed", t_fail="passed", t_skip="skipped", t_new="error")
    comparison = runner.compare(record, current)
    assert comparison.regressions == {"t_broke": "failed", "t_new": "error"}
    assert comparison.newly_passing == {"t_fail": "failed"}
    assert comparison.missing == ["t_gone"]
    assert not comparison.ok


def test_compare_still_failing_and_skipped_are_not_regressions():
    record = {"not_passing": {"t_fail": "failed", "t_err": "error", "t_skip": "skipped"}}
    comparison = runner.compare(record, _result(t_fail="error", t_err="failed", t_skip="failed"))
    assert comparison.ok
    assert comparison.regressions == {}


def test_compare_ignores_known_flaky():
    record = {"not_passing": {}, "flaky": {"t_flaky": "races with the other xdist worker"}}
    comparison = runner.compare(record, _result(t_flaky="failed", t_ok="passed"))
    assert comparison.ok
    assert comparison.flaky_failures == {"t_flaky": "failed"}


def test_baseline_path_layout(tmp_path):
    assert runner.baseline_path("main", "edge3", tmp_path) == tmp_path / "main" / "edge3.json"


def test_suites_table_paths_are_relative():
    for suite in runner.SUITES.values():
        assert not suite.path.startswith("/")
        assert "/tests/" in f"/{suite.path}/"


def _fake_run(result):
    def fake_run_suite(python, tree, suite, *, keep=False, workers=2):
        return result, 0, 0.0

    return fake_run_suite


def test_run_record_then_compare(tmp_path, monkeypatch, capsys, junit_file):
    monkeypatch.setattr(runner, "run_suite", _fake_run(runner.parse_junit(junit_file)))
    base = ["run", "--tree", str(tmp_path), "--python", "python", "--baseline", "main"]
    base += ["--suite", "edge3", "--baselines-dir", str(tmp_path / "bl")]

    assert runner.main(base) == 1
    assert "MISSING BASELINE" in capsys.readouterr().out

    assert runner.main([*base, "--record"]) == 0
    recorded = tmp_path / "bl" / "main" / "edge3.json"
    assert json.loads(recorded.read_text())["counts"]["passed"] == 1

    assert runner.main(base) == 0
    assert "no regressions" in capsys.readouterr().out

    regressed = runner.parse_junit(junit_file)
    regressed.outcomes[A + "test_ok"] = "failed"
    regressed.details[A + "test_ok"] = "failure: assert 0\nE   ValueError: why it broke"
    monkeypatch.setattr(runner, "run_suite", _fake_run(regressed))
    summary = tmp_path / "summary.json"
    assert runner.main([*base, "--summary", str(summary)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out
    assert A + "test_ok" in out
    assert "| E   ValueError: why it broke" in out
    # The summary keeps why, for a run whose logs are gone.
    assert json.loads(summary.read_text())["edge3"]["failures"] == {
        A + "test_ok": "failure: assert 0\nE   ValueError: why it broke"
    }


def test_record_keeps_flaky_entries(tmp_path, monkeypatch, junit_file):
    monkeypatch.setattr(runner, "run_suite", _fake_run(runner.parse_junit(junit_file)))
    path = tmp_path / "bl" / "stable" / "edge3.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"counts": {}, "flaky": {"t": "why"}, "not_passing": {}}))
    args = ["run", "--tree", str(tmp_path), "--python", "python", "--baseline", "stable"]
    args += ["--suite", "edge3", "--baselines-dir", str(tmp_path / "bl"), "--record"]
    assert runner.main(args) == 0
    assert json.loads(path.read_text())["flaky"] == {"t": "why"}


def test_unknown_suite_is_rejected(tmp_path, capsys):
    args = ["run", "--tree", str(tmp_path), "--python", "python", "--baseline", "main", "--suite", "nope"]
    assert runner.main(args) == 2
    assert "unknown suite" in capsys.readouterr().err


def test_pytest_env_drops_airflow_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW_HOME", "/somewhere")
    env = runner.pytest_env(tmp_path)
    assert "AIRFLOW__CORE__EXECUTOR" not in env
    assert "AIRFLOW_HOME" not in env
    assert env["UPSTREAM_SUITES_HOME"] == str(tmp_path)
    assert env["PYTHONPATH"].split(":")[0] == str(runner.DEV_DIR)


def test_compare_counts_baseline_passing_tests_that_no_longer_run():
    record = {"counts": {"passed": 3}, "not_passing": {"t_fail": "failed"}}
    comparison = runner.compare(record, _result(t1="passed", t_fail="failed"))
    assert comparison.regressions == {}
    assert comparison.vanished == 2
    assert not comparison.ok
    # Newly passing tests do not hide vanished ones.
    assert runner.compare(record, _result(t1="passed", t_fail="passed")).vanished == 2
    assert runner.compare(record, _result(t1="passed", t2="passed", t3="passed")).ok


def test_run_writes_a_summary(tmp_path, monkeypatch, junit_file):
    monkeypatch.setattr(runner, "run_suite", _fake_run(runner.parse_junit(junit_file)))
    base = ["run", "--tree", str(tmp_path), "--python", "python", "--baseline", "main"]
    base += ["--suite", "edge3", "--baselines-dir", str(tmp_path / "bl")]
    assert runner.main([*base, "--record"]) == 0
    summary = tmp_path / "summary.json"
    assert runner.main([*base, "--summary", str(summary)]) == 0
    data = json.loads(summary.read_text())
    assert data["edge3"] == {
        "counts": {"passed": 1, "skipped": 1, "failed": 1, "error": 2},
        "regressions": 0,
        "vanished": 0,
    }


def _git(tree, *args):
    subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True)


def test_patch_test_files_are_the_series_tests_outside_the_suites(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    _git(tree, "init", "-q")
    (tree / "README").write_text("x")
    _git(tree, "add", "-A")
    _git(tree, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "base")
    _git(tree, "tag", "series-baseline")
    for rel in (
        "airflow-core/tests/unit/jobs/test_callbacks_queue.py",
        "task-sdk/tests/task_sdk/definitions/test_dag_attribute.py",
        "providers/amazon/tests/unit/amazon/aws/hooks/test_ecs_callbacks.py",
        "providers/edge3/tests/unit/edge3/test_callbacks.py",  # inside the edge3 suite
        "devel-common/src/tests_common/test_utils/test_helpers.py",
        "airflow-core/src/airflow/jobs/test_not_a_test_dir.py",
        "providers/amazon/tests/unit/amazon/aws/hooks/conftest.py",
    ):
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
    _git(tree, "add", "-A")
    _git(tree, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "series")
    assert runner.patch_test_files(tree, "main") == [
        "airflow-core/tests/unit/jobs/test_callbacks_queue.py",
        "providers/amazon/tests/unit/amazon/aws/hooks/test_ecs_callbacks.py",
        "task-sdk/tests/task_sdk/definitions/test_dag_attribute.py",
    ]
    assert runner.patch_test_files(tree, "stable") == [
        "providers/amazon/tests/unit/amazon/aws/hooks/test_ecs_callbacks.py",
    ]
    # A test being written counts before it is committed.
    new = tree / "providers/celery/tests/unit/celery/cli/test_new.py"
    new.parent.mkdir(parents=True)
    new.write_text("x = 1\n")
    assert "providers/celery/tests/unit/celery/cli/test_new.py" in runner.patch_test_files(tree, "stable")


def test_patch_tests_give_each_component_the_arguments_its_tests_need(tmp_path, monkeypatch, junit_file):
    files = [
        "airflow-core/tests/unit/jobs/test_a.py",
        "task-sdk/tests/task_sdk/api/test_client.py",
    ]
    monkeypatch.setattr(runner, "patch_test_files", lambda tree, baseline: files)
    suites: list[runner.Suite] = []

    def fake_run_suite(python, tree, suite, **kwargs):
        suites.append(suite)
        return runner.SuiteResult(outcomes={f"{suite.name}::t": "passed"}), 0, 0.0

    monkeypatch.setattr(runner, "run_suite", fake_run_suite)
    args = ["patch-tests", "--tree", str(tmp_path), "--python", "python", "--baseline", "main"]
    assert runner.main(args) == 0

    by_path = {suite.path: suite.extra_args for suite in suites}
    assert by_path == {
        "airflow-core/tests/unit/jobs/test_a.py": ("-p", "tests_common.pytest_plugin"),
        # The SDK's tests import ``task_sdk``, found through the SDK's own pythonpath.
        "task-sdk/tests/task_sdk/api/test_client.py": (
            "-p",
            "tests_common.pytest_plugin",
            "-o",
            "pythonpath={tree}/task-sdk/tests",
        ),
    }
