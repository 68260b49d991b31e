"""Telegram's size limits on what a bot sends, and how long a text is as Telegram counts it.

Text is 1–4096 characters after entity parsing (the HTML tags removed, entities decoded), a
caption 1–1024, an inline keyboard at most 100 buttons. Lengths are counted in UTF-16 code
units, which is never less than the characters Telegram counts, so a text that fits here fits
there.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
BUTTON_LIMIT = 100

_TAG = re.compile(r"<[^<>]*>")  # one negated class: linear


def visible_length(html_text: str) -> int:
    """The length of an HTML-formatted text once Telegram has parsed its entities."""
    plain = html.unescape(_TAG.sub("", html_text))
    return len(plain.encode("utf-16-le")) // 2


def fit_lines(head: list[str], lines: list[str], tail: list[str],
              more: Callable[[int], str], limit: int = TEXT_LIMIT) -> list[str]:
    """`head + lines + tail` (joined by newlines) within `limit`: when they do not all fit,
    the lines that do, then `more(number left out)`."""
    sizes = [visible_length(line) + 1 for line in lines]
    budget = limit - sum(visible_length(s) + 1 for s in head + tail)
    if sum(sizes) <= budget:
        return head + lines + tail
    budget -= visible_length(more(len(lines))) + 1
    kept = 0
    for size in sizes:
        if size > budget:
            break
        budget -= size
        kept += 1
    return head + lines[:kept] + [more(len(lines) - kept)] + tail
