"""A tiny PNG writer and the bench's charts, pure Python (zlib + struct, no matplotlib).

The canvas is an RGB byte buffer with rectangles, lines and a 3x5 pixel font; ``write_png``
encodes it as an 8-bit truecolor PNG.  ``render_report`` draws the bench's panels.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Color = tuple[int, int, int]

WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GREY: Color = (200, 200, 200)
DARK: Color = (90, 90, 90)
SERIES_COLORS: tuple[Color, ...] = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))

# 3x5 glyphs, rows top to bottom, "1" = ink.  Lowercase is drawn as uppercase.
_FONT = {
    "A": "010101111101101",
    "B": "110101110101110",
    "C": "011100100100011",
    "D": "110101101101110",
    "E": "111100110100111",
    "F": "111100110100100",
    "G": "011100101101011",
    "H": "101101111101101",
    "I": "111010010010111",
    "J": "001001001101010",
    "K": "101101110101101",
    "L": "100100100100111",
    "M": "101111111101101",
    "N": "110101101101101",
    "O": "010101101101010",
    "P": "110101110100100",
    "Q": "010101101110011",
    "R": "110101110101101",
    "S": "011100010001110",
    "T": "111010010010010",
    "U": "101101101101111",
    "V": "101101101101010",
    "W": "101101111111101",
    "X": "101101010101101",
    "Y": "101101010010010",
    "Z": "111001010100111",
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "110001010100111",
    "3": "110001010001110",
    "4": "101101111001001",
    "5": "111100110001110",
    "6": "011100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001110",
    ".": "000000000000010",
    ",": "000000000010100",
    "-": "000000111000000",
    "_": "000000000000111",
    "/": "001001010100100",
    ":": "000010000010000",
    "(": "010100100100010",
    ")": "010001001001010",
    "%": "101001010100101",
    "=": "000111000111000",
    ">": "100010001010100",
    "<": "001010100010001",
    "+": "000010111010000",
    " ": "000000000000000",
    "?": "110001010000010",
    "*": "101010101000000",
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png(width: int, height: int, rgb: bytes | bytearray) -> bytes:
    """Encode ``rgb`` (``width * height * 3`` bytes, rows top to bottom) as a PNG file."""
    if len(rgb) != width * height * 3:
        raise ValueError("pixel buffer size does not match width * height * 3")
    stride = width * 3
    raw = b"".join(b"\x00" + bytes(rgb[y * stride : (y + 1) * stride]) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


class Canvas:
    """An RGB raster with the few drawing primitives the charts need."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            offset = (y * self.width + x) * 3
            self.pixels[offset : offset + 3] = bytes(color)

    def get(self, x: int, y: int) -> Color:
        offset = (y * self.width + x) * 3
        r, g, b = self.pixels[offset : offset + 3]
        return (r, g, b)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), both inclusive."""
        x0, x1 = sorted((max(0, x0), min(self.width - 1, x1)))
        y0, y1 = sorted((max(0, y0), min(self.height - 1, y1)))
        row = bytes(color) * (x1 - x0 + 1)
        for y in range(y0, y1 + 1):
            offset = (y * self.width + x0) * 3
            self.pixels[offset : offset + len(row)] = row

    def hline(self, x0: int, x1: int, y: int, color: Color) -> None:
        self.rect(x0, y, x1, y, color)

    def vline(self, x: int, y0: int, y1: int, color: Color) -> None:
        self.rect(x, y0, x, y1, color)

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 2) -> int:
        """Draw ``text`` with its top-left corner at (x, y); returns the x after the text."""
        for char in text.upper():
            glyph = _FONT.get(char, _FONT["?"])
            for index, bit in enumerate(glyph):
                if bit == "1":
                    gx, gy = index % 3, index // 3
                    self.rect(
                        x + gx * scale,
                        y + gy * scale,
                        x + gx * scale + scale - 1,
                        y + gy * scale + scale - 1,
                        color,
                    )
            x += 4 * scale
        return x

    @staticmethod
    def text_width(text: str, scale: int = 2) -> int:
        return len(text) * 4 * scale

    def to_png(self) -> bytes:
        return encode_png(self.width, self.height, self.pixels)


def write_png(path: Path, canvas: Canvas) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canvas.to_png())


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _axis_max(values: Sequence[float]) -> float:
    top = max([v for v in values if v is not None] or [1.0])
    return top * 1.15 if top > 0 else 1.0


def bar_panel(
    canvas: Canvas,
    box: tuple[int, int, int, int],
    title: str,
    groups: Sequence[tuple[str, Sequence[tuple[str, float | None]]]],
    unit: str,
) -> None:
    """Grouped bars: ``groups`` is [(group label, [(series name, value), ...]), ...]."""
    x0, y0, x1, y1 = box
    canvas.text(x0, y0, f"{title} ({unit})", BLACK, 2)
    series = list(dict.fromkeys(name for _, bars in groups for name, _ in bars))
    lx = x0
    for index, name in enumerate(series):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        canvas.rect(lx, y0 + 16, lx + 9, y0 + 25, color)
        lx = canvas.text(lx + 14, y0 + 16, name, DARK, 2) + 12
    top, bottom, left = y0 + 36, y1 - 16, x0 + 8
    canvas.vline(left, top, bottom, DARK)
    canvas.hline(left, x1, bottom, DARK)
    values = [v for _, bars in groups for _, v in bars if v is not None]
    vmax = _axis_max(values)
    if not groups:
        return
    group_w = (x1 - left - 8) // len(groups)
    for gi, (label, bars) in enumerate(groups):
        gx = left + 8 + gi * group_w
        bar_w = max(4, (group_w - 16) // max(1, len(series)))
        for name, value in bars:
            si = series.index(name)
            bx = gx + si * bar_w
            if value is None:
                canvas.text(bx + 2, bottom - 14, "N/A", DARK, 2)
                continue
            height = int((bottom - top - 14) * value / vmax)
            canvas.rect(bx + 1, bottom - height, bx + bar_w - 2, bottom - 1, SERIES_COLORS[si % 4])
            canvas.text(bx + 1, bottom - height - 12, _fmt(value), BLACK, 1 if bar_w < 40 else 2)
        canvas.text(gx, bottom + 4, label, BLACK, 2)


def box_panel(
    canvas: Canvas,
    box: tuple[int, int, int, int],
    title: str,
    series: Sequence[tuple[str, Sequence[float]]],
    unit: str,
) -> None:
    """Box plots (p25..p75 box, p50 line, min..max whiskers), one per series."""
    from bench_tool.stats import percentile

    x0, y0, x1, y1 = box
    canvas.text(x0, y0, f"{title} ({unit})", BLACK, 2)
    top, bottom, left = y0 + 24, y1 - 16, x0 + 8
    canvas.vline(left, top, bottom, DARK)
    canvas.hline(left, x1, bottom, DARK)
    vmax = _axis_max([v for _, values in series for v in values])
    if not series:
        return
    slot = (x1 - left - 8) // len(series)

    def ypos(value: float) -> int:
        return bottom - int((bottom - top - 14) * value / vmax)

    for index, (label, values) in enumerate(series):
        sx = left + 8 + index * slot
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        canvas.text(sx, bottom + 4, label, BLACK, 2)
        if not values:
            canvas.text(sx + 4, bottom - 14, "N/A", DARK, 2)
            continue
        q1, q2, q3 = (percentile(values, p) or 0.0 for p in (25, 50, 75))
        lo, hi = min(values), max(values)
        cx, half = sx + slot // 2, max(6, slot // 4)
        canvas.vline(cx, ypos(hi), ypos(lo), DARK)
        canvas.hline(cx - half // 2, cx + half // 2, ypos(hi), DARK)
        canvas.hline(cx - half // 2, cx + half // 2, ypos(lo), DARK)
        canvas.rect(cx - half, ypos(q3), cx + half, ypos(q1), color)
        canvas.hline(cx - half, cx + half, ypos(q2), BLACK)
        canvas.text(cx + half + 4, ypos(q2) - 5, "P50 " + _fmt(q2), BLACK, 1)
        canvas.text(cx + half + 4, ypos(hi) - 2, "MAX " + _fmt(hi), DARK, 1)


def render_report(payload: Mapping[str, Any]) -> Canvas:
    """Draw the bench's result panels from its JSON payload."""
    results = payload.get("results", {})
    raw = payload.get("raw", {})
    width, height = 1200, 820
    canvas = Canvas(width, height)
    label = payload.get("label") or ""
    canvas.text(
        12,
        10,
        f"AIRFLOW CALLBACK BENCH {label}  EXECUTOR SIDE: {payload.get('executor_callback', '')}",
        BLACK,
        3,
    )

    single = raw.get("single", {})
    box_series = []
    for path in ("dag_processor", "executor"):
        events = single.get(path, [])
        box_series.append(
            (f"{_short(path)} START", [e["started"] for e in events if e.get("started") is not None])
        )
        box_series.append(
            (f"{_short(path)} STATE", [e["recorded"] for e in events if e.get("recorded") is not None])
        )
    box_panel(canvas, (12, 40, 590, 400), "single event latency", box_series, "s")

    bursts = results.get("bursts", {})
    groups = [
        (
            f"N={size}",
            [(_short(p), (bursts[size].get(p) or {}).get("total")) for p in ("dag_processor", "executor")],
        )
        for size in sorted(bursts, key=int)
    ]
    bar_panel(canvas, (610, 40, 1188, 400), "burst: first event -> all ran", groups, "s")

    percall = results.get("per_callback", {})
    pc_groups = [
        (
            name.upper().replace("_", " "),
            [("P50", _ms(percall.get(key), "p50")), ("P99", _ms(percall.get(key), "p99"))],
        )
        for key, name in (("supervise_callback", "supervise"), ("fork_floor", "fork floor"))
    ]
    bar_panel(canvas, (12, 430, 590, 800), "per-callback cost", pc_groups, "ms")

    loop = results.get("scheduler_loop", {})
    parse = results.get("parse_loop", {})
    # Scheduler loop: idle, bursts (informational), slots busy with 0 / N pending (the goal).
    loop_groups = [
        ("IDLE", [("P50", (loop.get("idle") or {}).get("p50"))]),
        ("EXEC BST", [("P50", (loop.get("executor_burst") or {}).get("p50"))]),
        ("PROC BST", [("P50", (loop.get("dag_processor_burst") or {}).get("p50"))]),
        ("BUSY 0", [("P50", (loop.get("busy_idle") or {}).get("p50"))]),
        (f"BUSY {loop.get('pending_count', 'N')}", [("P50", (loop.get("busy_pending") or {}).get("p50"))]),
        ("PARSE", [("P50", _ms(parse.get("idle"), "p50"))]),
        ("PARSE CB", [("P50", _ms(parse.get("with_callbacks"), "p50"))]),
    ]
    bar_panel(canvas, (610, 430, 1188, 800), "loop times: scheduler, parse", loop_groups, "ms")
    return canvas


def _short(path: str) -> str:
    return {"dag_processor": "PROC", "executor": "EXEC"}.get(path, path.upper())


def _ms(summary: Mapping[str, Any] | None, key: str) -> float | None:
    value = (summary or {}).get(key)
    return None if value is None else value * 1000.0
