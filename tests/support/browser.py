"""Headless Chromium (Debian's chromium and chromium-driver) driven by Selenium, for the tests
of pages; the driver path is given so Selenium never tries to download one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 15
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--window-size=1200,820",
)


@contextmanager
def chromium(profile_dir: Path) -> Iterator[WebDriver]:
    """A fresh headless browser; the test is skipped when the packages are missing."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.skip(f"headless browser test needs {' and '.join(missing)} "
                    "(Debian packages chromium and chromium-driver)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile_dir}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any]) -> Any:
    """Poll ``condition`` until it returns something truthy, with a deadline."""
    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)
