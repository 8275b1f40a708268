"""`dev/series rebase`: move one component to a new upstream version and re-apply its series."""

from __future__ import annotations

import shutil

from series_tool import config, git, sdist, tree
from series_tool.config import Config
from series_tool.errors import SeriesError


def start(cfg: Config, comp_path: str, version: str) -> str:
    comp = cfg.component(comp_path)
    if comp.pin.version == version:
        raise SeriesError(f"{comp.path} is already pinned to {version}")
    work = cfg.work_tree
    state = tree.read_state(cfg)
    if not git.is_repo(work) or not state.get("complete") or state.get("pins") != cfg.pins_fingerprint():
        raise SeriesError("run `dev/series materialize` first: the rebase starts from the current series")
    lines, pending = tree.status(cfg)
    if pending:
        raise SeriesError("export or drop the work in the tree first:\n  " + "\n  ".join(lines))

    # Download and verify before anything changes; the pin is written only once it is verified.
    new_pin = sdist.lookup(comp.pin.dist, version)
    archive = sdist.fetch(new_pin, sdist.cache_dir(cfg.root))

    # The new baseline is the old one with this component replaced: a child commit, so that
    # `git am -3` finds the preimage blobs the patches name and can merge.
    git.run(work, "checkout", "-q", "-f", "-B", "main", tree.BASELINE_TAG)
    shutil.rmtree(work / comp.path)
    sdist.unpack(archive, new_pin, work / comp.path)
    git.run(work, "add", "-A", "-f", comp.path)
    git.run(
        work,
        "commit",
        "-q",
        "--no-verify",
        "--allow-empty",
        "-m",
        f"Baseline: {comp.pin.dist} {comp.pin.version} -> {version}",
        env={"GIT_AUTHOR_NAME": git.TOOL_NAME, "GIT_AUTHOR_EMAIL": git.TOOL_EMAIL},
    )
    git.run(work, "tag", "-f", tree.BASELINE_TAG)
    config.set_component_pin(cfg.pyproject, comp.path, new_pin)
    new_cfg = config.load(cfg.root)
    tree._write_state(new_cfg, pins=new_cfg.pins_fingerprint(), complete=False, failed=None, rebase=comp.path)

    patches = [str(p) for c in new_cfg.components for p in new_cfg.patch_files(c)]
    if patches:
        proc = git.run(work, "am", "-q", "-3", "--committer-date-is-author-date", *patches, check=False)
        if proc.returncode != 0:
            return _conflict_report(new_cfg, proc)
    return _finish(new_cfg, comp.path, version)


def cont(cfg: Config) -> str:
    work = cfg.work_tree
    state = tree.read_state(cfg)
    if not state.get("rebase"):
        raise SeriesError("no rebase is in progress")
    if git.am_in_progress(work):
        proc = git.run(work, "am", "--continue", check=False, user_config=True)
        if proc.returncode != 0:
            return _conflict_report(cfg, proc)
    comp = cfg.component(state["rebase"])
    return _finish(cfg, comp.path, comp.pin.version)


def _finish(cfg: Config, comp_path: str, version: str) -> str:
    tree._write_state(cfg, complete=True, rebase=None, head=git.head(cfg.work_tree))
    diffs = tree.export(cfg)
    changed = sum(len(d.written) for d in diffs.values())
    return (
        f"{comp_path} now on {version}; the series re-applied and was exported "
        f"({changed} patch files refreshed). Review `git diff`, then run the tests."
    )


def _conflict_report(cfg: Config, proc) -> str:
    work = cfg.work_tree
    current = work / ".git" / "rebase-apply" / "final-commit"
    subject = current.read_text().splitlines()[0] if current.exists() else "?"
    conflicted = git.out(work, "diff", "--name-only", "--diff-filter=U").splitlines()
    rejected = [
        ln for ln in (proc.stdout + proc.stderr).decode(errors="replace").splitlines() if "error" in ln
    ]
    lines = [f"conflict while re-applying {subject!r}:"]
    lines += [f"  conflicted: {f}" for f in conflicted] or [f"  {ln}" for ln in rejected]
    lines.append(
        f"Resolve in {work}, `git add` the files, then `dev/series rebase --continue` "
        "(it continues git am and exports). The pin in pyproject.toml is already moved."
    )
    raise SeriesError("\n".join(lines))
