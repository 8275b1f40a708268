"""Percentiles, summaries and the goal ratios the bench prints next to its results."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The ``pct``-th percentile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """n, min, mean, p50, p90, p99 and max of ``values`` (``None`` entries are dropped)."""
    data = [float(v) for v in values if v is not None]
    summary: dict[str, float | int | None] = {"n": len(data)}
    summary["min"] = min(data) if data else None
    summary["mean"] = sum(data) / len(data) if data else None
    for pct in PERCENTILES:
        summary[f"p{pct}"] = percentile(data, pct)
    summary["max"] = max(data) if data else None
    return summary


@dataclass(frozen=True)
class Goal:
    """One target: ``value`` (a ratio or a count) must be ``<= limit``."""

    name: str
    value: float | None
    limit: float
    detail: str

    @property
    def status(self) -> str:
        if self.value is None:
            return "n/a"
        return "PASS" if self.value <= self.limit + 1e-12 else "FAIL"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _get(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    value: Any = mapping
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def evaluate_goals(results: Mapping[str, Any]) -> list[Goal]:
    """Compare the measured ``results`` (the bench's JSON ``results`` object) with the goals.

    Missing measurements give a goal with value ``None`` (status ``n/a``), never an error.
    """
    single = results.get("single") or {}
    proc = _get(single, "dag_processor", "started")
    execu = _get(single, "executor", "started")
    goals = [
        Goal(
            "single p50: executor / dag-processor",
            ratio(_get(execu, "p50"), _get(proc, "p50")),
            1 / 3,
            "event -> callable started; target <= 0.33",
        ),
        Goal(
            "single p99: executor / dag-processor",
            ratio(_get(execu, "p99"), _get(proc, "p99")),
            1.0,
            "event -> callable started; target <= 1.0",
        ),
    ]
    bursts = results.get("bursts") or {}
    burst_200 = bursts.get("200") or {}
    goals.append(
        Goal(
            "burst 200 total: executor / dag-processor",
            ratio(_get(burst_200, "executor", "total"), _get(burst_200, "dag_processor", "total")),
            1.0,
            "first event -> all callables ran; target <= 1.0",
        )
    )
    percall = results.get("per_callback") or {}
    goals.append(
        Goal(
            "per-callback cost: supervise_callback / fork floor",
            ratio(_get(percall, "supervise_callback", "p50"), _get(percall, "fork_floor", "p50")),
            1.5,
            "median wall time of a no-op; target <= 1.5",
        )
    )
    goals.append(scheduler_loop_goal(results.get("scheduler_loop") or {}))
    tails = results.get("tails") or {}
    count = tails.get("count") if tails else None
    goals.append(Goal("5 s tails (supervised runs >= 5 s)", count, 0, "target: 0"))
    return goals


def scheduler_loop_goal(loop: Mapping[str, Any]) -> Goal:
    """Does merely having N PENDING executor callbacks slow the scheduler loop down?

    Both medians come from the pending window, with every executor slot busy (so the
    callbacks stay pending): ``busy_pending`` with N of them, ``busy_idle`` with none.  The
    loop times during the bursts are informational: there the scheduler also creates, times
    out and queues runs.
    """
    pending = loop.get("pending_count")
    return Goal(
        "scheduler loop: pending executor callbacks / idle",
        ratio(_get(loop, "busy_pending", "p50"), _get(loop, "busy_idle", "p50")),
        1.1,
        f"median scheduler_loop_duration, executor slots all busy, {pending if pending is not None else 'N'} "
        "pending callbacks vs none; target <= 1.1",
    )
