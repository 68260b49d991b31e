"""Translations from the gettext catalogs in `habitbot/locale` (Russian default, English).

The `.po` files are compiled in memory when first used, so a checkout runs without a separate
compile step. Every user-visible string goes through `gettext`/`ngettext` of a `Translator`.
"""

from __future__ import annotations

import gettext as _gettext
import io
import threading
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
DEFAULT_LANGUAGE = "ru"
LANGUAGES = ("ru", "en")

_cache: dict[str, _gettext.GNUTranslations] = {}
_lock = threading.Lock()


def normalise_language(code: str | None) -> str:
    """Map Telegram's language_code (e.g. 'en-GB', 'ru') to a supported language."""
    if code:
        base = code.split("-")[0].split("_")[0].lower()
        if base in LANGUAGES:
            return base
        return "en" if base not in ("uk", "be", "kk") else DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def _load(language: str) -> _gettext.GNUTranslations:
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as fp:
        catalog = read_po(fp, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return _gettext.GNUTranslations(buffer)


def translations(language: str) -> _gettext.GNUTranslations:
    language = language if language in LANGUAGES else DEFAULT_LANGUAGE
    with _lock:
        if language not in _cache:
            _cache[language] = _load(language)
        return _cache[language]


class Translator:
    def __init__(self, language: str):
        self.language = language if language in LANGUAGES else DEFAULT_LANGUAGE
        self._t = translations(self.language)

    def gettext(self, message: str, **params: object) -> str:
        text = self._t.gettext(message)
        return text.format(**params) if params else text

    def ngettext(self, singular: str, plural: str, n: int, **params: object) -> str:
        text = self._t.ngettext(singular, plural, n)
        return text.format(n=n, **params)


def N_(message: str) -> str:
    """Mark a string for extraction without translating it yet."""
    return message
