"""Lint the files our patches touch with upstream's ruff rules, counting only what the patches add."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from series_tool import git, tree
from series_tool.config import Config
from series_tool.errors import SeriesError

RUFF = "ruff==0.16.10"
CONFIG = "dev/lint/ruff-upstream.toml"
_UNFORMATTED = re.compile(r"^(?P<file>.+?):\d+:\d+: unformatted:")


def touched_python_files(cfg: Config) -> list[str]:
    text = git.out(cfg.work_tree, "diff", "--name-only", "--diff-filter=AMR", f"{tree.BASELINE_TAG}..HEAD")
    return sorted(f for f in text.splitlines() if f.endswith(".py"))


def _ruff(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    uv = shutil.which("uv")
    if not uv:
        raise SeriesError("uv is not installed")
    return subprocess.run(
        [uv, "tool", "run", "-q", "--from", RUFF, "ruff", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def _findings(root: Path, files: list[str], config: Path) -> tuple[Counter, set[str]]:
    """Violations as (file, rule, message) counts, and the files ruff would reformat."""
    present = [f for f in files if (root / f).exists()]
    if not present:
        return Counter(), set()
    proc = _ruff(["check", "--no-cache", "--config", str(config), "--output-format", "json", *present], root)
    if proc.returncode not in (0, 1):
        raise SeriesError(f"ruff check failed:\n{proc.stderr.strip()}")
    found = Counter(
        (item["filename"].removeprefix(str(root) + "/"), item["code"], item["message"])
        for item in json.loads(proc.stdout or "[]")
    )
    proc = _ruff(
        ["format", "--no-cache", "--check", "--output-format", "concise", "--config", str(config), *present],
        root,
    )
    unformatted = set()
    for line in proc.stdout.splitlines():
        match = _UNFORMATTED.match(line)
        if match:
            unformatted.add(match["file"].removeprefix(str(root) + "/"))
    return found, unformatted


def lint(cfg: Config) -> list[str]:
    """Problems the series adds: new violations in touched files, files it left unformatted."""
    files = touched_python_files(cfg)
    if not files:
        return []
    config = cfg.root / CONFIG
    after, after_fmt = _findings(cfg.work_tree, files, config)
    with tempfile.TemporaryDirectory(prefix="series-lint-") as tmp:
        base = Path(tmp)
        existing = [
            f
            for f in files
            if git.run(cfg.work_tree, "cat-file", "-e", f"{tree.BASELINE_TAG}:{f}", check=False).returncode
            == 0
        ]
        if existing:
            archive = git.run(cfg.work_tree, "archive", tree.BASELINE_TAG, "--", *existing).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        before, before_fmt = _findings(base, existing, config)
    problems = []
    for key, count in sorted(after.items()):
        added = count - before.get(key, 0)
        if added > 0:
            file, code, message = key
            problems.append(f"{file}: {code} {message}" + (f" (x{added})" if added > 1 else ""))
    for file in sorted(after_fmt - before_fmt):
        problems.append(f"{file}: not formatted as `ruff format` would (run it with --config {CONFIG})")
    return problems
