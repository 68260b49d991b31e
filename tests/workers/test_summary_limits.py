"""The weekly summary fits one Telegram message however many habits there are."""

from __future__ import annotations

from habitbot.services.summaries import WeekLine
from habitbot.telegram.limits import TEXT_LIMIT, visible_length
from workers.summaries import render


def test_a_summary_of_many_long_habits_fits_and_says_how_many_are_left_out():
    lines = [WeekLine(f"{n:04d} " + "Ж&<" * 32, 7, 7, 365, "days") for n in range(1000)]
    text = render("ru", lines)
    assert visible_length(text) <= TEXT_LIMIT
    shown = text.count(" — 7/7 · ")
    assert 10 < shown < 1000
    assert f"…и ещё {1000 - shown} привычек" in text
    assert text.endswith("Отключить итоги можно в /settings.")
    assert "Всего: 100% от запланированного." in text


def test_a_short_summary_is_whole():
    text = render("en", [WeekLine("Read", 5, 7, 3, "days")])
    assert "…and" not in text and "Read — 5/7" in text
