"""Command line: ``dev/series <command>``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from series_tool import config
from series_tool.errors import SeriesError


def _root() -> Path:
    env = os.environ.get("SERIES_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def cmd_materialize(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import tree

    print(tree.materialize(cfg, force=args.force))
    return 0


def cmd_export(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import tree

    diffs = tree.export(cfg, force=args.force)
    for comp_path, diff in diffs.items():
        if diff.changed or diff.unchanged:
            print(
                f"{comp_path}: {len(diff.written)} written, {diff.unchanged} unchanged, {len(diff.removed)} removed"
            )
            for name in diff.written:
                print(f"  wrote {name}")
            for name in diff.removed:
                print(f"  removed {name}")
    if not any(d.changed for d in diffs.values()):
        print("nothing to export: every patch file is up to date")
    return 0


def cmd_status(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import tree

    lines, pending = tree.status(cfg)
    print("\n".join(lines))
    return 1 if (pending and args.check) else 0


def cmd_check(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import checks

    problems = checks.check(cfg, apply=not args.no_apply)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print("series OK: every patch applies, has its trailers, and the tree is exported")
    return 0


def cmd_lint(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import lint

    problems = lint.lint(cfg)
    for problem in problems:
        print(problem)
    touched = len(lint.touched_python_files(cfg))
    if problems:
        print(f"{len(problems)} lint problem(s) added by the series in {touched} touched file(s)")
        return 1
    print(f"lint OK: the series adds no ruff findings in the {touched} Python file(s) it touches")
    return 0


def cmd_list(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import checks, tree

    for comp in cfg.components:
        patches = cfg.patch_files(comp)
        if not patches:
            continue
        print(f"{comp.path} ({comp.pin.dist} {comp.pin.version}): {len(patches)} patches")
        for patch in patches:
            trailers = tree.trailers(checks.patch_message(patch))
            state = trailers.get("Applied-Upstream") and f"applied upstream in {trailers['Applied-Upstream']}"
            state = state or f"forwarded: {trailers.get('Forwarded', '?')}"
            print(f"  {patch.name}")
            print(f"      bug: {trailers.get('Bug', '?')}; {state}")
    return 0


def cmd_env(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import envs

    for name in args.baseline or ["main"]:
        print(envs.ensure(cfg, cfg.baseline(name), force=args.force))
    return 0


def cmd_lock(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import envs

    for name in args.baseline or sorted(cfg.baselines):
        print(envs.lock(cfg, cfg.baseline(name), upgrade=args.upgrade))
    return 0


def cmd_rebase(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import rebase

    if args.continue_:
        print(rebase.cont(cfg))
    else:
        if not args.component or not args.version:
            raise SeriesError("usage: dev/series rebase COMPONENT VERSION (or --continue)")
        print(rebase.start(cfg, args.component, args.version))
    return 0


def cmd_upstream(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import upstream

    for line in upstream.branches(
        cfg,
        Path(args.checkout),
        base=args.base,
        components=args.component,
        prefix=args.prefix,
        force=args.force,
    ):
        print(line)
    return 0


def cmd_build(cfg: config.Config, args: argparse.Namespace) -> int:
    from series_tool import build

    for line in build.build(cfg, components=args.component, outdir=Path(args.outdir), label=args.label):
        print(line)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dev/series",
        description="Keep our patch series against upstream Airflow sdists: lay them out, edit, export.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("materialize", help="download the pins and apply every series in the work tree")
    s.add_argument(
        "--force",
        action="store_true",
        help="rebuild even over unexported work (its commits are kept in .cache/backups/)",
    )
    s.set_defaults(func=cmd_materialize)

    s = sub.add_parser("export", help="write the work tree's commits back into the patch files")
    s.add_argument("--force", action="store_true", help="export even after a materialize that stopped early")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("status", help="what in the work tree is not exported yet")
    s.add_argument("--check", action="store_true", help="exit 1 when anything is not exported")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("check", help="every series applies to fresh pins, has trailers, tree exported")
    s.add_argument(
        "--no-apply", action="store_true", help="skip the fresh apply (fast; trailers and status only)"
    )
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("list", help="every patch with its Bug/Forwarded/Applied-Upstream trailers")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("lint", help="upstream's ruff rules on the files the series touch (new findings only)")
    s.set_defaults(func=cmd_lint)

    s = sub.add_parser("env", help="virtualenv(s) with the tree installed editable plus test dependencies")
    s.add_argument("--baseline", action="append", help="main (default) or stable; may repeat")
    s.add_argument("--force", action="store_true", help="reinstall even when nothing changed")
    s.set_defaults(func=cmd_env)

    s = sub.add_parser("lock", help="re-resolve the pinned runtime and test dependencies (dev/lock/)")
    s.add_argument("--baseline", action="append")
    s.add_argument("--upgrade", action="store_true", help="allow newer versions than the current lock")
    s.set_defaults(func=cmd_lock)

    s = sub.add_parser(
        "rebase", help="move a component to a new upstream version, re-applying with 3-way merge"
    )
    s.add_argument("component", nargs="?")
    s.add_argument("version", nargs="?")
    s.add_argument("--continue", dest="continue_", action="store_true", help="after resolving a conflict")
    s.set_defaults(func=cmd_rebase)

    s = sub.add_parser(
        "upstream", help="apply the series to an upstream Airflow checkout, a branch per patch"
    )
    s.add_argument("checkout", help="path to a git checkout of apache/airflow")
    s.add_argument("--base", default="HEAD", help="the ref the branches start from (default HEAD)")
    s.add_argument("--component", action="append", help="only this component (may repeat)")
    s.add_argument("--prefix", default="series/", help="branch name prefix (default series/)")
    s.add_argument("--force", action="store_true", help="move branches that already exist")
    s.set_defaults(func=cmd_upstream)

    s = sub.add_parser("build", help="wheels and sdists of the patched components into dist/")
    s.add_argument("--component", action="append", help="only this component (may repeat)")
    s.add_argument("--outdir", default=str(_root() / "dist"))
    s.add_argument("--label", help="local version label (default: derived from the series)")
    s.set_defaults(func=cmd_build)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config.load(_root())
        return args.func(cfg, args)
    except SeriesError as exc:
        print(f"dev/series {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
