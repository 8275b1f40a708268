"""Heavy variants (``@pytest.mark.full``) run only with ``scripts/test --full`` (``E2E_FULL=1``).

The default end-to-end run proves each executor and each fault once; the full run adds bursts, the
other database, payload limits, the stable core and the same checks on more executors. Their
durations are recorded in dev/tests/E2E-RESULTS.md.
"""

from __future__ import annotations

import os

import pytest

FULL_ENV = "E2E_FULL"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(FULL_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"a heavy variant: scripts/test --full (or {FULL_ENV}=1) runs it")
    for item in items:
        if item.get_closest_marker("full") is not None:
            item.add_marker(skip)
