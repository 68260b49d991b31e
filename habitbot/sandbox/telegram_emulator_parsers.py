"""Telegram's HTML, MarkdownV2 and legacy Markdown parsers, as the emulator applies them.

They follow the rules of Telegram's own parser (tdlib's ``parse_html`` /
``parse_markdown_v2``): the same tags and escapes are accepted, the same inputs are refused,
and the error descriptions carry the same wording and UTF-8 byte offsets. Entity offsets and
lengths are counted in UTF-16 code units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_HTML_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji",
     "span", "pre", "code", "blockquote"}
)
_HTML_SIMPLE = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "tg-spoiler": "spoiler",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
SPACES = " \t\r\n\v\f"
_MD2_RESERVED = "_*[]()~`>#+-=|{}.!\n"
_MD2_NAMES = {
    "bold": "Bold", "italic": "Italic", "underline": "Underline", "strikethrough": "Strikethrough",
    "spoiler": "Spoiler", "code": "Code", "pre": "Pre", "pre_code": "PreCode",
    "text_link": "TextUrl", "custom_emoji": "CustomEmoji", "blockquote": "BlockQuote",
}
_URL_RE = re.compile(r"^(https?|tg)://\S+$|^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(/\S*)?$")


class EntityParseError(Exception):
    """Raised by the parsers; becomes ``Bad Request: can't parse entities: ...``."""


@dataclass
class FormattedText:
    """Text as the user sees it, with its entities (offsets in UTF-16 code units)."""

    text: str
    entities: list[dict[str, Any]]


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _byte_offset(src: str, index: int) -> int:
    return len(src[:index].encode("utf-8", "surrogatepass"))


def _entity(kind: str, offset: int, length: int, arg: str = "") -> dict[str, Any]:
    entity: dict[str, Any] = {"type": kind, "offset": offset, "length": length}
    if kind == "text_link":
        entity["url"] = arg
    elif kind == "pre" and arg:
        entity["language"] = arg
    elif kind == "custom_emoji":
        entity["custom_emoji_id"] = arg
    return entity


def checked_url(url: str) -> str:
    url = url.strip()
    return url if _URL_RE.match(url) else ""


# ---------------------------------------------------------------- HTML


def _decode_html_entity(src: str, pos: int) -> tuple[str, int] | None:
    """Decode ``&...`` at ``pos`` like Telegram: unknown names stay literal text."""
    end = pos + 1
    if src.startswith("#", end):
        end += 1
        hexadecimal = src.startswith("x", end)
        if hexadecimal:
            end += 1
        start = end
        digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
        while end < len(src) and src[end] in digits:
            end += 1
        code = int(src[start:end], 16 if hexadecimal else 10) if end > start else 0
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None
        char = chr(code)
    else:
        while end < len(src) and src[end].isascii() and src[end].isalpha():
            end += 1
        named = _NAMED_ENTITIES.get(src[pos + 1:end])
        if named is None:
            return None
        char = named
    if src.startswith(";", end):
        end += 1
    return char, end


class _HtmlParser:
    def __init__(self, src: str, strict_entities: bool) -> None:
        self.src = src
        self.strict = strict_entities
        self.out: list[str] = []
        self.u16 = 0
        self.entities: list[dict[str, Any]] = []
        self.stack: list[tuple[str, str, int, int]] = []

    def error(self, message: str) -> EntityParseError:
        return EntityParseError(message)

    def at(self, i: int) -> str:
        return self.src[i] if i < len(self.src) else ""

    def parse(self) -> FormattedText:
        i = 0
        while i < len(self.src):
            c = self.src[i]
            if c == "&":
                decoded = _decode_html_entity(self.src, i)
                if decoded is not None:
                    self.emit(decoded[0])
                    i = decoded[1]
                    continue
                if self.strict:
                    raise self.error(
                        f"Unsupported HTML entity at byte offset {_byte_offset(self.src, i)}"
                    )
            if c != "<":
                self.emit(c)
                i += 1
                continue
            i = self.end_tag(i) if self.at(i + 1) == "/" else self.start_tag(i)
        if self.stack:
            raise self.error(
                f"Can't find end tag corresponding to start tag {self.stack[-1][0]}"
            )
        return FormattedText("".join(self.out), _sorted(self.entities))

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.u16 += utf16_len(text)

    def start_tag(self, begin: int) -> int:
        offset = _byte_offset(self.src, begin)
        i = begin + 1
        while i < len(self.src) and self.src[i] not in SPACES and self.src[i] != ">":
            i += 1
        if i >= len(self.src):
            raise self.error(f"Unclosed start tag at byte offset {offset}")
        tag = self.src[begin + 1:i].lower()
        if tag not in _HTML_TAGS:
            raise self.error(f'Unsupported start tag "{tag}" at byte offset {offset}')
        argument, i = self.attributes(tag, i, offset)
        if tag == "span" and argument != "spoiler":
            raise self.error(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
        self.stack.append((tag, argument, self.u16, len(self.out)))
        return i + 1

    def attributes(self, tag: str, i: int, offset: int) -> tuple[str, int]:
        argument = ""
        while self.at(i) != ">":
            while self.at(i) and self.at(i) in SPACES:
                i += 1
            if self.at(i) == ">":
                break
            if not self.at(i):
                raise self.error(f"Unclosed start tag at byte offset {offset}")
            name_start = i
            while self.at(i) and self.at(i) not in SPACES and self.at(i) not in "=>":
                i += 1
            name = self.src[name_start:i]
            if not name:
                raise self.error(f'Empty attribute name in the tag "{tag}" at byte offset {offset}')
            while self.at(i) and self.at(i) in SPACES:
                i += 1
            if self.at(i) != "=":
                if tag == "blockquote" and name == "expandable":
                    argument = "expandable"
                    continue
                raise self.error(
                    "Expected equal sign in declaration of an attribute of the tag "
                    f'"{tag}" at byte offset {offset}'
                )
            i += 1
            while self.at(i) and self.at(i) in SPACES:
                i += 1
            if not self.at(i):
                raise self.error(f'Unclosed start tag "{tag}" at byte offset {offset}')
            value, i = self.attribute_value(i)
            if not self.at(i):
                raise self.error(f"Unclosed start tag at byte offset {offset}")
            argument = _tag_argument(tag, name, value, argument)
        return argument, i

    def attribute_value(self, i: int) -> tuple[str, int]:
        quote = self.at(i)
        if quote not in ("'", '"'):
            start = i
            while self.at(i) and (self.at(i).isalnum() or self.at(i) in ".-"):
                i += 1
            ch = self.at(i)
            if not ch or (ch not in SPACES and ch != ">"):
                raise self.error(
                    f"Unexpected end of name token at byte offset {_byte_offset(self.src, start)}"
                )
            return self.src[start:i].lower(), i
        i += 1
        value: list[str] = []
        while self.at(i) and self.at(i) != quote:
            if self.at(i) == "&":
                decoded = _decode_html_entity(self.src, i)
                if decoded is not None:
                    value.append(decoded[0])
                    i = decoded[1]
                    continue
            value.append(self.src[i])
            i += 1
        if self.at(i) == quote:
            i += 1
        return "".join(value), i

    def end_tag(self, begin: int) -> int:
        offset = _byte_offset(self.src, begin)
        if not self.stack:
            raise self.error(f"Unexpected end tag at byte offset {offset}")
        i = begin + 2
        while self.at(i) and self.at(i) not in SPACES and self.at(i) != ">":
            i += 1
        name = self.src[begin + 2:i].lower()
        while self.at(i) and self.at(i) in SPACES:
            i += 1
        if self.at(i) != ">":
            raise self.error(f"Unclosed end tag at byte offset {offset}")
        tag, argument, start, out_index = self.stack.pop()
        if name and name != tag:
            raise self.error(
                f'Unmatched end tag at byte offset {offset}, expected "</{tag}>", found "</{name}>"'
            )
        if self.u16 > start:
            self.close_entity(tag, argument, start, "".join(self.out[out_index:]))
        return i + 1

    def close_entity(self, tag: str, argument: str, start: int, inner: str) -> None:
        length = self.u16 - start
        if tag in _HTML_SIMPLE or tag == "span":
            self.entities.append(_entity(_HTML_SIMPLE.get(tag, "spoiler"), start, length))
        elif tag == "blockquote":
            kind = "expandable_blockquote" if argument == "expandable" else "blockquote"
            self.entities.append(_entity(kind, start, length))
        elif tag == "tg-emoji":
            if not argument.isdigit() or int(argument) == 0:
                raise self.error("Invalid custom emoji identifier specified")
            self.entities.append(_entity("custom_emoji", start, length, argument))
        elif tag == "a":
            url = checked_url(argument or inner)
            if url:
                self.entities.append(_entity("text_link", start, length, url))
        elif tag in ("pre", "code"):
            self.close_code(tag, argument, start, length)

    def close_code(self, tag: str, argument: str, start: int, length: int) -> None:
        last: dict[str, Any] = self.entities[-1] if self.entities else {}
        same_span = last.get("offset") == start and last.get("length") == length
        if tag == "pre" and same_span and last["type"] == "code" and last.get("language"):
            last["type"] = "pre"
        elif tag == "code" and same_span and last["type"] == "pre" and argument:
            last["language"] = argument
        else:
            entity = _entity("pre" if tag == "pre" else "code", start, length)
            if tag == "code" and argument:
                entity["language"] = argument
            self.entities.append(entity)


def _tag_argument(tag: str, name: str, value: str, current: str) -> str:
    if tag == "a" and name == "href":
        return value
    if tag == "code" and name == "class" and value.startswith("language-"):
        return value[len("language-"):]
    if tag == "span" and name == "class" and value.startswith("tg-"):
        return value[3:]
    if tag == "tg-emoji" and name == "emoji-id":
        return value
    return current


def _sorted(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    return sorted(entities, key=lambda e: (e["offset"], -e["length"]))


def parse_html(src: str, strict_entities: bool = False) -> FormattedText:
    """Parse Telegram-flavoured HTML into plain text and entities."""
    return _HtmlParser(src, strict_entities).parse()


# ---------------------------------------------------------------- MarkdownV2


class _MarkdownV2Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.out: list[str] = []
        self.u16 = 0
        self.entities: list[dict[str, Any]] = []
        self.stack: list[list[Any]] = []  # [kind, argument, u16 offset, source index, out index]
        self.blockquote = False

    def at(self, i: int) -> str:
        return self.src[i] if 0 <= i < len(self.src) else ""

    def reserved(self, c: str) -> EntityParseError:
        return EntityParseError(
            f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
        )

    def unclosed(self, item: list[Any]) -> EntityParseError:
        offset = _byte_offset(self.src, item[3])
        name = _MD2_NAMES[item[0]]
        return EntityParseError(f"Can't find end of {name} entity at byte offset {offset}")

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.u16 += utf16_len(text)

    def parse(self) -> FormattedText:
        i = 0
        while i < len(self.src):
            c, nxt = self.src[i], self.at(i + 1)
            if c == "\\" and nxt and 0 < ord(nxt) <= 126:
                self.emit(nxt)
                i += 2
                continue
            code_like = self.stack and self.stack[-1][0] in ("code", "pre", "pre_code")
            if c not in ("`" if code_like else _MD2_RESERVED):
                self.emit(c)
                i += 1
                continue
            i = self.close(i) if self.is_end(i) else self.open(i)
            i += 1
        self.finish()
        return FormattedText("".join(self.out), _sorted(self.entities))

    def is_end(self, i: int) -> bool:
        if not self.stack:
            return False
        c, nxt = self.src[i], self.at(i + 1)
        if self.blockquote and c == "\n" and nxt != ">":
            return True
        kind = self.stack[-1][0]
        return {
            "bold": c == "*",
            "italic": c == "_" and nxt != "_",
            "code": c == "`",
            "pre": c == "`" and nxt == "`" and self.at(i + 2) == "`",
            "text_link": c == "]",
            "underline": c == "_" and nxt == "_",
            "strikethrough": c == "~",
            "spoiler": c == "|" and nxt == "|",
            "custom_emoji": c == "]",
        }.get(kind if kind != "pre_code" else "pre", False)

    def open(self, i: int) -> int:
        c, nxt = self.src[i], self.at(i + 1)
        start = i
        argument = ""
        if c == "_":
            kind = "underline" if nxt == "_" else "italic"
            i += 1 if nxt == "_" else 0
        elif c in "*~":
            kind = "bold" if c == "*" else "strikethrough"
        elif c == "|" and nxt == "|":
            kind, i = "spoiler", i + 1
        elif c == "[":
            kind = "text_link"
        elif c == "`" and nxt == "`" and self.at(i + 2) == "`":
            kind, argument, i = self.open_pre(i + 3)
        elif c == "`":
            kind = "code"
        elif c == "!" and nxt == "[":
            kind, i = "custom_emoji", i + 1
        elif c == "\n":
            self.emit("\n")
            if nxt != ">":
                return i
            i += 1
            if self.blockquote:
                return i
            kind, self.blockquote = "blockquote", True
        elif c == ">" and i == 0:
            kind, self.blockquote = "blockquote", True
        else:
            raise self.reserved(c)
        self.stack.append([kind, argument, self.u16, start, len(self.out)])
        return i

    def open_pre(self, i: int) -> tuple[str, str, int]:
        end = i
        while self.at(end) and self.at(end) not in SPACES and self.at(end) != "`":
            end += 1
        kind, language = "pre", ""
        if end != i and end < len(self.src) and self.src[end] != "`":
            kind, language, i = "pre_code", self.src[i:end], end
        if self.at(i) in ("\n", "\r"):
            pair = self.at(i + 1) in ("\n", "\r") and self.at(i + 1) != self.at(i)
            i += 2 if pair else 1
        return kind, language, i - 1

    def close(self, i: int) -> int:
        item = self.stack[-1]
        kind = item[0]
        if self.src[i] == "\n" and kind != "blockquote":
            raise self.unclosed(item)
        argument, skip = item[1], self.u16 == item[2]
        if kind in ("underline", "spoiler"):
            i += 1
        elif kind in ("pre", "pre_code"):
            i += 2
        elif kind in ("text_link", "custom_emoji"):
            argument, i = self.close_link(i, item)
            skip = skip or not argument
        elif kind == "blockquote":
            self.blockquote = False
            self.emit(self.src[i])
        if not skip:
            name = "pre" if kind == "pre_code" else kind
            self.entities.append(_entity(name, item[2], self.u16 - item[2], argument))
        self.stack.pop()
        return i

    def close_link(self, i: int, item: list[Any]) -> tuple[str, int]:
        if self.at(i + 1) != "(":
            if item[0] == "custom_emoji":
                raise EntityParseError("Custom emoji entity must contain a tg://emoji URL")
            return checked_url("".join(self.out[item[4]:])), i
        i += 2
        begin, url = i, []
        while i < len(self.src) and self.src[i] != ")":
            if self.src[i] == "\\" and self.at(i + 1) and 0 < ord(self.at(i + 1)) <= 126:
                url.append(self.src[i + 1])
                i += 2
                continue
            url.append(self.src[i])
            i += 1
        if self.at(i) != ")":
            what = "a custom emoji URL" if item[0] == "custom_emoji" else "a URL"
            raise EntityParseError(
                f"Can't find end of {what} at byte offset {_byte_offset(self.src, begin)}"
            )
        link = "".join(url)
        if item[0] == "custom_emoji":
            emoji_id = link.rpartition("id=")[2]
            if not link.startswith("tg://emoji?") or not emoji_id.isdigit():
                raise EntityParseError("Invalid custom emoji identifier specified")
            return emoji_id, i
        return checked_url(link), i

    def finish(self) -> None:
        if self.blockquote and self.stack and self.stack[-1][0] == "blockquote":
            item = self.stack.pop()
            if self.u16 > item[2]:
                self.entities.append(_entity("blockquote", item[2], self.u16 - item[2]))
        if self.stack:
            raise self.unclosed(self.stack[-1])


def parse_markdown_v2(src: str) -> FormattedText:
    """Parse MarkdownV2; unescaped reserved characters are refused like Telegram does."""
    return _MarkdownV2Parser(src).parse()


def parse_markdown(src: str) -> FormattedText:
    """Parse the legacy Markdown mode (``*bold*``, ``_italic_``, ``[text](url)``, code)."""
    out: list[str] = []
    entities: list[dict[str, Any]] = []
    i, u16 = 0, 0
    while i < len(src):
        c = src[i]
        if c == "\\" and src[i + 1:i + 2] in ("_", "*", "`", "["):
            out.append(src[i + 1])
            u16, i = u16 + 1, i + 2
            continue
        if c not in "_*`[":
            out.append(c)
            u16, i = u16 + utf16_len(c), i + 1
            continue
        begin, start, first = i, u16, len(out)
        pre = src.startswith("```", i)
        end_char = "]" if c == "[" else c
        i += 3 if pre else 1
        while i < len(src) and (src[i] != end_char or (pre and not src.startswith("```", i))):
            out.append(src[i])
            u16, i = u16 + utf16_len(src[i]), i + 1
        if i >= len(src):
            raise EntityParseError(
                f"Can't find end of the entity starting at byte offset {_byte_offset(src, begin)}"
            )
        url = ""
        if c == "[" and src[i + 1:i + 2] == "(":
            close = src.find(")", i + 2)
            close = len(src) - 1 if close < 0 else close
            url, i = src[i + 2:close], close
        elif c == "[":
            url = "".join(out[first:])
        if u16 > start:
            kind = {"_": "italic", "*": "bold", "[": "text_link"}.get(c, "pre" if pre else "code")
            if kind != "text_link" or checked_url(url):
                entities.append(_entity(kind, start, u16 - start, checked_url(url)))
        i += 3 if pre else 1
    return FormattedText("".join(out), _sorted(entities))
