"""Repository-wide checks: lint, and complete translation catalogs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    result = subprocess.run([str(Path(sys.executable).parent / "ruff"), "check", "habitbot",
                             "workers", "webhooks", "migrations", "tests", "drills", "bench"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _catalog(language: str):
    with (ROOT / "habitbot/locale" / language / "LC_MESSAGES/messages.po").open("rb") as fp:
        return read_po(fp, locale=language)


def _ids(path: Path) -> set:
    with path.open("rb") as fp:
        return {m.id for m in read_po(fp) if m.id}


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w*)(?::[^}]*)?\}", text))


@pytest.mark.parametrize("language", ["ru", "en"])
def test_every_message_is_translated_with_the_same_placeholders(language):
    template = _ids(ROOT / "habitbot/locale/messages.pot")
    catalog = {m.id: m.string for m in _catalog(language) if m.id}
    assert template <= set(catalog), f"missing in {language}: {template - set(catalog)}"
    for msgid, translated in catalog.items():
        singular = msgid[0] if isinstance(msgid, tuple) else msgid
        forms = translated if isinstance(translated, tuple) else (translated,)
        assert all(forms), f"untranslated in {language}: {singular!r}"
        for form in forms:
            assert _placeholders(form) == _placeholders(singular), (language, singular)


def test_catalog_template_is_up_to_date(tmp_path):
    out = tmp_path / "messages.pot"
    subprocess.run([str(Path(sys.executable).parent / "pybabel"), "-q", "extract", "-k", "N_",
                    "-k", "gettext", "-k", "ngettext:1,2", "--no-location", "-o", str(out),
                    "habitbot", "workers"], cwd=ROOT, check=True)
    assert _ids(out) == _ids(ROOT / "habitbot/locale/messages.pot"), \
        "run `make i18n-update` and translate the new strings"


def test_mypy_is_clean():
    result = subprocess.run([str(Path(sys.executable).parent / "mypy")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
