"""Export of a user's habits and check-ins (CSV for spreadsheets, JSON for re-import) and import
of our JSON or CSV export and of Loop Habit Tracker's CSV export (its ZIP or bare files).

An import is one transaction: either everything in the file that can be used is written, or,
when the file is refused with a `TransferError`, nothing is. Reading a file is bounded (see
`limits`): its cost is linear in its size and capped, whatever it holds. Rows that cannot be
used (a date that does not parse, a future date, a value out of range, a habit whose name
breaks our rules) are counted in `rows_ignored` with a warning code; neutral cells (Loop's NO,
UNKNOWN, YES_AUTO, empty) are not rows at all.

Refusal codes: too_large, zip_too_large, zip_too_many_files, zip_ratio, bad_zip,
unknown_archive, not_csv_or_zip, bad_encoding, bad_csv, line_too_long, too_many_columns,
too_many_rows, too_many_cells, too_slow, bad_json, unknown_format, unsupported_version,
unknown_columns, send_loop_zip (a file that does not name its habits, or Loop's Scores.csv),
empty, too_many_habits, too_many_habits_total, too_many_checkins, too_many_checkins_total,
too_many_rest_periods.
Warning codes: bad_dates, future_dates, bad_values, duplicate_dates, invalid_names,
invalid_habits, duplicate_names_merged, frequency_changed_to_daily, target_adjusted,
checkmarks_unmatched, archived_over_free_limit, reminders_trimmed.
"""

from habitbot.services.transfer.export import (
    CSV_COLUMNS,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    WEEKDAY_NAMES,
    CheckinRecord,
    ExportData,
    HabitRecord,
    export_user,
    to_csv,
    to_json,
)
from habitbot.services.transfer.limits import (
    MAX_CELLS,
    MAX_CHECKINS,
    MAX_COLUMNS,
    MAX_FILE_BYTES,
    MAX_HABITS,
    MAX_LINE_CHARS,
    MAX_PARSE_SECONDS,
    MAX_REST_PERIODS,
    MAX_ROWS,
    MAX_UNZIPPED_BYTES,
    MAX_USER_CHECKINS,
    MAX_ZIP_ENTRIES,
    MAX_ZIP_RATIO,
    MB,
    Budget,
    TransferError,
)
from habitbot.services.transfer.writing import ImportSummary, import_file

__all__ = [
    "CSV_COLUMNS", "EXPORT_FORMAT", "EXPORT_VERSION", "MAX_CELLS", "MAX_CHECKINS", "MAX_COLUMNS",
    "MAX_FILE_BYTES", "MAX_HABITS", "MAX_LINE_CHARS", "MAX_PARSE_SECONDS", "MAX_REST_PERIODS",
    "MAX_ROWS", "MAX_UNZIPPED_BYTES", "MAX_USER_CHECKINS", "MAX_ZIP_ENTRIES", "MAX_ZIP_RATIO",
    "MB", "WEEKDAY_NAMES",
    "Budget", "CheckinRecord", "ExportData", "HabitRecord", "ImportSummary", "TransferError",
    "export_user", "import_file", "to_csv", "to_json",
]
