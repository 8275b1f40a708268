"""The plain-text table the bench prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench_tool import stats

PATH_LABELS = {"dag_processor": "dag-processor", "executor": "executor"}


def fmt(value: Any, unit: str = "s", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and unit == "":
        return str(value)
    if unit == "ms":
        return f"{value:.1f}ms"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "":
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f}{unit}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


_g = stats._get  # nested lookup that tolerates missing levels


def render(payload: Mapping[str, Any]) -> str:
    res = payload.get("results") or {}
    side = payload.get("executor_callback")
    parts = [
        (
            f"Airflow callback bench ({payload.get('mode')}, label {payload.get('label')!r}, "
            f"airflow-core {payload.get('airflow_version')}, executor side: {side}, "
            f"{_g(payload, 'host', 'cpus')} cpus)"
        )
    ]
    if payload.get("error"):
        parts.append(f"RUN DID NOT COMPLETE: {payload['error']}")

    rows = []
    for path, label in PATH_LABELS.items():
        single = _g(res, "single", path) or {}
        for what in ("started", "recorded"):
            s = single.get(what) or {}
            rows.append(
                [
                    label,
                    "-> callable started" if what == "started" else "-> state recorded",
                    str(s.get("n", 0)),
                    fmt(s.get("p50")),
                    fmt(s.get("p90")),
                    fmt(s.get("p99")),
                    fmt(s.get("max")),
                ]
            )
    parts += [
        "",
        "1. single event latency (from event)",
        table(["path", "", "n", "p50", "p90", "p99", "max"], rows),
    ]
    warm = res.get("warmup") or {}
    if warm:
        parts.append(
            "   untimed warm-up event (first after start), -> callable started: "
            + ", ".join(f"{PATH_LABELS.get(k, k)} {fmt((v or {}).get('started'))}" for k, v in warm.items())
        )

    rows = []
    for size, per_path in sorted((res.get("bursts") or {}).items(), key=lambda kv: int(kv[0])):
        for path, label in PATH_LABELS.items():
            b = per_path.get(path) or {}
            rows.append(
                [
                    size,
                    label,
                    f"{b.get('completed', 0)}/{b.get('size', size)}",
                    fmt(b.get("total")),
                    fmt(b.get("event_spread")),
                    fmt(b.get("drain")),
                    fmt(b.get("throughput_per_s"), "", 1),
                    fmt(b.get("trigger_seconds"), "s", 1),
                ]
            )
    parts += [
        "",
        "2. bursts (total = first event -> last callable started)",
        table(["size", "path", "ran", "total", "event spread", "drain", "per s", "triggering"], rows),
    ]

    parse = res.get("parse_loop") or {}
    loop = res.get("scheduler_loop") or {}
    rows = [
        [
            f"parse loop (file re-parse interval), {parse.get('fillers', '?')} fillers, idle",
            str(_g(parse, "idle", "n") or 0),
            fmt(_g(parse, "idle", "p50")),
            fmt(_g(parse, "idle", "max")),
        ],
        [
            "parse loop, with queued callbacks",
            str(_g(parse, "with_callbacks", "n") or 0),
            fmt(_g(parse, "with_callbacks", "p50")),
            fmt(_g(parse, "with_callbacks", "max")),
        ],
        _loop_row(loop, "idle", "scheduler loop, idle"),
        _loop_row(
            loop,
            "busy_idle",
            f"scheduler loop, all {loop.get('busy_slots', '-')} executor slots busy, 0 pending (goal base)",
        ),
        _loop_row(
            loop,
            "busy_pending",
            (
                f"scheduler loop, all slots busy, {loop.get('pending_count', '-')} pending executor "
                f"callbacks ({loop.get('pending_queued_during_window', '-')} queued meanwhile)"
            ),
        ),
        _loop_row(
            loop,
            "executor_burst",
            (
                f"scheduler loop, executor burst {loop.get('burst_size', '-')} "
                f"(peak {loop.get('peak_pending_executor_callbacks', '-')} pending; info)"
            ),
        ),
        _loop_row(
            loop,
            "dag_processor_burst",
            f"scheduler loop, dag-processor burst {loop.get('burst_size', '-')} (info)",
        ),
    ]
    parts += ["", "3./4. loop times", table(["loop", "n", "p50", "max"], rows)]

    pc = res.get("per_callback") or {}
    rows = [
        [
            name,
            str(_g(pc, key, "n") or 0),
            fmt(_ms(_g(pc, key, "p50")), "ms"),
            fmt(_ms(_g(pc, key, "p99")), "ms"),
            fmt(_ms(_g(pc, key, "max")), "ms"),
        ]
        for key, name in (
            ("supervise_callback", "supervise_callback(no-op)"),
            ("fork_floor", "fork + no-op (floor)"),
            ("dag_callback_parsed_each_time", "DAG callback, file parsed per callback"),
            ("dag_callback_fork_server", "DAG callback, forked from a fork server"),
        )
        if key in pc
    ]
    parts += [
        "",
        "5. per-callback fixed cost (in-process, fake API client)",
        table(["", "n", "p50", "p99", "max"], rows),
    ]
    tails = res.get("tails") or {}
    parts.append(
        f"5 s tails: {tails.get('count', '-')} "
        f"({tails.get('stack', '-')} of {tails.get('stack_supervised_runs', '-')} executor callbacks on the stack "
        "queued -> state recorded incl. warm-up, "
        f"{tails.get('per_callback', '-')} of {tails.get('per_callback_runs', '-')} in-process)"
    )

    rows = [
        [g["name"], fmt(g["value"], "", 2), f"<= {g['limit']:.2f}", g["status"]]
        for g in payload.get("goals", [])
    ]
    parts += ["", "goals", table(["goal", "value", "target", "status"], rows)]
    return "\n".join(parts)


def _loop_row(loop: Mapping[str, Any], key: str, label: str) -> list[str]:
    """One scheduler-loop row of the loop table: label, n, p50, max (ms)."""
    return [
        label,
        str(_g(loop, key, "n") or 0),
        fmt(_g(loop, key, "p50"), "ms"),
        fmt(_g(loop, key, "max"), "ms"),
    ]


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0
