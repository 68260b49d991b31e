"""What reading one uploaded file may cost, and the bounded readers every import format goes
through: text decoding, CSV rows and ZIP members.

Every limit is checked while reading, before the work it bounds is done, so a refused file
costs at most one limit's worth of work, and the work done on any file is linear in its size:
cells, rows, columns, line length, habits, check-ins and rest periods are counted, a ZIP is
refused on its directory (entries, declared sizes, packing ratio) before it is inflated and
again while inflating, and a CPU-time deadline is checked inside the loops. A refusal is a
`TransferError` naming the limit (`code`) and its value (`limit`), for the user's message.
"""

from __future__ import annotations

import csv
import io
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator

from habitbot.services.habits import MAX_HABITS

MB = 1024 * 1024
MAX_FILE_BYTES = 5 * MB
MAX_UNZIPPED_BYTES = 20 * MB
# MAX_HABITS: in one file, and a user's habits after an import (the cap of /new too)
MAX_ZIP_ENTRIES = 2 * MAX_HABITS + 10  # Loop writes three files and a folder of two per habit
# Deflate packs at most ~1000:1; a real export of 200 unused habits packs ~260:1.
MAX_ZIP_RATIO = 400
ZIP_RATIO_FLOOR = MB        # smaller archives cannot do harm whatever their ratio
MAX_LINE_CHARS = 64 * 1024
MAX_COLUMNS = 2 * MAX_HABITS + 2  # Loop's matrix: the date, a column per habit, a comma more
MAX_CHECKINS = 100_000
MAX_USER_CHECKINS = 3 * MAX_CHECKINS  # a user's after an import: what /stats and /export read
MAX_ROWS = MAX_CHECKINS + MAX_HABITS + 1  # our CSV: a row per check-in or empty habit
MAX_CELLS = 1_000_000        # of one CSV file, all of whose rows are in memory at once
MAX_REST_PERIODS = 1_000
MAX_PARSE_SECONDS = 20.0    # CPU time of the thread reading the file

_CLOCK_EVERY = 1024
_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class TransferError(ValueError):
    """The file is refused as a whole and nothing was written; `code` selects the message and
    `limit` is the value of the limit the file went over, if that is why."""

    def __init__(self, code: str, limit: int | None = None):
        super().__init__(code)
        self.code = code
        self.limit = limit


class Budget:
    """The work one file may still cost: counted as it is read, refused past a limit."""

    def __init__(self, seconds: float | None = None):
        self.seconds = MAX_PARSE_SECONDS if seconds is None else seconds
        self._deadline = time.thread_time() + self.seconds
        self._steps = 0
        self.checkins = 0
        self.rest_periods = 0

    def check_clock(self) -> None:
        if time.thread_time() > self._deadline:
            raise TransferError("too_slow", round(self.seconds))

    def step(self, amount: int = 1) -> None:
        """Work done; the clock is looked at every `_CLOCK_EVERY` steps."""
        self._steps += amount
        if self._steps >= _CLOCK_EVERY:
            self._steps = 0
            self.check_clock()

    def add_checkins(self, amount: int = 1) -> None:
        self.checkins += amount
        if self.checkins > MAX_CHECKINS:
            raise TransferError("too_many_checkins", MAX_CHECKINS)
        self.step(amount)

    def add_rest_periods(self, amount: int) -> None:
        self.rest_periods += amount
        if self.rest_periods > MAX_REST_PERIODS:
            raise TransferError("too_many_rest_periods", MAX_REST_PERIODS)
        self.step(amount)

    @staticmethod
    def check_habits(count: int) -> None:
        if count > MAX_HABITS:
            raise TransferError("too_many_habits", MAX_HABITS)


def decode(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise TransferError("bad_encoding")
    if _BINARY.search(raw[:65536].decode("latin-1")):
        raise TransferError("not_csv_or_zip")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TransferError("bad_encoding") from None
    if _BINARY.search(text):
        raise TransferError("not_csv_or_zip")
    return text


def _lines(text: str, budget: Budget) -> Iterator[str]:
    for line in io.StringIO(text):
        if len(line) > MAX_LINE_CHARS:
            raise TransferError("line_too_long", MAX_LINE_CHARS)
        budget.step()
        yield line


def read_rows(text: str, budget: Budget) -> list[list[str]]:
    """The non-blank rows of a CSV text; a blank row costs a cell."""
    rows: list[list[str]] = []
    cells = 0
    try:
        for row in csv.reader(_lines(text, budget)):
            if len(row) > MAX_COLUMNS:
                raise TransferError("too_many_columns", MAX_COLUMNS)
            cells += max(len(row), 1)
            if cells > MAX_CELLS:
                raise TransferError("too_many_cells", MAX_CELLS)
            budget.step(len(row))
            if any(cell.strip() for cell in row):
                if len(rows) >= MAX_ROWS:
                    raise TransferError("too_many_rows", MAX_ROWS)
                rows.append(row)
    except csv.Error:
        raise TransferError("bad_csv") from None
    return rows


def _check_directory(infos: list[zipfile.ZipInfo]) -> None:
    """`infos`: the members to be inflated."""
    declared = sum(i.file_size for i in infos)
    if declared > MAX_UNZIPPED_BYTES:
        raise TransferError("zip_too_large", MAX_UNZIPPED_BYTES // MB)
    packed = sum(i.compress_size for i in infos)
    if declared > ZIP_RATIO_FLOOR and declared > MAX_ZIP_RATIO * max(packed, 1):
        raise TransferError("zip_ratio", MAX_ZIP_RATIO)


def unzip(data: bytes, choose: Callable[[list[str]], dict[str, str]],
          budget: Budget) -> dict[str, str]:
    """The texts of the members `choose` picks from the archive's file names (it maps each to
    the path it is to be known by). The archive is refused on its directory first, then on
    what inflating actually gives (a directory may lie about sizes); only the members chosen
    are inflated."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError):
        raise TransferError("bad_zip") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise TransferError("zip_too_many_files", MAX_ZIP_ENTRIES)
    chosen = choose([i.filename for i in infos if not i.is_dir()])
    members = [i for i in infos if not i.is_dir() and i.filename in chosen]
    _check_directory(members)
    left = MAX_UNZIPPED_BYTES
    texts = {}
    for info in members:
        try:
            with archive.open(info) as member:
                content = member.read(left + 1)
        except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError,
                ValueError):
            raise TransferError("bad_zip") from None
        left -= len(content)
        if left < 0:
            raise TransferError("zip_too_large", MAX_UNZIPPED_BYTES // MB)
        if len(content) > ZIP_RATIO_FLOOR and len(content) > MAX_ZIP_RATIO * max(
                info.compress_size, 1):
            raise TransferError("zip_ratio", MAX_ZIP_RATIO)
        budget.check_clock()
        texts[chosen[info.filename]] = decode(content)
    return texts
