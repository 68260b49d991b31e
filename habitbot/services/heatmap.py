"""Calendar pictures for /stats: one habit's year as a heatmap, several habits' recent days.

`render_heatmap` draws a GitHub-style grid (a column per ISO week, Monday to Sunday top to
bottom) with month names above, weekday names on the left, a legend below and a title on top.
`render_overview` draws one row per habit for a short range of days (typically the last 30),
with the habit names on the left. Both return PNG bytes.

The module holds no user-visible text: every word comes in `HeatmapLabels`, already translated.
Text is drawn with the DejaVu Sans shipped inside matplotlib (Latin, Cyrillic and many symbols);
characters that font lacks, such as most emoji, are left out rather than drawn as empty boxes.

The picture's size depends only on the range (and, for the overview, the number of rows), never
on the texts: long texts are shortened with "…" to fit. Rendering is thread-safe: every call
builds its own `Figure` on the Agg canvas, never touches pyplot or rcParams, and the drawing
itself is serialized by a module lock, since matplotlib does not promise concurrent drawing.
"""

from __future__ import annotations

import io
import os
import threading
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ft2font import FT2Font
from matplotlib.patches import Circle, FancyBboxPatch, Patch

from habitbot.services.progress import DayState

MAX_WEEKS = 54
MAX_OVERVIEW_DAYS = 92
MAX_OVERVIEW_ROWS = 40

_DPI = 100
_PT = 72 / _DPI  # points per pixel
_MARGIN = 14
_ELLIPSIS = "…"

_INK = "#24292f"
_MUTED = "#656d76"
_WEEKEND = "#b35c5c"
_SUCCESS = "#2da44e"
_PARTIAL_LOW = "#d2f1d9"
_PARTIAL_HIGH = "#7bd18f"
_FAILURE = "#f4a9a8"
_SKIPPED = "#a8b7ca"
_REST = "#e1e4e8"
_REST_DOT = "#8c959f"
_BLANK = "#eef0f2"
_FUTURE_EDGE = "#d0d7de"
_PENDING_FILL = "#f6f8fa"

_TITLE_PT = 14.0
_LABEL_PT = 10.0
_SMALL_PT = 8.0


@dataclass(frozen=True, kw_only=True)
class HeatmapLabels:
    """Translated texts: weekday short names Monday first, month short names January first,
    and the legend's five entries."""

    weekdays: Sequence[str]
    months: Sequence[str]
    done: str
    partly: str
    missed: str
    skipped: str
    rest: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "weekdays", tuple(self.weekdays))
        object.__setattr__(self, "months", tuple(self.months))
        if len(self.weekdays) != 7:
            raise ValueError(f"need 7 weekday names, got {len(self.weekdays)}")
        if len(self.months) != 12:
            raise ValueError(f"need 12 month names, got {len(self.months)}")


@dataclass(frozen=True)
class _Style:
    face: str
    edge: str | None = None
    edge_px: float = 0.0
    dot: bool = False


def _mix(low: str, high: str, t: float) -> str:
    (r0, g0, b0), (r1, g1, b1) = to_rgb(low), to_rgb(high)
    return to_hex((r0 + (r1 - r0) * t, g0 + (g1 - g0) * t, b0 + (b1 - b0) * t))


def _style(state: DayState | None) -> _Style:
    kind = state.kind if state is not None else "empty"
    if kind == "success":
        return _Style(_SUCCESS)
    if kind == "partial":
        fraction = state.fraction if state is not None and state.fraction is not None else 0.5
        return _Style(_mix(_PARTIAL_LOW, _PARTIAL_HIGH, min(1.0, max(0.0, fraction))))
    if kind == "failure":
        return _Style(_FAILURE)
    if kind == "skipped":
        return _Style(_SKIPPED)
    if kind in ("rest", "paused"):
        return _Style(_REST, dot=True)
    if kind == "future":
        return _Style("white", _FUTURE_EDGE, 1.0)
    if kind == "pending":
        return _Style(_PENDING_FILL, _SUCCESS, 2.0)
    return _Style(_BLANK)


_LEGEND_STYLES = (_Style(_SUCCESS), _Style(_mix(_PARTIAL_LOW, _PARTIAL_HIGH, 0.5)),
                  _Style(_FAILURE), _Style(_SKIPPED), _Style(_REST, dot=True))

_lock = threading.Lock()


@cache
def _font_path(bold: bool) -> str:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)


@cache
def _charmap(bold: bool) -> frozenset[int]:
    return frozenset(FT2Font(_font_path(bold)).get_charmap())


def _drawable(text: str, bold: bool = False) -> str:
    """`text` on one line, without the characters the font cannot draw."""
    known = _charmap(bold)
    kept: list[str] = []
    for char in text:
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn"):
            continue
        elif ord(char) in known:
            kept.append(char)
    return " ".join("".join(kept).split())


class _Canvas:
    """A figure whose data coordinates are pixels, origin at the top left."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
        self._renderer = FigureCanvasAgg(self.figure).get_renderer()
        self.ax = self.figure.add_axes((0.0, 0.0, 1.0, 1.0))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)
        self.ax.set_axis_off()
        self._fonts: dict[tuple[float, bool], FontProperties] = {}
        self._cells: list[Patch] = []
        self._faces: list[str] = []
        self._edges: list[str] = []
        self._widths: list[float] = []
        self._dots: list[Patch] = []

    def font(self, size: float, bold: bool = False) -> FontProperties:
        key = (size, bold)
        if key not in self._fonts:
            self._fonts[key] = FontProperties(fname=_font_path(bold), size=size)
        return self._fonts[key]

    def text_width(self, text: str, size: float, bold: bool = False) -> float:
        if not text:
            return 0.0
        width, _, _ = self._renderer.get_text_width_height_descent(
            text, self.font(size, bold), ismath=False)
        return float(width)

    def fit(self, text: str, size: float, max_width: float, bold: bool = False) -> str:
        """`text` made drawable, shortened with an ellipsis to at most `max_width` pixels."""
        text = _drawable(text, bold)
        if self.text_width(text, size, bold) <= max_width:
            return text
        low, high = 0, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if self.text_width(text[:middle].rstrip() + _ELLIPSIS, size, bold) <= max_width:
                low = middle
            else:
                high = middle - 1
        return text[:low].rstrip() + _ELLIPSIS if low else ""

    def text(self, x: float, y: float, text: str, size: float, *, color: str = _MUTED,
             bold: bool = False, ha: str = "left", va: str = "center") -> None:
        if text:
            self.ax.text(x, y, text, fontproperties=self.font(size, bold), color=color, ha=ha,
                         va=va, parse_math=False, usetex=False)

    def cell(self, x: float, y: float, width: float, height: float, style: _Style) -> None:
        edge_px = min(style.edge_px, width / 6)
        inset = edge_px / 2
        radius = max(0.0, min(2.0, width / 4, height / 4) - inset)
        self._cells.append(FancyBboxPatch(
            (x + inset, y + inset), width - 2 * inset, height - 2 * inset,
            boxstyle=f"round,pad=0,rounding_size={radius:g}"))
        self._faces.append(style.face)
        self._edges.append(style.edge or "none")
        self._widths.append(edge_px * _PT)
        if style.dot:
            radius = max(1.0, min(width, height) / 6)
            self._dots.append(Circle((x + width / 2, y + height / 2), radius))

    def legend(self, x: float, y: float, right: float, rows: int, labels: HeatmapLabels,
               cell: float) -> None:
        """The five legend entries from (x, y), in `rows` lines of at most `right - x` pixels."""
        texts = [labels.done, labels.partly, labels.missed, labels.skipped, labels.rest]
        per_row = -(-len(texts) // rows)
        gap, spacing = 5.0, 14.0
        for row in range(rows):
            entries = list(range(row * per_row, min(len(texts), (row + 1) * per_row)))
            fixed = len(entries) * (cell + gap) + (len(entries) - 1) * spacing
            budget = (right - x - fixed) / len(entries)
            shown = [_drawable(texts[i]) for i in entries]
            widths = [self.text_width(s, _LABEL_PT) for s in shown]
            if sum(widths) > right - x - fixed:
                shown = [self.fit(s, _LABEL_PT, budget) for s in shown]
                widths = [self.text_width(s, _LABEL_PT) for s in shown]
            cx, cy = x, y + row * (cell + 8)
            for index, text, width in zip(entries, shown, widths, strict=True):
                self.cell(cx, cy, cell, cell, _LEGEND_STYLES[index])
                self.text(cx + cell + gap, cy + cell / 2, text, _LABEL_PT)
                cx += cell + gap + width + spacing

    def png(self) -> bytes:
        self.ax.add_collection(PatchCollection(
            self._cells, facecolors=self._faces, edgecolors=self._edges,
            linewidths=self._widths, antialiased=True))
        if self._dots:
            self.ax.add_collection(PatchCollection(
                self._dots, facecolors=_REST_DOT, edgecolors="none", antialiased=True))
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=_DPI, facecolor="white",
                            edgecolor="white", transparent=False, bbox_inches=None,
                            metadata={"Software": None})
        return buffer.getvalue()


def _check_range(start: date, end: date) -> None:
    if end < start:
        raise ValueError(f"range ends before it starts: {start}..{end}")


def _month_labels(canvas: _Canvas, marks: list[tuple[float, str]], right: float
                  ) -> list[tuple[float, str]]:
    """The (x, text) marks that fit: a mark too close to the next one, or past `right`, goes."""
    kept: list[tuple[float, str]] = []
    for i, (x, text) in enumerate(marks):
        width = canvas.text_width(text, _LABEL_PT)
        limit = marks[i + 1][0] - 6 if i + 1 < len(marks) else right
        if x + width <= limit:
            kept.append((x, text))
    return kept


def _month_text(labels: HeatmapLabels, day: date, with_year: bool) -> str:
    name = _drawable(labels.months[day.month - 1])
    return f"{name} {day.year}" if with_year else name


def render_heatmap(days: Mapping[date, DayState], start: date, end: date, title: str,
                   labels: HeatmapLabels) -> bytes:
    """One habit's days from `start` to `end` inclusive as a GitHub-style grid, as PNG bytes.

    A day missing from `days` is drawn as a day that was not due. At most `MAX_WEEKS` ISO weeks.
    """
    _check_range(start, end)
    first_monday = start - timedelta(days=start.weekday())
    weeks = (end - first_monday).days // 7 + 1
    if weeks > MAX_WEEKS:
        raise ValueError(f"range spans {weeks} weeks, more than {MAX_WEEKS}: {start}..{end}")

    cell, gap = 13, 3
    pitch = cell + gap
    label_w = 42
    grid_x = _MARGIN + label_w
    grid_w = weeks * pitch - gap
    width = max(grid_x + grid_w + _MARGIN, 400)
    legend_rows = 1 if width - 2 * _MARGIN >= 560 else 2
    title_y = _MARGIN + 10
    months_y = title_y + 30
    grid_y = months_y + 13
    grid_h = 7 * pitch - gap
    legend_y = grid_y + grid_h + 18
    legend_cell = 11
    height = legend_y + legend_rows * (legend_cell + 8) - 8 + _MARGIN

    with _lock, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        canvas = _Canvas(width, height)
        canvas.text(_MARGIN, title_y, canvas.fit(title, _TITLE_PT, width - 2 * _MARGIN, True),
                    _TITLE_PT, color=_INK, bold=True)

        for row in (0, 2, 4, 6):
            name = canvas.fit(labels.weekdays[row], _LABEL_PT, label_w - 6)
            canvas.text(grid_x - 6, grid_y + row * pitch + cell / 2, name, _LABEL_PT, ha="right")

        with_year = start.year != end.year
        marks: list[tuple[float, str]] = []
        previous = None
        for week in range(weeks):
            monday = first_monday + timedelta(weeks=week)
            month = (monday + timedelta(days=3)).month
            if month != previous:
                shown = max(monday, start) if week == 0 else monday + timedelta(days=3)
                year = with_year and (not marks or shown.month == 1)
                marks.append((grid_x + week * pitch, _month_text(labels, shown, year)))
                previous = month
        for x, text in _month_labels(canvas, marks, width - 4):
            canvas.text(x, months_y, text, _LABEL_PT)

        for offset in range((end - start).days + 1):
            day = start + timedelta(days=offset)
            column = (day - first_monday).days // 7
            canvas.cell(grid_x + column * pitch, grid_y + day.weekday() * pitch, cell, cell,
                        _style(days.get(day)))

        legend_x = grid_x if legend_rows == 1 else _MARGIN
        canvas.legend(legend_x, legend_y, width - _MARGIN, legend_rows, labels, legend_cell)
        return canvas.png()


def render_overview(rows: Sequence[tuple[str, Mapping[date, DayState]]], start: date, end: date,
                    title: str, labels: HeatmapLabels) -> bytes:
    """Several habits' days from `start` to `end` inclusive, one row per (name, days) pair, as
    PNG bytes. At most `MAX_OVERVIEW_DAYS` days and `MAX_OVERVIEW_ROWS` rows."""
    _check_range(start, end)
    count = (end - start).days + 1
    if count > MAX_OVERVIEW_DAYS:
        raise ValueError(f"range has {count} days, more than {MAX_OVERVIEW_DAYS}")
    if len(rows) > MAX_OVERVIEW_ROWS:
        raise ValueError(f"{len(rows)} rows, more than {MAX_OVERVIEW_ROWS}")

    pitch = 20 if count <= 36 else max(7, 720 // count)
    gap = 4 if pitch >= 14 else max(1, pitch // 5)
    cell_w = pitch - gap
    row_pitch, cell_h = 21, 16
    every_day = pitch >= 18
    name_w = 180
    grid_x = _MARGIN + name_w + 10
    grid_w = count * pitch - gap
    width = max(grid_x + grid_w + _MARGIN, 400)
    legend_rows = 1 if width - 2 * _MARGIN >= 560 else 2
    title_y = _MARGIN + 10
    months_y = title_y + 30
    numbers_y = months_y + 16
    grid_y = numbers_y + 11
    legend_y = grid_y + len(rows) * row_pitch - (row_pitch - cell_h) + 16
    legend_cell = 11
    height = legend_y + legend_rows * (legend_cell + 8) - 8 + _MARGIN

    with _lock, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        canvas = _Canvas(width, height)
        canvas.text(_MARGIN, title_y, canvas.fit(title, _TITLE_PT, width - 2 * _MARGIN, True),
                    _TITLE_PT, color=_INK, bold=True)

        marks: list[tuple[float, str]] = []
        for offset in range(count):
            day = start + timedelta(days=offset)
            column_x = grid_x + offset * pitch
            if offset == 0 or day.day == 1:
                marks.append((column_x, _month_text(labels, day, False)))
            if every_day or day.weekday() == 0:
                color = _WEEKEND if day.weekday() >= 5 else _MUTED
                canvas.text(column_x + cell_w / 2, numbers_y, str(day.day), _SMALL_PT, color=color,
                            ha="center")
        for x, text in _month_labels(canvas, marks, width - 4):
            canvas.text(x, months_y, text, _LABEL_PT)

        for index, (name, states) in enumerate(rows):
            y = grid_y + index * row_pitch
            shown = canvas.fit(name, _LABEL_PT, name_w) or _ELLIPSIS
            canvas.text(_MARGIN, y + cell_h / 2, shown, _LABEL_PT, color=_INK)
            for offset in range(count):
                day = start + timedelta(days=offset)
                canvas.cell(grid_x + offset * pitch, y, cell_w, cell_h, _style(states.get(day)))

        canvas.legend(_MARGIN, legend_y, width - _MARGIN, legend_rows, labels, legend_cell)
        return canvas.png()
