"""Command line of ``dev/bench``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PYTHON = REPO / ".venv" / "bin" / "python"
CACHE = REPO / ".cache" / "bench"

# events, bursts, fillers, idle seconds, per-callback runs, pending callbacks (pending window)
PRESETS = {
    "default": (20, (50, 200, 1000), 50, 30.0, 200, 1000),
    "quick": (8, (20, 50), 20, 15.0, 60, 1000),
    "smoke": (2, (5,), 5, 5.0, 20, 50),
}

_DETECT = (
    "from airflow.configuration import conf\nprint(conf.get('callbacks', 'runner', fallback='__missing__'))\n"
)


def detect_executor_callback(python: str) -> str:
    """``dag`` when the installed Airflow knows ``[callbacks] runner``, else ``deadline``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    try:
        proc = subprocess.run(
            [python, "-c", _DETECT], capture_output=True, text=True, timeout=120, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "deadline"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines and lines[-1].strip() not in ("", "__missing__"):
        return "dag"
    return "deadline"


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError("burst sizes must be positive")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dev/bench",
        description=(
            "Measure Airflow's two callback paths side by side on PostgreSQL: the Dag Processor "
            "(on_failure_callback run while parsing) and the executor (ExecuteCallback workloads on "
            "LocalExecutor).  Prints a table, writes JSON and a PNG plot."
        ),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller run (8 events, bursts 20,50, 20 fillers)")
    mode.add_argument("--smoke", action="store_true", help="tiny run for CI (2 events, burst 5), ~90 s")
    parser.add_argument(
        "--executor-callback",
        choices=("deadline", "dag"),
        help="what runs on the executor path: a Deadline Alert callback, or the Dag's on_failure_callback "
        "with [callbacks] runner=executor (default: dag if the installed Airflow has that "
        "option, else deadline)",
    )
    parser.add_argument("--events", type=int, help="single events per path (default 20)")
    parser.add_argument(
        "--bursts", type=parse_sizes, help="burst sizes, comma separated (default 50,200,1000)"
    )
    parser.add_argument("--fillers", type=int, help="filler Dag files for the parse loop (default 50)")
    parser.add_argument("--idle-seconds", type=float, help="idle baseline window (default 30)")
    parser.add_argument("--percall-runs", type=int, help="no-op runs for the per-callback cost (default 200)")
    parser.add_argument(
        "--pending",
        type=int,
        help="PENDING executor callbacks inserted while every executor slot is busy, for the scheduler "
        "loop goal (default 1000, smoke 50; 0 skips the pending window)",
    )
    parser.add_argument(
        "--pending-seconds",
        type=float,
        help="length of each of the two pending-window samples (default: --idle-seconds)",
    )
    parser.add_argument("--label", default=None, help="label for the result files (default: the mode)")
    parser.add_argument(
        "--json", dest="json_path", type=Path, help=f"JSON output (default {CACHE}/<date>-<label>.json)"
    )
    parser.add_argument(
        "--png", dest="png_path", type=Path, help="PNG output (default: the JSON path with .png)"
    )
    parser.add_argument(
        "--database", default="airflow_bench", help="database name (prefix) to create and drop"
    )
    parser.add_argument("--python", default=str(DEFAULT_PYTHON), help="Python of the Airflow virtualenv")
    parser.add_argument("--keep", action="store_true", help="keep the AIRFLOW_HOMEs and the database(s)")
    parser.add_argument(
        "--executor-config",
        action="append",
        default=[],
        type=config_setting,
        metavar="SECTION.KEY=VALUE",
        help="Airflow option for the executor path's stack only, e.g. "
        "callbacks.fork_server_idle_timeout=0 (repeatable); recorded in the results",
    )
    return parser


def config_setting(text: str) -> tuple[str, str]:
    """Parse ``section.key=value`` into the ``AIRFLOW__SECTION__KEY`` variable and its value."""
    name, sep, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key or "." in key:
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE, got {text!r}")
    return f"AIRFLOW__{section.upper()}__{key.upper()}", value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "default"
    events, bursts, fillers, idle, percall, pending = PRESETS[mode]
    python = args.python
    if not Path(python).exists():
        print(
            f"dev/bench: no Airflow virtualenv at {python} (run dev/series env, or pass --python)",
            file=sys.stderr,
        )
        return 2

    from bench_tool.report import render
    from bench_tool.runner import Bench, Options

    label = args.label or mode
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    json_path = args.json_path or CACHE / f"{stamp}-{label}.json"
    png_path = args.png_path or json_path.with_suffix(".png")
    side = args.executor_callback or detect_executor_callback(python)
    options = Options(
        python=python,
        executor_callback=side,
        events=events if args.events is None else args.events,
        bursts=bursts if args.bursts is None else args.bursts,
        fillers=fillers if args.fillers is None else args.fillers,
        idle_seconds=idle if args.idle_seconds is None else args.idle_seconds,
        percall_runs=percall if args.percall_runs is None else args.percall_runs,
        pending=pending if args.pending is None else args.pending,
        pending_seconds=args.pending_seconds,
        db_prefix=args.database,
        json_path=json_path,
        png_path=png_path,
        keep=args.keep,
        label=label,
        mode=mode,
        executor_config=dict(args.executor_config),
    )
    return Bench(options).run(render)
