"""Queue names, in priority order for workers."""

HIGH = "high"          # alerts, payment follow-ups
DEFAULT = "default"    # periodic maintenance
REMINDERS = "reminders"  # reminder send batches (bulk)

ALL = (HIGH, DEFAULT, REMINDERS)
