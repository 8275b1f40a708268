"""Base class for executor stacks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class UnsupportedExecutor(Exception):
    """Raised for an executor that has no demo harness (yet)."""


@dataclass(frozen=True)
class StackContext:
    """What a stack may need to know about the demo's Airflow installation."""

    airflow_home: Path
    python: str
    api_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    """The environment every Airflow process of the demo runs with (set once the config is known)."""


@dataclass(frozen=True)
class ProcessSpec:
    """An extra long-running process a stack needs, e.g. a worker."""

    name: str
    airflow_args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment of this process only (e.g. a worker's own log folder)."""
    after_api: bool = False
    """Start once the api-server answers (a process that gives up when it cannot reach it)."""


class ExecutorStack:
    """Hooks the demo runner calls; every hook has a default, override what your executor needs."""

    #: Value for ``[core] executor`` and the name shown in the result table.
    name: str = ""

    def config(self, ctx: StackContext) -> dict[str, str]:
        """Extra ``AIRFLOW__SECTION__KEY`` environment variables for every process."""
        return {"AIRFLOW__CORE__EXECUTOR": self.name}

    def extra_processes(self, ctx: StackContext) -> list[ProcessSpec]:
        """Processes to start in addition to api-server, scheduler, dag-processor, triggerer."""
        return []

    def stop_groups(self, names: list[str]) -> list[list[str]]:
        """The started components' ``names`` in the groups to stop one after the other; default: all at once."""
        return [names]

    def setup(self, ctx: StackContext) -> None:
        """Prepare external resources (a cluster, a broker...) before Airflow starts."""

    def teardown(self, ctx: StackContext) -> None:
        """Release what :meth:`setup` created.  Must be safe to call after a partial setup."""

    def executor_label(self, configured: str | None) -> str:
        """Name shown in the table for a callback whose ``executor`` field is ``configured``."""
        return configured or self.name
