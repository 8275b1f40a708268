"""Result rows, their evaluation (exit code) and table rendering."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# States that the ``callback`` table uses (``airflow.utils.state.CallbackState``).
EXECUTOR_TERMINAL_STATES = frozenset({"success", "failed"})
# Pseudo states derived for the callback that the Dag Processor runs.
PROCESSOR_TERMINAL_STATES = frozenset({"success", "failed"})

EXIT_OK = 0
EXIT_CALLBACKS_FAILED = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
EXIT_INTERRUPTED = 130

HEADERS = ("", "callback", "kind", "executor", "state", "secs", "pid", "log")

_RED = "\033[31;1m"
_GREEN = "\033[32m"
_RESET = "\033[0m"


@dataclass
class ResultRow:
    """One callback the demo expected to run, and what actually happened."""

    callback: str
    kind: str
    executor: str
    state: str
    expected: str
    seconds: float | None = None
    pid: int | None = None
    log: str = ""
    detail: str = ""
    marker_seen: bool = False
    # Process log files worth showing when this row failed.
    relevant_logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the callback reached its expected state and left its marker line."""
        return self.state == self.expected and self.marker_seen

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def exit_code_for(rows: Sequence[ResultRow]) -> int:
    """0 only if there is at least one row and every row is ok; otherwise 1."""
    if rows and all(row.ok for row in rows):
        return EXIT_OK
    return EXIT_CALLBACKS_FAILED


def failing_rows(rows: Sequence[ResultRow]) -> list[ResultRow]:
    return [row for row in rows if not row.ok]


def format_seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def _cells(row: ResultRow) -> list[str]:
    state = row.state if row.ok else f"{row.state} (want {row.expected})"
    if row.state == row.expected and not row.marker_seen:
        state = f"{row.state} (no marker)"
    return [
        "OK" if row.ok else "FAIL",
        row.callback,
        row.kind,
        row.executor,
        state,
        format_seconds(row.seconds),
        "-" if row.pid is None else str(row.pid),
        row.log or "-",
    ]


def render_table(rows: Sequence[ResultRow], color: bool = False) -> str:
    """Render rows as a plain-text table; failing rows are marked FAIL (red with ``color``)."""
    table = [list(HEADERS)] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]

    def fmt(cells: list[str]) -> str:
        # The last column (log path) is not padded so lines have no trailing blanks.
        padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths[:-1], strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    lines = [fmt(table[0]), "  ".join("-" * width for width in widths)]
    for row, cells in zip(rows, table[1:], strict=False):
        line = fmt(cells)
        if color:
            line = f"{_GREEN if row.ok else _RED}{line}{_RESET}"
        lines.append(line)
    details = [f"  {row.callback}: {row.detail}" for row in rows if row.detail]
    if details:
        lines.append("")
        lines.extend(details)
    return "\n".join(lines)
