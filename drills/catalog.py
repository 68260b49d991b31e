"""The modules that register drills, in runbook order."""

from __future__ import annotations

import importlib

MODULES = ("drills.platform", "drills.reminders", "drills.payments", "drills.procedures")


def load() -> None:
    for module in MODULES:
        importlib.import_module(module)
