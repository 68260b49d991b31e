"""The record of Telegram updates the bot has taken: each update is handled once, across
restarts, crashes and SIGKILL.

Telegram delivers an update again and again until a getUpdates carries an offset past it, and
the bot confirms an update only once it (and every update before it) is handled
(`bot.intake`). So after a crash the unconfirmed updates come back — and some of them were
handled already. Before its handler runs, an update is claimed here in its own transaction
(`INSERT … ON CONFLICT DO NOTHING`, status `handling`); after the handler it is marked
`handled`. A claim that finds a row tells what happened the first time:

- `handled`: a delivery again of an update handled before — it is confirmed, not run again;
- `handling`: the process died while the handler ran (a crash between the claim and the
  mark). Whether the handler's own transaction committed is unknown. Payment updates
  (`successful_payment`, `pre_checkout_query`) are run again: crediting is idempotent by the
  Telegram charge id and the pre-checkout check changes nothing, while not running them could
  leave a paid charge uncredited. Every other update is *not* run again (at most once): a
  second run could create a second habit or move a habit twice, and the user who got no
  answer simply writes again. It is logged (WARNING, with the update id).

Rows are kept 7 days (`RETENTION`; Telegram keeps an unconfirmed update 24 hours) and
deleted by the maintenance job. Update ids are per bot, so the key includes the bot's id (the
number before the colon of BOT_TOKEN): another bot's token starts a sequence of its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from habitbot.models import ProcessedUpdate

NEW = "new"
HANDLED = "handled"
INTERRUPTED = "interrupted"
RETENTION = timedelta(days=7)
# Run again when a claim finds them interrupted (see the module docstring).
RERUN_KINDS = frozenset({"successful_payment", "pre_checkout_query"})


def bot_id_of(token: str) -> int:
    """The bot's numeric id: the part of its token before the colon."""
    return int(token.split(":", 1)[0])


def claim(engine: Engine, bot_id: int, update_id: int, kind: str) -> str:
    """NEW (claimed now: run the handler), HANDLED or INTERRUPTED. Raises SQLAlchemyError."""
    with engine.begin() as conn:
        claimed = conn.execute(
            insert(ProcessedUpdate)
            .values(bot_id=bot_id, update_id=update_id, kind=kind[:32], status="handling")
            .on_conflict_do_nothing()
            .returning(ProcessedUpdate.update_id)).first()
        if claimed is not None:
            return NEW
        status = conn.execute(select(ProcessedUpdate.status).where(
            ProcessedUpdate.bot_id == bot_id,
            ProcessedUpdate.update_id == update_id)).scalar_one_or_none()
    return HANDLED if status == "handled" else INTERRUPTED


def finish(engine: Engine, bot_id: int, update_id: int) -> None:
    """The handler of a claimed update has returned. Raises SQLAlchemyError."""
    with engine.begin() as conn:
        conn.execute(update(ProcessedUpdate)
                     .where(ProcessedUpdate.bot_id == bot_id,
                            ProcessedUpdate.update_id == update_id)
                     .values(status="handled", finished_at=func.now()))


def prune(conn: Connection, now: datetime) -> int:
    """Delete the records older than RETENTION; returns how many."""
    deleted = conn.execute(delete(ProcessedUpdate).where(
        ProcessedUpdate.claimed_at < now - RETENTION)).rowcount
    return int(deleted or 0)
