"""Queue names, in priority order for workers."""

HIGH = "high"          # alerts, payment follow-ups
DEFAULT = "default"    # periodic maintenance, imports of uploaded files (up to 120 s each)
REMINDERS = "reminders"  # reminder send batches (bulk)

ALL = (HIGH, DEFAULT, REMINDERS)
