"""Imports of uploaded files and exports, run by a worker so that no upload or export holds a
bot thread, the bot's memory or its restart. An export is one job per user at a time (id
`export-<telegram id>`) that sends the CSV and JSON files.

An import: the job downloads the file through the Bot API, imports it within the
limits of `services.transfer`, and tells the user the outcome whatever it is — imported,
refused (naming the limit the file went over), failed, or stopped at the job's time limit.

One job per user and file: its id is made of the user and Telegram's `file_unique_id`, and
RQ refuses a second job with that id (`unique=True`), so the same file sent twice, or an
update delivered twice, is imported once while its job is queued, running or recently done.
A refused or failed import does not hold the id: the file can be sent again at once. And one
import per user at a time (a slot in Redis, held until the job ends or for its time limit):
one user sending many files cannot fill the workers other users' jobs need.

File jobs share the workers with reminders and payments, so they run on their own queue
(`queues.FILES`, taken last) and one at a time across all workers: one lease in Redis
(`files:lease`, the id of the job holding it) is taken when a file job is queued and again by
the job when it starts, and released when it ends (or expires after its time limit, when a
worker is killed). A user whose upload or /export finds the lease held by another user's job
is told to send it again in a minute. That is simpler and sturdier than putting jobs back with
a delay: RQ's delayed jobs need a scheduler inside the workers, and a job waiting for the
lease would itself hold the worker it is meant to leave free. Imports and exports are rare
(a one-time move from another app, an occasional backup), so a retry now and then is cheap.
A job that starts while another holds the lease (its own lease expired while it was queued)
does nothing but tell its user the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import redis
from rq import Callback, Queue, get_current_job
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.timeouts import JobTimeoutException
from sqlalchemy.exc import SQLAlchemyError

from habitbot.i18n import N_, Translator
from habitbot.redis_client import KEY_PREFIX
from habitbot.runtime import Runtime
from habitbot.services import transfer
from habitbot.services.progress import local_day
from habitbot.services.users import UserContext, load_user
from habitbot.telegram.deferred import DeferredReplies
from habitbot.telegram.errors import TelegramError
from habitbot.telegram.sender import error_of
from workers import queues
from workers.context import job_runtime

log = logging.getLogger(__name__)

JOB_TIMEOUT = 120
RESULT_TTL = 3600     # a done import keeps its id this long: the same file again is not re-run
FAILURE_TTL = 86400   # failed imports stay this long for `habitbot jobs`
CALLBACK_TIMEOUT = 30
SLOT_TTL = JOB_TIMEOUT + 60  # a job killed outright releases its user's slot this late
IMPORTED = "imported"
_SLOT_PREFIX = f"{KEY_PREFIX}import:user:"
FILES_LEASE = f"{KEY_PREFIX}files:lease"
FILES_LEASE_TTL = JOB_TIMEOUT + 60  # queue wait plus the longest file job (exports: 120 s too)
# Take the lease when it is free or already this job's: 2 = newly taken, 1 = this job's,
# 0 = another job holds it.
_ACQUIRE = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then redis.call('expire', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 2
"""
# Release the slot only if it is still this job's.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

REFUSALS = {
    "too_large": N_("The file is too large: at most {limit} MB."),
    "zip_too_large": N_("The ZIP file unpacks to more than {limit} MB."),
    "zip_too_many_files": N_("The ZIP file holds too many files (at most {limit})."),
    "zip_ratio": N_("The ZIP file is packed too tightly to be an export: it unpacks to more "
                    "than {limit} times its size."),
    "line_too_long": N_("A line of the file is too long (at most {limit} characters)."),
    "too_many_columns": N_("A row of the file has too many columns (at most {limit})."),
    "too_many_rows": N_("The file has too many rows (at most {limit})."),
    "too_many_cells": N_("The file has too many cells (at most {limit})."),
    "too_slow": N_("The file takes too long to read (more than {limit} seconds of work). "
                   "Send a smaller file."),
    "too_many_habits": N_("The file has too many habits (at most {limit})."),
    "too_many_habits_total": N_("With this file you would have more than {limit} habits. "
                                "Delete some first: /habits."),
    "too_many_checkins": N_("The file has too many check-ins (at most {limit})."),
    "too_many_checkins_total": N_("With this file you would have more than {limit} check-ins, "
                                  "more than I keep for one person."),
    "too_many_rest_periods": N_("The file has too many rest periods (at most {limit})."),
    "send_loop_zip": N_("Send the whole ZIP file that Loop Habit Tracker exports, not a single "
                        "file from it."),
}
UNREADABLE = N_("I cannot read this file. Send a HabitBot export (CSV or JSON) or the CSV "
                "export of Loop Habit Tracker (a ZIP file).")
STARTED = N_("Importing the file… I will write when it is done.")
RUNNING = N_("This file is already being imported: I will write when it is done.")
DONE_RECENTLY = N_("This file has just been imported: see /habits.")
BUSY = N_("Another file of yours is being imported: send this one when it is done.")
FILES_BUSY = N_("I am busy with another person's file right now. Please send yours again "
                "in a minute.")
EXPORT_BUSY = N_("I am busy with another person's file right now. Please send /export again "
                 "in a minute.")
EXPORT_STARTED = N_("Preparing your export… the files will follow in a moment.")
EXPORT_FAILED = N_("The export failed. Please try again a little later.")
EXPORT_CAPTION = N_("Your habits and check-ins. Send the JSON file back to me (to this or "
                    "another account) to import it.")
EXPORT_TIMEOUT = 120
_ENDED = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
DOWNLOAD_FAILED = N_("I could not download the file. Please send it again.")
FAILED = N_("The import failed and nothing was changed. Please send the file again a little "
            "later.")
TIMED_OUT = N_("The import took too long and was stopped; nothing was changed. Send a smaller "
               "file.")


@dataclass(frozen=True)
class Upload:
    telegram_id: int
    language: str  # for the answers when the user's own setting cannot be read
    file_id: str
    file_unique_id: str
    file_name: str


def job_id(telegram_id: int, file_unique_id: str) -> str:
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_"
                   for c in file_unique_id[:64])
    return f"import-{telegram_id}-{safe}"


def enqueue(conn: redis.Redis, upload: Upload) -> str:
    """Queue the import of `upload`; returns the message to answer the upload with now.
    Raises redis.RedisError when the queue cannot be reached."""
    ident = job_id(upload.telegram_id, upload.file_unique_id)
    slot = _SLOT_PREFIX + str(upload.telegram_id)
    taken = bool(conn.set(slot, ident, nx=True, ex=SLOT_TTL))
    if not taken and conn.get(slot) != ident.encode():
        return BUSY
    lease = acquire_lease(conn, ident)
    answer = _enqueue(conn, upload, ident) if lease else FILES_BUSY
    if answer != STARTED:
        if lease == 2:
            release_lease(conn, ident)
        if taken:
            _release(conn, upload.telegram_id, ident)
    return answer


def acquire_lease(conn: redis.Redis, ident: str) -> int:
    """Take the one file-job lease for job `ident`: 2 newly taken, 1 already this job's, 0
    held by another job."""
    return int(conn.eval(_ACQUIRE, 1, FILES_LEASE, ident, FILES_LEASE_TTL))


def release_lease(conn: redis.Redis, ident: str) -> None:
    try:
        conn.eval(_RELEASE, 1, FILES_LEASE, ident)
    except redis.RedisError as exc:  # it expires on its own
        log.warning("file job lease not released", extra={"job_id": ident,
                                                          "error": type(exc).__name__})


def _enqueue(conn: redis.Redis, upload: Upload, ident: str) -> str:
    queue = Queue(queues.FILES, connection=conn)
    for _attempt in range(3):
        try:
            queue.enqueue(import_upload, upload.telegram_id, upload.language, upload.file_id,
                          upload.file_name,
                          job_id=ident, unique=True, job_timeout=JOB_TIMEOUT,
                          result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
                          on_failure=Callback(tell_failure, timeout=CALLBACK_TIMEOUT),
                          description=f"import for user {upload.telegram_id}")
            return STARTED
        except DuplicateJobError:
            answer = _earlier(conn, ident)
            if answer is not None:
                return answer
    return RUNNING


def _release(conn: redis.Redis, telegram_id: int, ident: str) -> None:
    try:
        conn.eval(_RELEASE, 1, _SLOT_PREFIX + str(telegram_id), ident)
    except redis.RedisError as exc:  # it expires on its own
        log.warning("import slot not released", extra={"user_id": telegram_id,
                                                       "error": type(exc).__name__})


def _earlier(conn: redis.Redis, ident: str) -> str | None:
    """The answer when the job of this file already exists, or None once it is removed (it
    ended without importing: the file may be imported again)."""
    try:
        job = Job.fetch(ident, connection=conn)
        status = job.get_status(refresh=False)
    except NoSuchJobError:
        return None
    if status == JobStatus.FINISHED and job.return_value() == IMPORTED:
        return DONE_RECENTLY
    if status in _ENDED:
        job.delete()
        return None
    return RUNNING


# -- the job ---------------------------------------------------------------------------------
def _number(value: int, language: str) -> str:
    return f"{value:,}".replace(",", "\u00a0" if language == "ru" else ",")


def refusal_text(t: Translator, code: str, limit: int | None) -> str:
    if code not in REFUSALS:
        return t.gettext(UNREADABLE)
    return t.gettext(REFUSALS[code], limit=_number(limit or 0, t.language))


def summary_text(t: Translator, user: UserContext, summary: transfer.ImportSummary) -> str:
    lines = [t.gettext("Import done."),
             t.ngettext("{n} habit created", "{n} habits created", summary.habits_created),
             t.ngettext("{n} habit matched an existing one",
                        "{n} habits matched existing ones", summary.habits_matched),
             t.ngettext("{n} check-in imported", "{n} check-ins imported",
                        summary.checkins_imported)]
    if summary.checkins_skipped_existing:
        lines.append(t.ngettext("{n} check-in was already there",
                                "{n} check-ins were already there",
                                summary.checkins_skipped_existing))
    if summary.rows_ignored:
        lines.append(t.ngettext("{n} row could not be used", "{n} rows could not be used",
                                summary.rows_ignored))
    if "archived_over_free_limit" in summary.warnings:
        lines.append(t.gettext("Habits over the free plan's limit were archived with their "
                               "history: see /habits."))
    today = local_day(datetime.now(UTC), user.timezone, user.day_start_hour)
    lines.append(t.gettext("See /stats for your numbers (today is {date}).",
                           date=today.strftime("%d.%m.%Y")))
    return "\n".join(lines)


def _reply(runtime: Runtime, chat_id: int, text: str) -> None:
    """Through the bot's kept replies: while Telegram cannot be reached the answer waits in
    Redis and the bot delivers it when Telegram answers again."""
    params: dict[str, Any] = {"chat_id": chat_id, "text": text, "parse_mode": "HTML"}
    try:
        response = DeferredReplies(runtime.sender, runtime.redis).send("sendMessage", params)
    except TelegramError as exc:
        log.warning("import outcome not sent", extra={"user_id": chat_id, "code": exc.code})
        return
    error = error_of("sendMessage", response) if response is not None else None
    if error is not None:
        log.warning("import outcome not sent", extra={"user_id": chat_id,
                                                      "code": error.code})


def _download(runtime: Runtime, file_id: str) -> bytes:
    info = runtime.sender.call("getFile", {"file_id": file_id}) or {}
    if (info.get("file_size") or 0) > transfer.MAX_FILE_BYTES:
        raise transfer.TransferError("too_large", transfer.MAX_FILE_BYTES // transfer.MB)
    try:
        return runtime.telegram.download_file(str(info.get("file_path") or ""),
                                              transfer.MAX_FILE_BYTES)
    except ValueError:
        raise transfer.TransferError("too_large", transfer.MAX_FILE_BYTES // transfer.MB) \
            from None


def _committed() -> None:
    """The import is written: a failure from here on must not tell the user it was not."""
    job = get_current_job()
    if job is not None:
        job.meta["committed"] = True
        job.save_meta()


def import_upload(telegram_id: int, language: str, file_id: str, file_name: str) -> str:
    """The RQ job: returns IMPORTED, or the code of the refusal the user was told."""
    runtime = job_runtime()
    job = get_current_job()
    if job is not None and not acquire_lease(runtime.redis, job.id):
        return _busy(runtime, telegram_id, language, job.id, FILES_BUSY)
    try:
        return _import(runtime, telegram_id, file_id, file_name)
    finally:
        if job is not None:
            release_lease(runtime.redis, job.id)
            _release(runtime.redis, telegram_id, job.id)


def _busy(runtime: Runtime, telegram_id: int, language: str, ident: str, text: str) -> str:
    """Another file job holds the lease: this one does nothing and says so."""
    log.info("file job put off: another one is running", extra={"user_id": telegram_id,
                                                               "job_id": ident})
    user = load_user(runtime.engine, telegram_id)
    _reply(runtime, telegram_id, Translator(user.language if user else language).gettext(text))
    if text == FILES_BUSY:
        _release(runtime.redis, telegram_id, ident)
    return "busy"


def _import(runtime: Runtime, telegram_id: int, file_id: str, file_name: str) -> str:
    user = load_user(runtime.engine, telegram_id)
    if user is None or user.id is None:
        log.warning("import for an unknown user dropped", extra={"user_id": telegram_id})
        return "unknown_user"
    t = Translator(user.language)
    context = {"user_id": telegram_id}
    try:
        data = _download(runtime, file_id)
        summary = transfer.import_file(runtime.engine, user.id, file_name, data)
    except transfer.TransferError as exc:
        log.info("import refused", extra={**context, "code": exc.code})
        _reply(runtime, telegram_id, refusal_text(t, exc.code, exc.limit))
        return exc.code
    except TelegramError as exc:
        log.warning("import file not downloaded", extra={**context, "code": exc.code})
        _reply(runtime, telegram_id, t.gettext(DOWNLOAD_FAILED))
        return "download_failed"
    _committed()
    log.info("import done", extra={**context, "habits_created": summary.habits_created,
                                   "checkins_imported": summary.checkins_imported})
    _reply(runtime, telegram_id, summary_text(t, user, summary))
    return IMPORTED


def tell_failure(job: Job, connection: redis.Redis, exc_type: type[BaseException],
                 exc_value: BaseException, traceback: TracebackType | None) -> None:
    """RQ's failure callback of the job (an error, or its time limit): tell the user."""
    telegram_id = int(job.args[0])
    context = {"user_id": telegram_id, "job_id": job.id, "error": exc_type.__name__}
    runtime = job_runtime()
    release_lease(runtime.redis, job.id)
    _release(runtime.redis, telegram_id, job.id)
    if job.meta.get("committed"):
        log.error("import written but its outcome not sent", extra=context)
        return
    timed_out = issubclass(exc_type, JobTimeoutException)
    log.error("import stopped at its time limit" if timed_out else "import failed",
              extra=context)
    try:
        user = load_user(runtime.engine, telegram_id)
    except SQLAlchemyError:
        user = None
    t = Translator(user.language if user else str(job.args[1]))
    _reply(runtime, telegram_id, t.gettext(TIMED_OUT if timed_out else FAILED))


# -- exports ---------------------------------------------------------------------------------
def enqueue_export(conn: redis.Redis, telegram_id: int, language: str) -> str:
    """Queue the export of the user's data (once: a second /export while one is queued or
    running joins it); returns the message to answer with now. Raises redis.RedisError."""
    ident = f"export-{telegram_id}"
    lease = acquire_lease(conn, ident)
    if not lease:
        return EXPORT_BUSY
    for _attempt in range(3):
        try:
            Queue(queues.FILES, connection=conn).enqueue(
                export_files, telegram_id, language, job_id=ident, unique=True,
                job_timeout=EXPORT_TIMEOUT, result_ttl=0, failure_ttl=FAILURE_TTL,
                on_failure=Callback(tell_export_failure, timeout=CALLBACK_TIMEOUT),
                description=f"export for user {telegram_id}")
            return EXPORT_STARTED
        except DuplicateJobError:
            try:
                job = Job.fetch(ident, connection=conn)
            except NoSuchJobError:
                continue
            if job.get_status(refresh=False) not in _ENDED:
                return EXPORT_STARTED
            job.delete()  # a failed export does not hold the next one
    return EXPORT_STARTED


def _send_document(runtime: Runtime, chat_id: int, name: str, content: bytes,
                   caption: str | None = None) -> None:
    params: dict[str, Any] = {"chat_id": chat_id, "caption": caption}
    response = DeferredReplies(runtime.sender, runtime.redis).send(
        "sendDocument", params, files={"document": (name, content)})
    error = error_of("sendDocument", response) if response is not None else None
    if error is not None:
        raise error


def export_files(telegram_id: int, language: str) -> int:
    """The RQ job: the user's CSV and JSON files; returns the number of habits."""
    runtime = job_runtime()
    job = get_current_job()
    if job is not None and not acquire_lease(runtime.redis, job.id):
        _busy(runtime, telegram_id, language, job.id, EXPORT_BUSY)
        return 0
    try:
        return _export(runtime, telegram_id)
    finally:
        if job is not None:
            release_lease(runtime.redis, job.id)


def _export(runtime: Runtime, telegram_id: int) -> int:
    user = load_user(runtime.engine, telegram_id)
    if user is None or user.id is None:
        log.warning("export for an unknown user dropped", extra={"user_id": telegram_id})
        return 0
    data = transfer.export_user(runtime.engine, user.id)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    _send_document(runtime, telegram_id, f"habitbot-{stamp}.csv", transfer.to_csv(data))
    _send_document(runtime, telegram_id, f"habitbot-{stamp}.json", transfer.to_json(data),
                   Translator(user.language).gettext(EXPORT_CAPTION))
    return len(data.habits)


def tell_export_failure(job: Job, connection: redis.Redis, exc_type: type[BaseException],
                        exc_value: BaseException, traceback: TracebackType | None) -> None:
    telegram_id = int(job.args[0])
    log.error("export failed", extra={"user_id": telegram_id, "job_id": job.id,
                                      "error": exc_type.__name__})
    release_lease(connection, job.id)
    _reply(job_runtime(), telegram_id, Translator(str(job.args[1])).gettext(EXPORT_FAILED))
