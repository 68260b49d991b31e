"""Message text and reply markup rules of the Telegram Bot API emulator.

What a bot sends is parsed (``telegram_emulator_parsers``), trimmed and measured like Telegram
does: text length is counted in code points after entity parsing, entity offsets in UTF-16
code units. Reply markup is validated and normalised the way the Bot API echoes it back.
"""

from __future__ import annotations

import json
import re
from typing import Any

from habitbot.sandbox.telegram_emulator_parsers import (
    SPACES,
    EntityParseError,
    FormattedText,
    checked_url,
    parse_html,
    parse_markdown,
    parse_markdown_v2,
    utf16_len,
)

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_INLINE_BUTTONS = 100  # Telegram answers "reply markup is too long" past it

_BUTTON_ACTIONS = (
    "callback_data", "url", "login_url", "switch_inline_query", "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat", "callback_game", "pay", "web_app", "copy_text",
)


class ApiError(Exception):
    """A Bot API failure answered with Telegram's error envelope."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False, "error_code": self.code, "description": self.description
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


# ---------------------------------------------------------------- text as sent


def _trim(formatted: FormattedText) -> FormattedText:
    text = formatted.text
    stripped_left = text.lstrip(SPACES)
    left = utf16_len(text) - utf16_len(stripped_left)
    result = stripped_left.rstrip(SPACES)
    total = utf16_len(result)
    entities = []
    for entity in formatted.entities:
        start = max(entity["offset"] - left, 0)
        end = min(entity["offset"] + entity["length"] - left, total)
        if end > start:
            entities.append({**entity, "offset": start, "length": end - start})
    return FormattedText(result, entities)


def format_text(
    raw: str, parse_mode: str | None, entities: Any = None, strict_entities: bool = False
) -> FormattedText:
    """Turn the text a bot sent into what the user sees (plain text + entities), trimmed.

    Raises :class:`ApiError` for malformed markup, like Telegram's ``can't parse entities``.
    """
    mode = (parse_mode or "").strip().lower()
    try:
        if isinstance(entities, list) and entities:
            formatted = FormattedText(raw, [dict(e) for e in entities if isinstance(e, dict)])
        elif mode == "html":
            formatted = parse_html(raw, strict_entities)
        elif mode == "markdownv2":
            formatted = parse_markdown_v2(raw)
        elif mode == "markdown":
            formatted = parse_markdown(raw)
        elif mode:
            raise bad_request("unsupported parse_mode")
        else:
            formatted = FormattedText(raw, [])
    except EntityParseError as exc:
        raise bad_request(f"can't parse entities: {exc}") from None
    return _trim(formatted)


def command_entities(text: str) -> list[dict[str, Any]]:
    """Entities Telegram attaches to a user's message that starts with ``/command``."""
    match = re.match(r"/[A-Za-z0-9_]{1,64}(@[A-Za-z0-9_]{3,32})?(?![A-Za-z0-9_/<>])", text)
    if not match:
        return []
    return [{"type": "bot_command", "offset": 0, "length": utf16_len(match.group(0))}]


# ---------------------------------------------------------------- reply markup


def parse_json_param(value: Any, what: str) -> Any:
    """Decode a JSON-typed parameter that may arrive as a JSON string (form bodies)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise bad_request(f"can't parse {what} JSON object") from None


def _button_error(message: str) -> ApiError:
    return bad_request(f"can't parse inline keyboard button: {message}")


def _inline_button(button: Any) -> dict[str, Any]:
    if not isinstance(button, dict):
        raise _button_error("InlineKeyboardButton must be an Object")
    text = button.get("text")
    if not isinstance(text, str):
        raise _button_error("Can't find field \"text\"")
    result: dict[str, Any] = {"text": text}
    for action in _BUTTON_ACTIONS:
        if action in button:
            result[action] = button[action]
    if len(result) == 1:
        raise _button_error("Text buttons are unallowed in the inline keyboard")
    if "callback_data" in result:
        data = result["callback_data"]
        size = len(data.encode("utf-8")) if isinstance(data, str) else 0
        if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in result and not (isinstance(result["url"], str) and checked_url(result["url"])):
        raise bad_request("BUTTON_URL_INVALID")
    return result


def _rows(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise bad_request(f'Field "{field}" of the reply markup must be an Array of Arrays')
    return value


def parse_reply_markup(value: Any) -> dict[str, Any] | None:
    """Validate ``reply_markup``; returns the normalised markup or None when absent."""
    if value is None or value == "":
        return None
    markup = parse_json_param(value, "reply keyboard markup")
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = _rows(markup["inline_keyboard"], "inline_keyboard")
        if sum(len(row) for row in rows) > MAX_INLINE_BUTTONS:
            raise bad_request("reply markup is too long")
        return {"inline_keyboard": [[_inline_button(b) for b in row] for row in rows]}
    if "keyboard" in markup:
        _rows(markup["keyboard"], "keyboard")
        return dict(markup)
    if markup.get("remove_keyboard") or markup.get("force_reply"):
        return dict(markup)
    raise bad_request("can't parse reply keyboard markup JSON object")


def inline_markup(markup: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a reply markup that Telegram echoes back in Message objects."""
    if markup and "inline_keyboard" in markup:
        return markup
    return None
