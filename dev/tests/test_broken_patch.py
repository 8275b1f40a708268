"""A patch that no longer applies must stop scripts/test and scripts/demo, naming the patch."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BROKEN = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Test <test@localhost>
Date: Thu, 1 Jan 2026 00:00:00 +0000
Subject: [PATCH] Celery: a change whose context upstream no longer has

Bug: none
Forwarded: not-needed
---
 providers/celery/README.rst | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/providers/celery/README.rst b/providers/celery/README.rst
index 000000000000..111111111111 100644
--- a/providers/celery/README.rst
+++ b/providers/celery/README.rst
@@ -1,3 +1,3 @@
 this line is not in upstream's README
-nor is this one
+and so the hunk cannot apply
 the end
"""


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A copy of this repository as committed plus what is being changed now, with a broken patch."""
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dest = tmp_path / "repo"
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    patches = dest / "providers" / "celery" / "patches"
    patches.mkdir(parents=True, exist_ok=True)
    (patches / "0999-Celery-a-change-whose-context-upstream-no-longer-has.patch").write_text(BROKEN)
    return dest


def _env() -> dict[str, str]:
    # Share the sdist cache so the copy does not download the pins again.
    return {**os.environ, "SERIES_CACHE": str(REPO / ".cache" / "sdists")}


def _run(*cmd: str) -> tuple[int, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_scripts_test_fails_naming_the_broken_patch(clone: Path):
    code, output = _run(str(clone / "scripts" / "test"), "--stage", "series")
    assert code != 0
    assert (
        "providers/celery/patches/0999-Celery-a-change-whose-context-upstream-no-longer-has.patch" in output
    )
    assert "does not apply" in output
    assert "total: 0 passed, 1 failed" in output


def test_scripts_demo_fails_naming_the_broken_patch(clone: Path):
    code, output = _run(str(clone / "scripts" / "demo"))
    assert code != 0
    assert "0999-Celery-a-change-whose-context-upstream-no-longer-has.patch does not apply" in output
    assert not (clone / ".venv").exists()  # it stopped before building or starting anything
