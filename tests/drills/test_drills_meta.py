"""The drills and the runbooks stay in step, checked without starting anything: 16 drills, one
per runbook section present in both languages; every command a drill runs as an operator would
(`stack.sh(...)`) is quoted in its section of both runbooks; every `habitbot …` command line in
the runbooks parses with the real CLI parser.

A `habitbot` command line is an inline code span, or a line of a fenced code block, that starts
with `habitbot `. Placeholders such as `<telegram_id>` are replaced by sample values first.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import re
import shlex
import textwrap
from pathlib import Path

import pytest

from drills import catalog
from drills.__main__ import runbook_order
from drills.core import DRILLS
from habitbot.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = {"ru": ROOT / "docs/RUNBOOK.md", "en": ROOT / "docs/RUNBOOK.en.md"}
EXPECTED: set[str] = {"1.0", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.8", "1.9", "1.10",
            "2.1", "2.2", "2.3", "2.4", "2.5"}
IN_ORDER = sorted(EXPECTED, key=runbook_order)
SAMPLES = {
    "telegram_id": "5005",
    "payment": "42",
    "provider_id": "2c5d3a2b-000f-5000-9000-1b2c3d4e5f60",
    "charge_id": "stxAbC-123",
    "job_id": "3f1c2a9e",
    "name": "habit_reminders",
    "backup date": "2026-01-31",
    "дата бэкапа": "2026-01-31",
}
HEADING = re.compile(r"^### (\d+\.\d+) ", re.MULTILINE)
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def _text(language: str) -> str:
    return RUNBOOKS[language].read_text(encoding="utf-8")


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def sections(text: str) -> dict[str, str]:
    """Section number → its text, up to the next ### or ## heading."""
    found = {}
    for match in HEADING.finditer(text):
        rest = text[match.end():]
        end = re.search(r"^##", rest, re.MULTILINE)
        found[match.group(1)] = rest[:end.start() if end else len(rest)]
    return found


def habitbot_lines(text: str) -> list[str]:
    lines = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("habitbot "):
                lines.append(re.sub(r"\s+#.*$", "", line))
    prose = FENCE.sub("", text)
    for _, span in SPAN.findall(prose):
        span = _squeeze(span)
        if span.startswith("habitbot "):
            lines.append(span)
    return lines


def _filled(line: str) -> str:
    def sample(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in SAMPLES:
            raise AssertionError(f"unknown placeholder <{name}> in `{line}`: add a sample")
        return SAMPLES[name]
    return re.sub(r"<([^<>]+)>", sample, line)


def parse_error(line: str) -> str | None:
    argv = shlex.split(_filled(line))[1:]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(argv)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue() else "exit"
    return None


# -- what a drill runs --------------------------------------------------------------------------

def _literal(node: ast.expr, names: dict[str, object]) -> list[str] | None:
    """The fixed pieces of a command given to `sh()`: one for a string, the parts around each
    run-time value for an f-string (module constants filled in); None if not a string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name) and isinstance(names.get(node.id), str):
        return [str(names[node.id])]
    if isinstance(node, ast.JoinedStr):
        pieces, current = [], ""
        for part in node.values:
            if isinstance(part, ast.Constant):
                current += str(part.value)
            elif (isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name)
                  and isinstance(names.get(part.value.id), str)):
                current += str(names[part.value.id])
            else:
                pieces.append(current)
                current = ""
        pieces.append(current)
        return [p for p in pieces if p.strip()]
    return None


def drill_commands(name: str) -> list[list[str]]:
    """The commands drill `name` runs through `sh()`/`sh_ok()`, in its own body and in the
    module's helper functions it calls."""
    function = DRILLS[name].run
    module = importlib.import_module(function.__module__)
    names = vars(module)
    source = ast.parse(textwrap.dedent(inspect.getsource(function)))
    bodies, seen, commands = [source], {function.__name__}, []
    while bodies:
        tree = bodies.pop()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("sh", "sh_ok") \
                    and node.args:
                pieces = _literal(node.args[0], names)
                assert pieces is not None, f"drill {name}: sh() needs a string command"
                commands.append(pieces)
            elif isinstance(node.func, ast.Name) and node.func.id not in seen \
                    and inspect.isfunction(names.get(node.func.id)) \
                    and names[node.func.id].__module__ == module.__name__:
                seen.add(node.func.id)
                bodies.append(ast.parse(textwrap.dedent(inspect.getsource(
                    names[node.func.id]))))
    return commands


# -- the tests ---------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _drills_loaded() -> None:
    catalog.load()


def test_there_is_one_drill_per_runbook_entry():
    assert set(DRILLS) == EXPECTED
    assert len(DRILLS) == 16
    assert all(item.section == name for name, item in DRILLS.items())


@pytest.mark.parametrize("language", sorted(RUNBOOKS))
def test_each_drill_names_a_section_of_the_runbook(language):
    present = sections(_text(language))
    assert set(present) == EXPECTED, f"{RUNBOOKS[language].name}: {sorted(present)}"


@pytest.mark.parametrize("language", sorted(RUNBOOKS))
@pytest.mark.parametrize("name", IN_ORDER)
def test_commands_a_drill_runs_are_written_in_its_section(language, name):
    section = _squeeze(sections(_text(language))[name])
    commands = drill_commands(name)
    assert commands, f"drill {name} runs no documented command"
    missing = [" … ".join(pieces) for pieces in commands
               if not all(_squeeze(piece) in section for piece in pieces)]
    assert not missing, f"{RUNBOOKS[language].name} § {name} does not quote: {missing}"


@pytest.mark.parametrize("language", sorted(RUNBOOKS))
def test_every_habitbot_command_in_the_runbook_parses(language):
    lines = habitbot_lines(_text(language))
    assert len(lines) > 40, "the runbook quotes the CLI throughout"
    errors = {line: error for line in lines if (error := parse_error(line)) is not None}
    assert not errors, errors


def test_a_command_the_cli_does_not_know_is_caught():
    assert parse_error("habitbot jobs purge --all") is not None
    assert parse_error("habitbot users show not-a-number") is not None
    assert parse_error("habitbot fsm reset <telegram_id>") is None
    with pytest.raises(AssertionError, match="unknown placeholder"):
        parse_error("habitbot users show <user>")


def test_a_command_missing_from_a_section_is_caught():
    section = _squeeze("run `habitbot deploy-gate` then `supervisorctl -c supervisord.conf "
                       "restart\nhabitbot:*`")
    assert _squeeze("supervisorctl -c supervisord.conf restart habitbot:*") in section
    assert "habitbot check-schema" not in section
