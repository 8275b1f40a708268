"""The heavy end-to-end variants run only when asked for (dev/tests/conftest.py, scripts/test --full)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
E2E_TESTS = sorted(str(p.relative_to(REPO)) for p in (REPO / "dev" / "tests").glob("test_*e2e*.py"))


def _collected(*extra: str, full: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--co", "-m", "e2e", *extra, *E2E_TESTS],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "E2E_FULL": full},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_every_executor_keeps_end_to_end_tests_in_the_default_run():
    default = _collected("-m", "e2e and not full", full="0")
    heavy = _collected(full="0") - default
    assert heavy
    for module in {test.split("::")[0] for test in heavy | default}:
        assert any(test.startswith(module) for test in default), f"{module} has no test in the default run"


def test_hook_skips_full_items_only_without_e2e_full(monkeypatch):
    import conftest

    class Item:
        def __init__(self, full: bool):
            self.full = full
            self.markers: list = []

        def get_closest_marker(self, name):
            return object() if name == "full" and self.full else None

        def add_marker(self, marker):
            self.markers.append(marker)

    for env, skipped in (("0", True), ("", True), ("1", False)):
        monkeypatch.setenv("E2E_FULL", env)
        heavy, light = Item(True), Item(False)
        conftest.pytest_collection_modifyitems(None, [heavy, light])
        assert bool(heavy.markers) is skipped
        assert light.markers == []
        if skipped:
            assert "scripts/test --full" in heavy.markers[0].kwargs["reason"]
