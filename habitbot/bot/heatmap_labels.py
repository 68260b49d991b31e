"""The /stats calendar picture with labels in the user's language."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from habitbot.bot.context import Context
from habitbot.bot.texts import WEEKDAYS
from habitbot.i18n import N_
from habitbot.services.heatmap import HeatmapLabels, render_heatmap
from habitbot.services.progress import DayState

MONTHS = (N_("Jan"), N_("Feb"), N_("Mar"), N_("Apr"), N_("May"), N_("Jun"), N_("Jul"),
          N_("Aug"), N_("Sep"), N_("Oct"), N_("Nov"), N_("Dec"))


def labels(ctx: Context) -> HeatmapLabels:
    return HeatmapLabels(
        weekdays=tuple(ctx._(w) for w in WEEKDAYS), months=tuple(ctx._(m) for m in MONTHS),
        done=ctx._("done"), partly=ctx._("partly"), missed=ctx._("missed"),
        skipped=ctx._("skipped"), rest=ctx._("rest / pause"))


def render(ctx: Context, days: Mapping[date, DayState], start: date, end: date,
           title: str) -> bytes:
    return render_heatmap(days, start, end, title, labels(ctx))
