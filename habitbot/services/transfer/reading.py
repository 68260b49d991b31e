"""Which format an uploaded file is, and its parse within the limits of `limits`."""

from __future__ import annotations

from habitbot.services.transfer import loop, ours
from habitbot.services.transfer.export import CSV_COLUMNS
from habitbot.services.transfer.incoming import Incoming, ParsedFile, Report
from habitbot.services.transfer.limits import TransferError, decode, read_rows, unzip

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _parse_csv(filename: str, text: str, report: Report) -> list[Incoming]:
    rows = read_rows(text, report.budget)
    if not rows:
        raise TransferError("empty")
    header = [c.strip() for c in rows[0]]
    if tuple(header) == CSV_COLUMNS:
        return ours.parse_csv(rows, report)
    if header[:2] == ["Position", "Name"]:
        return loop.parse(loop.Files({}, report.budget, {loop.HABITS: rows}), report)
    if header[:1] == ["Date"] and filename.rsplit("/", 1)[-1].lower().startswith("scores"):
        raise TransferError("send_loop_zip")
    if loop.is_single_habit_file(rows) or header[:1] == ["Date"]:
        return loop.parse(loop.Files({}, report.budget, {loop.CHECKMARKS: rows}), report)
    raise TransferError("unknown_columns")


def parse(filename: str, data: bytes, report: Report) -> ParsedFile:
    if not data.strip():
        raise TransferError("empty")
    if data[:4] in _ZIP_MAGIC:
        texts = unzip(data, loop.choose_members, report.budget)
        return ParsedFile(loop.parse(loop.Files(texts, report.budget), report))
    text = decode(data)
    if text.lstrip().startswith(("{", "[")):
        return ours.parse_json(text, report)
    return ParsedFile(_parse_csv(filename, text, report))
