"""Provider notifications: `POST /webhooks/yookassa` and `POST /webhooks/cryptobot`.

What each answer tells the provider (both retry anything but 2xx, YooKassa for 24 hours):

- 200: handled — credited, a duplicate, not paid yet, canceled, ignored, or not creditable
  (unknown payment, another shop, wrong amount or currency: an operator is alerted, and
  retrying could not change the answer). The body says which.
- 400 malformed body, 401 bad or missing Crypto Pay signature, 403 YooKassa notification from
  an address outside YOOKASSA_TRUSTED_IPS, 413 body over the size limit: refused, nothing
  changed.
- 503: we could not decide now (the provider's API failed during the re-read, the database
  is down, the provider is not configured here): nothing was changed, please retry.

A refused request writes nothing: it is counted (`habitbot_webhooks_total` by outcome) and
logged at most once a minute per kind of refusal (`habitbot.logs.Throttled`); an untrusted
YooKassa address also raises one alert per cooldown, which inside the cooldown writes no row.

The user is told about a credit or a refund after the commit: the notice is queued in Redis
and a worker sends it (`habitbot.payments.notify`); that step can never turn a committed
credit into an error answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from habitbot import metrics
from habitbot.logs import Throttled
from habitbot.payments import cryptobot, notifications, notify, service
from habitbot.payments.http import ProviderError
from habitbot.payments.notifications import BadNotification, Handled
from habitbot.payments.yookassa import MalformedAnswer
from habitbot.runtime import Runtime
from webhooks import proxies

log = logging.getLogger(__name__)
quiet = Throttled(log)

bp = Blueprint("payments", __name__)


def _answer(status: int, **body: Any) -> Response:
    response = jsonify({"ok": 200 <= status < 300, **body})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _count(runtime: Runtime, provider: str, outcome: str) -> None:
    metrics.incr(runtime.redis, "habitbot_webhooks_total", provider=provider, outcome=outcome)


def _runtime() -> Runtime:
    return current_app.extensions["habitbot"]


def _body() -> bytes:
    return request.get_data(cache=False)


def _handle(provider: str, parse: Callable[[bytes], tuple[str, dict[str, Any]]],
            handle: Callable[[Runtime, str, dict[str, Any]], Handled], body: bytes) -> Response:
    runtime = _runtime()
    kind = None
    try:
        kind, obj = parse(body)
        handled = handle(runtime, kind, obj)
    except BadNotification as exc:
        quiet.log(logging.WARNING, f"malformed:{provider}", "malformed notification",
                  provider=provider, error=str(exc))
        _count(runtime, provider, "malformed")
        return _answer(400, error="malformed", detail=str(exc))
    except (ProviderError, MalformedAnswer) as exc:
        log.error("provider unavailable while handling a notification",
                  extra={"provider": provider, "event": kind, "error": str(exc)})
        runtime.alerts.raise_alert(
            "WARNING", f"payments {provider}",
            f"a notification could not be verified ({exc}); answered 503, the provider will "
            "retry", fingerprint=f"webhook_reread_failed:{provider}")
        _count(runtime, provider, "provider_unavailable")
        return _answer(503, error="provider_unavailable")
    except SQLAlchemyError as exc:
        log.error("database unavailable while handling a notification",
                  extra={"provider": provider, "event": kind, "error": type(exc).__name__})
        _count(runtime, provider, "database_unavailable")
        return _answer(503, error="database_unavailable")
    # A credit has its own line ("Payment completed", with the payment id): this one would
    # repeat it on the busiest path.
    log.log(logging.DEBUG if handled.outcome == "credited" else logging.INFO,
            "notification handled", extra={"provider": provider, "event": kind,
                                           "outcome": handled.outcome,
                                           "payment_id": handled.payment_id})
    _count(runtime, provider, handled.outcome)
    if handled.outcome == "credited" and handled.payment_id is not None:
        notify.enqueue_completion_notice(runtime, handled.payment_id)
    if handled.outcome == "refunded" and handled.refund_id is not None:
        notify.enqueue_refund_notice(runtime, handled.refund_id)
    return _answer(200, outcome=handled.outcome, payment_id=handled.payment_id)


@bp.errorhandler(RequestEntityTooLarge)
def too_large(exc: RequestEntityTooLarge) -> Response:
    provider = "yookassa" if request.path.endswith("/yookassa") else "cryptobot"
    quiet.log(logging.WARNING, f"too_large:{provider}", "notification body too large",
              path=request.path, length=request.content_length)
    _count(_runtime(), provider, "too_large")
    return _answer(413, error="too_large")


@bp.post("/webhooks/yookassa")
def yookassa_webhook() -> Response:
    runtime = _runtime()
    settings = runtime.settings
    ip = proxies.client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"),
                   settings.trusted_proxies)
    if ip is None or not any(ip in network for network in settings.yookassa_trusted_ips):
        quiet.log(logging.WARNING, "untrusted_source:yookassa",
                  "YooKassa notification from an untrusted address",
                  client_ip=str(ip) if ip else None)
        runtime.alerts.raise_alert(
            "WARNING", "payments yookassa",
            f"a notification from {ip or 'an unknown address'} was refused (not in "
            "YOOKASSA_TRUSTED_IPS). If YooKassa's notifications are refused, check "
            "TRUSTED_PROXIES and the proxy's X-Forwarded-For.",
            fingerprint="yookassa_untrusted_ip")
        _count(runtime, "yookassa", "untrusted_source")
        return _answer(403, error="untrusted_source")
    body = _body()
    if not service.configured(settings, "yookassa"):
        quiet.log(logging.ERROR, "not_configured:yookassa",
                  "YooKassa notification but YooKassa is not configured")
        _count(runtime, "yookassa", "not_configured")
        return _answer(503, error="not_configured")
    return _handle("yookassa", notifications.parse_yookassa, notifications.handle_yookassa,
                   body)


@bp.post("/webhooks/cryptobot")
def cryptobot_webhook() -> Response:
    runtime = _runtime()
    token = runtime.settings.cryptobot_token
    body = _body()
    if not token:
        quiet.log(logging.ERROR, "not_configured:cryptobot",
                  "Crypto Pay update but CRYPTOBOT_TOKEN is not set")
        _count(runtime, "cryptobot", "not_configured")
        return _answer(503, error="not_configured")
    if not cryptobot.signature_valid(token, body,
                                     request.headers.get(cryptobot.SIGNATURE_HEADER)):
        quiet.log(logging.WARNING, "bad_signature:cryptobot",
                  "Crypto Pay update with a bad or missing signature",
                  client_ip=request.remote_addr)
        _count(runtime, "cryptobot", "bad_signature")
        return _answer(401, error="bad_signature")
    return _handle("cryptobot", notifications.parse_cryptobot, notifications.handle_cryptobot,
                   body)
