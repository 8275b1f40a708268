"""Command line interface of the demo (``scripts/demo``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from demo_stack.results import EXIT_USAGE
from demo_stack.runner import DemoRunner, Options
from demo_stack.stacks import STACKS, UnsupportedExecutor, get_stack


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description=(
            "Start a throwaway local Airflow (api-server, scheduler, dag-processor, triggerer; "
            "SQLite; loopback only), trigger demo Dags, and show which callbacks ran, where, "
            "and how long it took.  Exit 0 only if every callback reached its expected state."
        ),
    )
    parser.add_argument(
        "--executor",
        default="LocalExecutor",
        help=f"executor to run the callbacks on (default: LocalExecutor; available: {', '.join(STACKS)})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="overall seconds to wait for startup and callbacks (default: 180)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME")
    parser.add_argument(
        "--json", dest="json_path", type=Path, help="also write the result rows to this JSON file"
    )
    parser.add_argument(
        "--python",
        default=os.environ.get("DEMO_PYTHON") or sys.executable,
        help="interpreter of the Airflow virtualenv (default: $DEMO_PYTHON, else this interpreter)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=15.0,
        help="seconds to wait after SIGTERM before SIGKILL when stopping components (default: 15)",
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the result table (default: auto, i.e. when stdout is a terminal)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stack = get_stack(args.executor)
    except UnsupportedExecutor as err:
        print(f"scripts/demo: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout <= 0:
        print("scripts/demo: --timeout must be positive", file=sys.stderr)
        return EXIT_USAGE
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    options = Options(
        python=args.python,
        timeout=args.timeout,
        keep=args.keep,
        json_path=args.json_path,
        grace=args.grace,
        color=color,
    )
    return DemoRunner(options, stack).run()
