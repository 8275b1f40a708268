"""Thin, deterministic wrappers around the git command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from series_tool.errors import SeriesError

# Commits the tool makes itself (baseline, applied patches) carry this identity and
# fixed dates, so the same pins and patches always give the same commit ids.
TOOL_NAME = "dev/series"
TOOL_EMAIL = "series@localhost"
BASELINE_DATE = "2000-01-01T00:00:00+0000"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which no user or system git config changes the output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_COMMITTER_NAME": TOOL_NAME,
            "GIT_COMMITTER_EMAIL": TOOL_EMAIL,
            "LC_ALL": "C",
            "TZ": "UTC",
        }
    )
    if extra:
        env.update(extra)
    return env


def run(
    repo: Path,
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    user_config: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git -C repo args``; with ``check`` a failure is a SeriesError quoting git."""
    full_env = dict(os.environ) if user_config else clean_env()
    if env:
        full_env.update(env)
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=full_env,
        capture_output=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise SeriesError(
            f"git {' '.join(args[:3])} failed in {repo}:\n"
            + (proc.stderr or proc.stdout).decode(errors="replace").strip()
        )
    return proc


def out(repo: Path, *args: str, **kwargs) -> str:
    return run(repo, *args, **kwargs).stdout.decode().strip()


def is_repo(path: Path) -> bool:
    return (path / ".git").exists()


def has_ref(repo: Path, ref: str) -> bool:
    return run(repo, "rev-parse", "--verify", "--quiet", ref, check=False).returncode == 0


def am_in_progress(repo: Path) -> bool:
    return (repo / ".git" / "rebase-apply").exists() or (repo / ".git" / "rebase-merge").exists()


def dirty(repo: Path) -> list[str]:
    """Uncommitted changes to tracked files and new files git would add."""
    text = run(repo, "status", "--porcelain", "--untracked-files=normal").stdout.decode()
    return [line for line in text.splitlines() if line.strip()]


def head(repo: Path) -> str:
    return out(repo, "rev-parse", "HEAD")
