"""Queue names, in priority order for workers.

File jobs (imports and exports, up to 120 s each) have their own queue after `reminders`, and
at most one of them runs at a time across all workers (`workers.imports`): with two workers,
one is always free for alerts, payment follow-ups and reminders.
"""

HIGH = "high"          # alerts, payment follow-ups
DEFAULT = "default"    # periodic maintenance
REMINDERS = "reminders"  # reminder send batches (bulk)
FILES = "files"        # imports of uploaded files and exports, one at a time

ALL = (HIGH, DEFAULT, REMINDERS, FILES)
