"""What setup.cfg declares, what the locks pin and what the code imports agree.

`make install` installs requirements-build.lock (setuptools, wheel) and then requirements.lock with
--require-hashes (production only); `make test` adds requirements-test.lock (production plus the
test extras); `make lock` regenerates all three.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"
RUNTIME_DIRS = ("habitbot", "workers", "webhooks", "migrations")  # what production runs
DEVELOPMENT_DIRS = ("tests", "drills", "bench")  # run with the test lock installed
OURS = {"habitbot", "workers", "webhooks", "migrations", "tests", "drills"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: \\)?$")


def _declared() -> tuple[list[Requirement], list[Requirement]]:
    """(install_requires, the test extra) of setup.cfg."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")

    def requirements(text: str) -> list[Requirement]:
        return [Requirement(line) for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")]

    return (requirements(config["options"]["install_requires"]),
            requirements(config["options.extras_require"]["test"]))


def _pins(lock: Path) -> dict[str, tuple[Version, int, list[str]]]:
    """{name: (version, number of hashes, the packages it is there for)} of a pip-compile lock."""
    pins: dict[str, tuple[Version, int, list[str]]] = {}
    name = ""
    for raw in lock.read_text().splitlines():
        line = raw.strip()
        if match := PIN.match(raw):
            name = canonicalize_name(match.group(1))
            assert name not in pins, f"{lock.name} pins {name} twice"
            pins[name] = (Version(match.group(2)), 0, [])
        elif line.startswith("--hash=sha256:") and name:
            version, hashes, via = pins[name]
            pins[name] = (version, hashes + 1, via)
        elif line.startswith("# via") and name:
            rest = line.removeprefix("# via").strip()
            if rest:
                pins[name][2].append(rest)
        elif line.startswith("#   ") and name:
            pins[name][2].append(line.removeprefix("#").strip())
        elif raw and not raw.startswith((" ", "#")):
            raise AssertionError(f"{lock.name}: unexpected line {raw!r}")
    return pins


@pytest.fixture(scope="module")
def declared():
    return _declared()


@pytest.fixture(scope="module")
def pins():
    return _pins(LOCK), _pins(TEST_LOCK), _pins(BUILD_LOCK)


def test_every_declared_requirement_is_pinned_in_its_lock_within_its_range(declared, pins):
    runtime, test_extra = declared
    production, with_tests, _ = pins
    for requirements, lock, name in ((runtime, production, LOCK.name),
                                     (runtime + test_extra, with_tests, TEST_LOCK.name)):
        for requirement in requirements:
            key = canonicalize_name(requirement.name)
            assert key in lock, f"{requirement.name} is declared but not pinned in {name}"
            version = lock[key][0]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{name} pins {requirement.name}=={version}, outside {requirement.specifier}: "
                "run `make lock`")


def test_every_pin_carries_hashes(pins):
    for lock, name in zip(pins, (LOCK.name, TEST_LOCK.name, BUILD_LOCK.name), strict=True):
        unhashed = [pin for pin, (_, hashes, _) in lock.items() if hashes == 0]
        assert not unhashed, f"{name}: pins without a hash: {unhashed}"


def test_the_test_and_build_locks_agree_with_the_production_lock(pins):
    production, with_tests, build = pins
    for smaller, larger, names in ((production, with_tests, (LOCK.name, TEST_LOCK.name)),
                                   (build, production, (BUILD_LOCK.name, LOCK.name))):
        for name, (version, _, _) in smaller.items():
            assert name in larger, f"{name} is in {names[0]} but not in {names[1]}"
            assert larger[name][0] == version, (
                f"{name}: {version} in {names[0]}, {larger[name][0]} in {names[1]}")
    assert {"setuptools", "wheel"} <= build.keys()


def test_production_lock_holds_no_test_dependency(declared, pins):
    # a test extra may be there only because a production package needs it (numpy: matplotlib)
    _, test_extra = declared
    production = pins[0]
    for requirement in test_extra:
        key = canonicalize_name(requirement.name)
        if key in production:
            via = production[key][2]
            assert via and not any(v.startswith("habitbot") for v in via), (
                f"{requirement.name} is in {LOCK.name} for the project itself")
    assert "pytest" not in production


# the last release with a published advisory that the floor in setup.cfg must exclude
LAST_VULNERABLE = {
    "requests": "2.32.3",  # CVE-2024-35195 (fixed in 2.32.0), CVE-2024-47081 (2.32.4)
    "urllib3": "2.6.2",  # CVE-2025-66418, CVE-2025-66471 (2.6.0), CVE-2026-21441 (2.6.3)
    "werkzeug": "3.1.5",  # the safe_join advisories fixed in 3.1.4 to 3.1.6
}


@pytest.mark.parametrize(("name", "vulnerable"), LAST_VULNERABLE.items())
def test_floors_exclude_releases_with_known_advisories(declared, pins, name, vulnerable):
    runtime, _ = declared
    matching = [r for r in runtime if canonicalize_name(r.name) == name]
    assert matching, f"{name} is not declared in install_requires"
    requirement = matching[0]
    assert not requirement.specifier.contains(vulnerable), f"raise the floor of {name}"
    assert pins[0][name][0] > Version(vulnerable)


def _imports(folder: Path) -> dict[str, str]:
    """{top-level module: one file importing it} for absolute imports under `folder`."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], str(path.relative_to(ROOT)))
    return found


def _undeclared(folders: tuple[str, ...], allowed: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for folder in folders:
        local = {p.stem for p in (ROOT / folder).glob("*.py")}  # bench's scripts import common
        for module, where in _imports(ROOT / folder).items():
            if module in sys.stdlib_module_names or module in OURS or module in local:
                continue
            names = {canonicalize_name(d) for d in distributions.get(module, [])}
            if not names & allowed:
                missing.append(f"{module} (imported by {where}; installed from "
                               f"{sorted(names) or 'nothing'})")
    return missing


def test_every_import_of_the_production_code_is_declared(declared):
    runtime, _ = declared
    allowed = {canonicalize_name(r.name) for r in runtime}
    assert _undeclared(RUNTIME_DIRS, allowed) == [], "add them to install_requires"


def test_every_import_of_the_tests_drills_and_benchmarks_is_declared(declared):
    runtime, test_extra = declared
    allowed = {canonicalize_name(r.name) for r in runtime + test_extra}
    assert _undeclared(DEVELOPMENT_DIRS, allowed) == [], "add them to the test extra"


def _dry_run(target: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "-n", "-B", target, "VENV=/nonexistent/venv"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def test_make_install_takes_only_production_packages_and_only_from_the_locks():
    commands = [line for line in _dry_run("install").splitlines() if "/bin/pip install" in line]
    assert len(commands) == 3, commands
    assert "--require-hashes -r requirements-build.lock" in commands[0]
    assert "--require-hashes --no-build-isolation -r requirements.lock" in commands[1]
    assert "--no-deps --no-build-isolation -e ." in commands[2]
    assert not any("test" in command for command in commands)


def test_make_install_test_adds_the_test_lock():
    commands = [line for line in _dry_run("install-test").splitlines()
                if "/bin/pip install" in line]
    assert "--require-hashes --no-build-isolation -r requirements-test.lock" in commands[-1]
