"""Calendar pictures: valid PNGs of a size fixed by the range, Cyrillic and emoji without warnings,
rendering from several threads at once, and the refusals for bad ranges."""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from habitbot.services import heatmap
from habitbot.services.heatmap import HeatmapLabels, render_heatmap, render_overview
from habitbot.services.progress import DayKind, DayState

TODAY = date(2026, 6, 10)
YEAR_START = TODAY - timedelta(days=364)
KINDS: list[DayKind] = ["success", "failure", "partial", "skipped", "rest", "paused", "not_due",
                        "future", "pending", "empty"]

EN = HeatmapLabels(weekdays=("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
                   months=("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                           "Nov", "Dec"),
                   done="Done", partly="Partly", missed="Missed", skipped="Skipped",
                   rest="Rest / paused")
RU = HeatmapLabels(weekdays=["Пн", "Вт", "Ср", "Чт", "Пт", "Сб", "Вс"],
                   months=["янв", "февр", "март", "апр", "май", "июнь", "июль", "авг", "сент",
                           "окт", "нояб", "дек"],
                   done="выполнено", partly="частично", missed="не выполнено",
                   skipped="пропущено", rest="отдых / пауза")


def mixed(start: date, end: date, today: date = TODAY) -> dict[date, DayState]:
    days = {}
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        if day > today:
            days[day] = DayState("future")
        elif day == today:
            days[day] = DayState("pending")
        else:
            kind = KINDS[(offset * 7 + offset // 5) % 7]
            days[day] = DayState(kind, (offset % 10) / 10 if kind == "partial" else None)
    return days


def uniform(kind: DayKind, start: date, end: date) -> dict[date, DayState]:
    fraction = 0.5 if kind == "partial" else None
    return {start + timedelta(days=i): DayState(kind, fraction)
            for i in range((end - start).days + 1)}


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature and the CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(chunk + body) == crc
    width, height = struct.unpack(">II", body[:8])
    return width, height


def pixels(data: bytes) -> np.ndarray:
    image = imread(io.BytesIO(data), format="png")
    assert image.shape[:2] == png_size(data)[::-1]
    return image[..., :3]


def count_colour(image: np.ndarray, colour: str) -> int:
    return int(np.all(np.abs(image - np.array(to_rgb(colour))) < 1.5 / 255, axis=-1).sum())


def no_warnings(render: Callable[[], bytes]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return render()


def test_a_year_is_a_compact_png_of_about_900_by_260():
    data = render_heatmap(mixed(YEAR_START, TODAY), YEAR_START, TODAY, "Morning run", EN)
    width, height = png_size(data)
    assert 850 <= width <= 950 and 180 <= height <= 280
    assert len(data) < 100_000
    image = pixels(data)
    assert image.min() < 0.5 < image.max()


def test_the_size_depends_on_the_range_only():
    end = TODAY + timedelta(days=3)
    one = render_heatmap(mixed(YEAR_START, end), YEAR_START, end, "Run", EN)
    other = render_heatmap({}, YEAR_START, end, "Пробежка каждое утро, даже в дождь " * 5, RU)
    assert png_size(one) == png_size(other)
    assert render_heatmap(mixed(YEAR_START, end), YEAR_START, end, "Run", EN) == one


def test_a_year_starting_on_a_sunday_spans_54_weeks_and_is_accepted():
    start = date(2025, 6, 8)
    assert start.weekday() == 6
    end = start + timedelta(days=365)
    width, _ = png_size(render_heatmap(mixed(start, end), start, end, "Run", EN))
    assert width <= 950


def test_an_empty_calendar_renders_every_day_as_blank():
    start = TODAY - timedelta(days=59)
    data = render_heatmap({}, start, TODAY, "Nothing yet", EN)
    assert png_size(data) == png_size(render_heatmap(mixed(start, TODAY), start, TODAY, "x", EN))
    image = pixels(data)
    assert count_colour(image, heatmap._BLANK) > 60 * 100


@pytest.mark.parametrize("length", [1, 3, 6])
def test_a_range_shorter_than_a_week_renders_a_small_picture(length):
    start = TODAY - timedelta(days=length - 1)
    data = render_heatmap(mixed(start, TODAY), start, TODAY, "Зарядка", RU)
    width, height = png_size(data)
    year_width, _ = png_size(render_heatmap({}, YEAR_START, TODAY, "x", EN))
    assert width < year_width / 2 and height <= 300
    pixels(data)


def test_the_colours_follow_the_kind_of_day():
    start = TODAY - timedelta(days=90)
    success = pixels(render_heatmap(uniform("success", start, TODAY), start, TODAY, "x", EN))
    failure = pixels(render_heatmap(uniform("failure", start, TODAY), start, TODAY, "x", EN))
    green, pink = heatmap._SUCCESS, heatmap._FAILURE
    assert count_colour(success, green) > 10 * count_colour(failure, green)
    assert count_colour(failure, pink) > 10 * count_colour(success, pink)


def test_partial_days_get_lighter_green_for_smaller_fractions():
    low = heatmap._style(DayState("partial", 0.1)).face
    high = heatmap._style(DayState("partial", 0.9)).face
    assert sum(to_rgb(low)) > sum(to_rgb(high)) > sum(to_rgb(heatmap._SUCCESS))
    assert heatmap._style(DayState("partial", None)).face == heatmap._style(
        DayState("partial", 0.5)).face


def test_every_kind_has_its_own_look():
    looks = {kind: heatmap._style(DayState(kind, 0.5 if kind == "partial" else None))
             for kind in KINDS}
    assert looks["rest"] == looks["paused"] and looks["rest"].dot
    assert looks["not_due"] == looks["empty"] == heatmap._style(None)
    assert looks["future"].face == "white" and looks["future"].edge
    assert looks["pending"].edge and looks["pending"].edge_px > looks["future"].edge_px
    distinct = {looks[k] for k in ("success", "partial", "failure", "skipped", "rest", "not_due",
                                   "future", "pending")}
    assert len(distinct) == 8


def test_cyrillic_and_emoji_render_without_warnings():
    start = TODAY - timedelta(days=120)
    data = no_warnings(lambda: render_heatmap(mixed(start, TODAY), start, TODAY,
                                              "🏃 Утренняя пробежка 💪", RU))
    pixels(data)
    rows = [("💧 Вода", mixed(TODAY - timedelta(days=29), TODAY)), ("🧘", {}),
            ("Чтение 📚 20 страниц", {})]
    start = TODAY - timedelta(days=29)
    pixels(no_warnings(lambda: render_overview(rows, start, TODAY, "Последние 30 дней 📈", RU)))


def test_emoji_are_left_out_instead_of_drawn_as_boxes():
    assert heatmap._drawable("🏃 Утренняя пробежка 💪") == "Утренняя пробежка"
    assert heatmap._drawable("Пн Вт Ср Чт Пт Сб Вс ёЁ") == "Пн Вт Ср Чт Пт Сб Вс ёЁ"
    assert heatmap._drawable("line\nbreak\ttab\x00") == "line break tab"
    start = TODAY - timedelta(days=29)
    days = mixed(start, TODAY)
    with_emoji = render_overview([("💧 Вода", days)], start, TODAY, "📈 Итоги", RU)
    assert with_emoji == render_overview([("Вода", days)], start, TODAY, "Итоги", RU)


def test_dollar_signs_are_text_not_mathtext():
    start = TODAY - timedelta(days=29)
    rows = [("Save $5 a day, $x^2$", {}), ("\\frac{1}{2} $", {})]
    pixels(no_warnings(lambda: render_overview(rows, start, TODAY, "$$ budget $", EN)))


def test_the_overview_has_one_row_per_habit():
    start = TODAY - timedelta(days=29)
    sizes = [png_size(render_overview([(f"Habit {i}", mixed(start, TODAY))] * n, start, TODAY,
                                      "Last 30 days", EN))
             for i, n in enumerate((0, 1, 5, 6))]
    widths = {w for w, _ in sizes}
    heights = [h for _, h in sizes]
    assert len(widths) == 1 and 600 <= widths.pop() <= 950
    assert heights[0] < heights[1] < heights[2] < heights[3]
    assert heights[2] - heights[1] == 4 * (heights[3] - heights[2])


def test_long_habit_names_are_shortened_and_do_not_widen_the_picture():
    start = TODAY - timedelta(days=29)
    short = render_overview([("Run", {})], start, TODAY, "Last 30 days", EN)
    long = render_overview([("A habit with a name much longer than the column " * 3, {})],
                           start, TODAY, "Last 30 days", EN)
    assert png_size(short) == png_size(long) and short != long
    assert len(long) < 100_000


def test_a_long_overview_range_still_fits():
    start = TODAY - timedelta(days=heatmap.MAX_OVERVIEW_DAYS - 1)
    data = render_overview([("Run", mixed(start, TODAY)), ("Read", {})], start, TODAY, "x", EN)
    assert png_size(data)[0] <= 1000


def test_rendering_from_four_threads_gives_the_same_pictures():
    start = TODAY - timedelta(days=29)
    rows = [("💧 Вода", mixed(start, TODAY)), ("Read", mixed(start, TODAY, TODAY - timedelta(3)))]
    jobs: list[Callable[[], bytes]] = [
        lambda: render_heatmap(mixed(YEAR_START, TODAY), YEAR_START, TODAY, "Пробежка", RU),
        lambda: render_overview(rows, start, TODAY, "Last 30 days", EN),
    ]
    expected = [job() for job in jobs]
    barrier = threading.Barrier(4)

    def work(worker: int) -> list[bytes]:
        barrier.wait(timeout=30)
        return [jobs[(worker + i) % 2]() for i in range(4)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(4)))
    for worker, pictures in enumerate(results):
        for i, data in enumerate(pictures):
            assert data == expected[(worker + i) % 2]
            pixels(data)


def test_start_after_end_is_refused():
    with pytest.raises(ValueError, match="ends before it starts"):
        render_heatmap({}, TODAY, TODAY - timedelta(days=1), "x", EN)
    with pytest.raises(ValueError, match="ends before it starts"):
        render_overview([], TODAY, TODAY - timedelta(days=1), "x", EN)


def test_ranges_too_long_and_too_many_rows_are_refused():
    with pytest.raises(ValueError, match="weeks"):
        render_heatmap({}, TODAY - timedelta(days=7 * heatmap.MAX_WEEKS), TODAY, "x", EN)
    with pytest.raises(ValueError, match="days"):
        render_overview([], TODAY - timedelta(days=heatmap.MAX_OVERVIEW_DAYS), TODAY, "x", EN)
    with pytest.raises(ValueError, match="rows"):
        render_overview([("x", {})] * (heatmap.MAX_OVERVIEW_ROWS + 1), TODAY, TODAY, "x", EN)


def test_days_outside_the_range_are_ignored():
    start = TODAY - timedelta(days=13)
    inside = mixed(start, TODAY)
    wider = {**mixed(start - timedelta(days=30), TODAY + timedelta(days=30)), **inside}
    assert render_heatmap(wider, start, TODAY, "x", EN) == render_heatmap(inside, start, TODAY,
                                                                          "x", EN)


def test_labels_need_seven_weekdays_and_twelve_months():
    assert EN.weekdays == tuple(EN.weekdays) and isinstance(RU.months, tuple)
    hash(RU)
    with pytest.raises(ValueError, match="7 weekday"):
        HeatmapLabels(weekdays=("Mon",), months=EN.months, done="", partly="", missed="",
                      skipped="", rest="")
    with pytest.raises(ValueError, match="12 month"):
        HeatmapLabels(weekdays=EN.weekdays, months=("Jan",), done="", partly="", missed="",
                      skipped="", rest="")
