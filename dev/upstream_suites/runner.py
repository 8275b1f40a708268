"""Run upstream provider suites in a virtualenv and compare them with recorded baselines.

Standard library only: this module runs in whatever Python calls it, while pytest
runs as a subprocess with the interpreter of the virtualenv under test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEV_DIR = PACKAGE_DIR.parent
BASELINES_DIR = PACKAGE_DIR / "baselines"
PYTEST_INI = PACKAGE_DIR / "pytest.ini"

OUTCOMES = ("passed", "skipped", "failed", "error")
FAILING = frozenset({"failed", "error"})
# When one test id shows up more than once in the junit file (e.g. a failure in the call
# and an error in teardown), the worst outcome wins.
_SEVERITY = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


@dataclass(frozen=True)
class Suite:
    name: str
    path: str  # relative to the tree root
    extra_args: tuple[str, ...] = ()
    # The core baselines the suite runs on: the task SDK's own tests only make sense
    # against the task SDK they ship with (main); provider suites run on every baseline.
    baselines: tuple[str, ...] = ("main", "stable")


# Extra pytest arguments the tests of a component need wherever they are: the task SDK's tests
# import ``task_sdk...``, importable through the SDK's own ``pythonpath = tests``.
COMPONENT_ARGS: dict[str, tuple[str, ...]] = {"task-sdk": ("-o", "pythonpath={tree}/task-sdk/tests")}

# name -> where the suite lives in the tree, plus extra pytest arguments.
SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("cncf-kubernetes", "providers/cncf/kubernetes/tests/unit"),
        Suite("edge3", "providers/edge3/tests/unit"),
        Suite("amazon-executors", "providers/amazon/tests/unit/amazon/aws/executors"),
        Suite("celery-executors", "providers/celery/tests/unit/celery/executors"),
        Suite(
            "task-sdk-execution-time",
            "task-sdk/tests/task_sdk/execution_time",
            # Its conftest imports Airflow before naming the plugin: load the plugin first. Its
            # tests import `task_sdk...`, importable through the SDK's own `pythonpath = tests`.
            ("-p", "tests_common.pytest_plugin", "-o", "pythonpath={tree}/task-sdk/tests"),
            baselines=("main",),
        ),
    )
}

# Per-test limits (pytest-timeouts); a hanging test fails instead of stalling the run.
TIMEOUT_ARGS = ("--setup-timeout=120", "--execution-timeout=120", "--teardown-timeout=120")


# How much of a failure's text the summary keeps per test: its message and traceback's tail.
DETAIL_CHARS = 1500


@dataclass
class SuiteResult:
    outcomes: dict[str, str] = field(default_factory=dict)  # test id -> outcome
    details: dict[str, str] = field(default_factory=dict)  # failing test id -> why (short)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(OUTCOMES, 0)
        for outcome in self.outcomes.values():
            counts[outcome] += 1
        return counts

    @property
    def not_passing(self) -> dict[str, str]:
        return {tid: o for tid, o in sorted(self.outcomes.items()) if o != "passed"}


def _test_id(testcase: ET.Element) -> str:
    classname = testcase.get("classname", "")
    name = testcase.get("name", "")
    return f"{classname}::{name}" if classname else name


def _outcome(testcase: ET.Element) -> str:
    tags = {child.tag for child in testcase}
    if "error" in tags:
        return "error"
    if "failure" in tags:
        return "failed"
    if "skipped" in tags:
        return "skipped"
    return "passed"


def _detail(testcase: ET.Element) -> str:
    """A failure's or error's message and the tail of its traceback, at most ``DETAIL_CHARS``."""
    parts = []
    for child in testcase:
        if child.tag in ("failure", "error"):
            message = (child.get("message") or "").strip()
            text = (child.text or "").strip()
            parts.append(f"{child.tag}: {message}\n{text[-DETAIL_CHARS:]}".strip())
    detail = "\n".join(parts)
    return detail if len(detail) <= DETAIL_CHARS else "..." + detail[-DETAIL_CHARS:]


def parse_junit(source: str | Path) -> SuiteResult:
    """Parse a pytest junit XML file into per-test outcomes, with the text of failures and errors."""
    result = SuiteResult()
    for testcase in ET.parse(source).getroot().iter("testcase"):
        tid, outcome = _test_id(testcase), _outcome(testcase)
        previous = result.outcomes.get(tid)
        if previous is None or _SEVERITY[outcome] > _SEVERITY[previous]:
            result.outcomes[tid] = outcome
        if outcome in FAILING:
            # A test that fails and then errors in teardown keeps both texts.
            detail = _detail(testcase)
            result.details[tid] = f"{result.details[tid]}\n{detail}" if tid in result.details else detail
    return result


def baseline_path(baseline: str, suite: str, root: Path = BASELINES_DIR) -> Path:
    return root / baseline / f"{suite}.json"


def format_record(result: SuiteResult, flaky: dict[str, str] | None = None) -> str:
    """Serialize a result deterministically (sorted keys, fixed indent, trailing newline)."""
    record = {
        "counts": result.counts,
        "flaky": dict(sorted((flaky or {}).items())),
        "not_passing": result.not_passing,
    }
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def load_record(path: Path) -> dict:
    record = json.loads(path.read_text())
    record.setdefault("flaky", {})
    record.setdefault("not_passing", {})
    return record


@dataclass
class Comparison:
    regressions: dict[str, str]  # passed in the baseline (or new), failing now
    newly_passing: dict[str, str]  # not passing in the baseline (old outcome), passing now
    flaky_failures: dict[str, str]  # known-flaky ids failing now, ignored
    missing: list[str]  # baseline lists them as not passing, but they did not run
    vanished: int = 0  # baseline-passing tests that are gone (neither passing nor failing now)

    @property
    def ok(self) -> bool:
        return not self.regressions and not self.vanished


def compare(record: dict, result: SuiteResult) -> Comparison:
    """
    Compare a run with a recorded baseline.

    Tests are absent from the record when they passed, so a failing test that is not listed
    (including a test that did not exist when the baseline was recorded) is a regression.
    """
    baseline_not_passing: dict[str, str] = record.get("not_passing", {})
    flaky: dict[str, str] = record.get("flaky", {})
    regressions, newly_passing, flaky_failures = {}, {}, {}
    for tid, outcome in sorted(result.outcomes.items()):
        before = baseline_not_passing.get(tid)
        if outcome in FAILING and before not in FAILING and before != "skipped":
            if tid in flaky:
                flaky_failures[tid] = outcome
            else:
                regressions[tid] = outcome
        elif outcome == "passed" and before is not None:
            newly_passing[tid] = before
    missing = sorted(set(baseline_not_passing) - set(result.outcomes))
    # Only non-passing ids are recorded, so tests that passed in the baseline and no longer
    # run at all (a module skipped whole, a collection that stops early) show in the counts.
    recorded_passed = record.get("counts", {}).get("passed", 0)
    now_passed_before = sum(
        1
        for tid, outcome in result.outcomes.items()
        if outcome == "passed" and tid not in baseline_not_passing
    )
    vanished = max(0, recorded_passed - now_passed_before - len(regressions) - len(flaky_failures))
    return Comparison(regressions, newly_passing, flaky_failures, missing, vanished)


def pytest_command(
    python: str, tree: Path, suite: Suite, home: Path, junit: Path, workers: int = 2
) -> list[str]:
    return [
        python,
        "-m",
        "pytest",
        "-c",
        str(PYTEST_INI),
        "--rootdir",
        str(tree),
        "-p",
        "upstream_suites.pytest_glue",
        "-p",
        "no:cacheprovider",
        *(["-n", str(workers)] if workers > 1 else []),
        "-q",
        f"--warning-output-path={home / 'warnings.txt'}",
        f"--junitxml={junit}",
        *TIMEOUT_ARGS,
        *(arg.format(tree=tree) for arg in suite.extra_args),
        *suite.path.split(),
    ]


def pytest_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.pop("AIRFLOW_HOME", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(DEV_DIR), os.environ.get("PYTHONPATH")) if p)
    env["UPSTREAM_SUITES_HOME"] = str(home)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_suite(
    python: str,
    tree: Path,
    suite: Suite,
    *,
    keep: bool = False,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
) -> tuple[SuiteResult, int, float]:
    home = Path(tempfile.mkdtemp(prefix=f"upstream-suite-{suite.name}-"))
    junit = home / "junit.xml"
    cmd = pytest_command(python, tree, suite, home, junit, workers)
    print(f"== {suite.name}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    log = home / "pytest.log"
    with log.open("w") as out:
        proc = subprocess.run(
            cmd,
            cwd=tree,
            env={**pytest_env(home), **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    elapsed = time.monotonic() - start
    if not junit.exists():
        raise RuntimeError(f"pytest exited with {proc.returncode} and wrote no junit XML; see {log}")
    result = parse_junit(junit)
    print(f"   pytest exit code {proc.returncode}, {elapsed:.0f}s, log: {log}")
    if not keep and proc.returncode in (0, 1):
        shutil.rmtree(home, ignore_errors=True)
    return result, proc.returncode, elapsed


def _print_ids(title: str, items: dict[str, str], details: dict[str, str] | None = None) -> None:
    if items:
        print(f"   {title} ({len(items)}):")
        for tid, outcome in items.items():
            print(f"     {outcome:8} {tid}")
            if details and tid in details:
                print(textwrap.indent(details[tid], "       | "))


def cmd_run(args: argparse.Namespace) -> int:
    tree = Path(args.tree).resolve()
    names = args.suite or [name for name, suite in SUITES.items() if args.baseline in suite.baselines]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite(s): {', '.join(unknown)}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    root = Path(args.baselines_dir) if args.baselines_dir else BASELINES_DIR
    status = 0
    summary: dict[str, dict] = {}
    for name in names:
        suite = SUITES[name]
        path = baseline_path(args.baseline, name, root)
        result, _, _ = run_suite(args.python, tree, suite, keep=args.keep, workers=args.workers)
        counts = result.counts
        print("   " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES))
        entry = summary.setdefault(name, {"counts": counts, "regressions": 0, "vanished": 0})
        if args.record:
            flaky = load_record(path)["flaky"] if path.exists() else {}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(format_record(result, flaky))
            print(f"   recorded {path}")
            continue
        if not path.exists():
            print(f"   MISSING BASELINE: {path} (run with --record first)")
            status = 1
            continue
        record = load_record(path)
        comparison = compare(record, result)
        entry.update(regressions=len(comparison.regressions), vanished=comparison.vanished)
        failures = {tid: result.details.get(tid, "") for tid in comparison.regressions}
        if failures:
            entry["failures"] = failures
        recorded = record.get("counts", {})
        print("   recorded: " + ", ".join(f"{recorded.get(o, 0)} {o}" for o in OUTCOMES))
        _print_ids("REGRESSION: passed in the baseline, failing now", comparison.regressions, result.details)
        if comparison.vanished:
            print(f"   REGRESSION: {comparison.vanished} test(s) that passed in the baseline did not run")
        _print_ids("newly passing (was, in the baseline)", comparison.newly_passing)
        _print_ids("known flaky, failing now (ignored)", comparison.flaky_failures, result.details)
        if comparison.missing:
            print(f"   {len(comparison.missing)} non-passing baseline test(s) did not run")
        if not comparison.ok:
            status = 1
        else:
            print("   OK: no regressions against the baseline")
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return status


# Which core baselines a component's own tests run on: core and task SDK patches target
# the newest core only; provider patches must keep working on the stable core too.
MAIN_ONLY = ("airflow-core/", "task-sdk/")


def patch_test_files(tree: Path, baseline: str) -> list[str]:
    """Test files the series add or change that the suites do not already run."""

    def git(*args: str) -> list[str]:
        return subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=True
        ).stdout.split()

    # The work tree against the baseline, so tests being written count before they are committed.
    out = git("diff", "--name-only", "--diff-filter=AMR", "series-baseline")
    out += git("ls-files", "--others", "--exclude-standard")
    covered = tuple(suite.path.rstrip("/") + "/" for suite in SUITES.values())
    files = []
    for path in out:
        name = path.rsplit("/", 1)[-1]
        if "/tests/" not in path or not (name.startswith("test_") and name.endswith(".py")):
            continue
        if path.startswith(covered) or path.startswith("devel-common/"):
            continue
        if baseline != "main" and path.startswith(MAIN_ONLY):
            continue
        files.append(path)
    return sorted(files)


PATCH_TESTS_DB = "airflow_patch_tests"


def postgres_env(python: str) -> dict[str, str]:
    """Point the tests at a database of their own on the local PostgreSQL, creating it if needed."""
    server = os.environ.get("UPSTREAM_SUITES_PG", "postgresql://postgres@127.0.0.1:5432")
    create = (
        "import psycopg2, sys\n"
        f"conn = psycopg2.connect({server + '/postgres'!r}); conn.autocommit = True\n"
        "cur = conn.cursor()\n"
        f"cur.execute('SELECT 1 FROM pg_database WHERE datname = %s', ({PATCH_TESTS_DB!r},))\n"
        f"cur.fetchone() or cur.execute('CREATE DATABASE {PATCH_TESTS_DB}')\n"
    )
    subprocess.run([python, "-c", create], check=True)
    return {
        "BACKEND": "postgres",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{server}/{PATCH_TESTS_DB}",
        "UPSTREAM_SUITES_KEEP_DB_CONN": "1",
    }


def cmd_patch_tests(args: argparse.Namespace) -> int:
    """Run the series' own tests outside the suites; every one must pass (there is no baseline)."""
    tree = Path(args.tree).resolve()
    files = patch_test_files(tree, args.baseline)
    if not files:
        print(f"no test files of the series outside the upstream suites for {args.baseline}")
        if args.summary:
            Path(args.summary).write_text("{}\n")
        return 0
    extra_env, workers = None, args.workers
    if args.backend == "postgres":
        extra_env = postgres_env(args.python)
        workers = 1  # one database: xdist workers would reset it under each other
    # One pytest run per component: their conftests set up the process differently (the task
    # SDK's, for one, turns database tests off for the whole session).
    groups: dict[str, list[str]] = {}
    for path in files:
        groups.setdefault(path.split("/tests/", 1)[0], []).append(path)
    summary, status = {}, 0
    for component, paths in sorted(groups.items()):
        name = f"patch-tests-{args.baseline}-{args.backend}-{component.replace('/', '-')}"
        suite = Suite(
            name, " ".join(paths), ("-p", "tests_common.pytest_plugin", *COMPONENT_ARGS.get(component, ()))
        )
        result, code, _ = run_suite(
            args.python, tree, suite, keep=args.keep, workers=workers, extra_env=extra_env
        )
        counts = result.counts
        print("   " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES))
        failing = {tid: o for tid, o in result.outcomes.items() if o in FAILING}
        _print_ids("FAILED", failing, result.details)
        summary[name] = {"counts": counts, "regressions": len(failing), "vanished": 0}
        if failing:
            summary[name]["failures"] = {tid: result.details.get(tid, "") for tid in sorted(failing)}
        if failing or code not in (0, 1):
            status = 1
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m upstream_suites", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run suites and compare with (or --record) the baseline")
    run.add_argument("--tree", required=True, help="tree laid out like upstream's monorepo")
    run.add_argument("--python", required=True, help="python of the virtualenv to test")
    run.add_argument("--baseline", required=True, help="core baseline name, e.g. main or stable")
    run.add_argument("--suite", action="append", help=f"suite to run (repeatable): {', '.join(SUITES)}")
    run.add_argument("--record", action="store_true", help="write the baseline files instead of comparing")
    run.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2)")
    run.add_argument("--summary", help="write per-suite counts and regressions as JSON here")
    run.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME, log and junit")
    run.add_argument("--baselines-dir", help=argparse.SUPPRESS)
    tests = sub.add_parser("patch-tests", help="run the series' own test files outside the suites")
    for flag, kwargs in (
        ("--tree", {"required": True}),
        ("--python", {"required": True}),
        ("--baseline", {"required": True}),
        ("--workers", {"type": int, "default": 2}),
        ("--summary", {}),
        ("--backend", {"choices": ("sqlite", "postgres"), "default": "sqlite"}),
    ):
        tests.add_argument(flag, **kwargs)
    tests.add_argument("--keep", action="store_true")
    sub.add_parser("list", help="list the suites")
    args = parser.parse_args(argv)
    if args.command == "list":
        for suite in SUITES.values():
            print(f"{suite.name:20} {suite.path} {' '.join(suite.extra_args)}")
        return 0
    if args.command == "patch-tests":
        return cmd_patch_tests(args)
    return cmd_run(args)
