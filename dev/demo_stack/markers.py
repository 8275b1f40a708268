"""Parsing of the JSON-lines marker file the demo callbacks append to."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER_FILENAME = "callback_markers.jsonl"
MARKER_ENV_VAR = "AIRFLOW_DEMO_MARKER_FILE"


@dataclass(frozen=True)
class MarkerRecord:
    """One line written by a demo callback when it ran."""

    name: str
    ts: float
    pid: int
    dag_id: str | None = None
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MarkerFile:
    """Parsed content of a marker file: the good records and the lines we could not read."""

    records: list[MarkerRecord]
    bad_lines: list[str]

    def find(self, name: str, run_id: str | None = None) -> MarkerRecord | None:
        """Return the first record with ``name`` (and ``run_id`` when given and recorded)."""
        for record in self.records:
            if record.name != name:
                continue
            if run_id is not None and record.run_id is not None and record.run_id != run_id:
                continue
            return record
        return None


def parse_marker_line(line: str) -> MarkerRecord | None:
    """Parse one marker line; return None for blank or malformed lines."""
    line = line.strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        name = str(data.pop("name"))
        ts = float(data.pop("ts"))
        pid = int(data.pop("pid"))
    except (KeyError, TypeError, ValueError):
        return None
    dag_id = data.pop("dag_id", None)
    run_id = data.pop("run_id", None)
    return MarkerRecord(
        name=name,
        ts=ts,
        pid=pid,
        dag_id=str(dag_id) if dag_id is not None else None,
        run_id=str(run_id) if run_id is not None else None,
        extra=data,
    )


def parse_marker_text(text: str) -> MarkerFile:
    """Parse the full content of a marker file."""
    records: list[MarkerRecord] = []
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        record = parse_marker_line(line)
        if record is None:
            bad.append(line)
        else:
            records.append(record)
    return MarkerFile(records=records, bad_lines=bad)


def read_marker_file(path: Path) -> MarkerFile:
    """Read and parse ``path``; a missing file is an empty marker file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return MarkerFile(records=[], bad_lines=[])
    return parse_marker_text(text)
