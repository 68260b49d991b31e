"""Drills: every entry of docs/RUNBOOK.md rehearsed on the real stack.

Each drill starts supervisord with the bot, gunicorn, two RQ workers and the scheduler against
the Telegram, YooKassa and Crypto Pay emulators and a private PostgreSQL and Redis, reproduces
the incident, checks that its symptom and alert appear as the runbook says, runs the runbook's
recovery commands as written, and counts what was lost. `python -m drills [NAME…]` (or
`make drills`, `make drill NAME=1.7`) prints one JSON line per drill and a table.
"""
