"""Python client of the Telegram emulator's control API (``/control/...``).

Tests and benchmarks use it to play the user (write, press buttons, block, pay), to inject
faults and change flood limits, and to wait for what the bot did::

    with EmulatorClient(emulator_url) as tg:
        tg.add_user(1001, "Anna", language_code="ru")
        tg.inject_message(1001, "/start")
        reply = tg.wait_for_message(1001, lambda m: "Привет" in (m["text"] or ""))

Waiting uses the transcript's long poll (``wait_version``), so nothing sleeps blindly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

Message = dict[str, Any]


class EmulatorError(RuntimeError):
    """The control API refused a request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class EmulatorClient:
    """Control client; ``token`` picks the bot when the emulator serves several."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> EmulatorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        if self.token:
            if body is not None:
                body = {**body, "token": self.token}
            params = {**(params or {}), "token": self.token}
        response = self._session.request(
            method, f"{self.base_url}/control/{path}", json=body, params=params,
            timeout=timeout or self.timeout,
        )
        data = response.json() if response.content else {}
        if response.status_code >= 400:
            raise EmulatorError(response.status_code, str(data.get("error", response.text)))
        return data

    def _post(self, path: str, **fields: Any) -> Any:
        return self._request("POST", path, {k: v for k, v in fields.items() if v is not None})

    def bot_call(self, method: str, token: str | None = None, **params: Any) -> dict[str, Any]:
        """Call a Bot API method as a bot would (JSON body); returns Telegram's envelope."""
        bot_token = token or self.token
        if not bot_token:
            raise ValueError("bot_call needs a token (argument or EmulatorClient(token=...))")
        response = self._session.post(f"{self.base_url}/bot{bot_token}/{method}", json=params,
                                      timeout=self.timeout + float(params.get("timeout", 0)))
        return response.json()

    # ------------------------------------------------------------ the user's side

    def health(self) -> bool:
        return bool(self._request("GET", "health").get("ok"))

    def reset(self) -> None:
        self._post("reset")

    def add_user(
        self,
        user_id: int,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        last_name: str | None = None,
    ) -> dict[str, Any]:
        """Register a user, which makes their private chat known to the bot."""
        return self._post("users", user_id=user_id, first_name=first_name, username=username,
                          language_code=language_code, last_name=last_name)["user"]

    def inject_message(self, user_id: int, text: str | None = None, **fields: Any) -> dict:
        """The user writes ``text``; ``location``/``sticker``/``photo``/``voice``/``document``
        send other kinds. Returns ``{"update_id", "message_id"}``."""
        return self._post(f"users/{user_id}/message", text=text, **fields)

    def press(
        self,
        user_id: int,
        message_id: int | None = None,
        data: str | None = None,
        button_text: str | None = None,
    ) -> dict[str, Any]:
        """Press a button by ``button_text`` or send any callback ``data`` (forged ones too)."""
        return self._post(f"users/{user_id}/press", message_id=message_id, data=data,
                          button_text=button_text)

    def block(self, user_id: int) -> dict[str, Any]:
        return self._post(f"users/{user_id}/block")

    def unblock(self, user_id: int) -> dict[str, Any]:
        return self._post(f"users/{user_id}/unblock")

    def deactivate(self, user_id: int, deactivated: bool = True) -> dict[str, Any]:
        return self._request("POST", f"users/{user_id}/deactivate",
                             {"deactivated": deactivated})

    def pre_checkout(
        self, user_id: int, invoice_message_id: int | None = None, **payment: Any
    ) -> dict[str, Any]:
        """Confirm an invoice (by message id, or ``invoice_payload``/``currency``/
        ``total_amount``); returns ``{"update_id", "pre_checkout_query_id"}``."""
        return self._post(f"users/{user_id}/pre_checkout",
                          invoice_message_id=invoice_message_id, **payment)

    def pre_checkout_answer(self, query_id: str) -> dict[str, Any]:
        return self._request("GET", f"pre_checkout/{query_id}")

    def pay(
        self,
        user_id: int,
        invoice_message_id: int | None = None,
        pre_checkout_query_id: str | None = None,
        **payment: Any,
    ) -> dict[str, Any]:
        """Complete a payment; returns ``update_id``, ``message_id`` and the charge id."""
        return self._post(f"users/{user_id}/pay", invoice_message_id=invoice_message_id,
                          pre_checkout_query_id=pre_checkout_query_id, **payment)

    def checkout(
        self,
        user_id: int,
        invoice_message_id: int | None = None,
        timeout: float | None = None,
        **payment: Any,
    ) -> dict[str, Any]:
        """Pay an invoice as a user does: the bot gets a pre-checkout query and has up to
        ``timeout`` (at most Telegram's 10 s) to answer; an approval delivers the
        ``successful_payment`` message. Returns ``outcome`` ("paid", "declined" with the
        bot's ``error_message``, or "timeout") and, when paid, the charge id."""
        wait = 10.0 if timeout is None else timeout
        return self._request("POST", f"users/{user_id}/checkout",
                             {k: v for k, v in {"invoice_message_id": invoice_message_id,
                                                "timeout": timeout, **payment}.items()
                              if v is not None},
                             timeout=self.timeout + wait)

    def replay_payment(self, user_id: int, charge_id: str) -> dict[str, Any]:
        """Deliver an earlier charge's ``successful_payment`` message again."""
        return self._post(f"users/{user_id}/replay_payment",
                          telegram_payment_charge_id=charge_id)

    def payments(self) -> list[dict[str, Any]]:
        return self._request("GET", "payments")["payments"]

    # ------------------------------------------------------------ steering

    def add_fault(
        self,
        mode: str,
        methods: list[str] | None = None,
        count: int | None = None,
        seconds: float | None = None,
        status: int | None = None,
        retry_after: int | None = None,
    ) -> dict[str, Any]:
        """Inject ``5xx``, ``timeout``, ``outage``, ``401`` or ``429`` on Bot API calls."""
        return self._post("faults", mode=mode, methods=methods, count=count, seconds=seconds,
                          status=status, retry_after=retry_after)

    def clear_faults(self) -> int:
        return int(self._request("DELETE", "faults")["cleared"])

    def faults(self) -> list[dict[str, Any]]:
        return self._request("GET", "faults")["faults"]

    def set_limits(
        self,
        global_rate: float | None = None,
        chat_rate: float | None = None,
        chat_burst: float | None = None,
    ) -> dict[str, Any]:
        return self._post("limits", global_rate=global_rate, chat_rate=chat_rate,
                          chat_burst=chat_burst)

    def limits(self) -> dict[str, Any]:
        return self._request("GET", "limits")

    # ------------------------------------------------------------ inspection

    def transcript(
        self,
        chat_id: int,
        include_deleted: bool = False,
        wait_version: int | None = None,
        timeout: float = 0.0,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"include_deleted": int(include_deleted)}
        if wait_version is not None:
            params.update(wait_version=wait_version, timeout=timeout)
        return self._request("GET", f"chats/{chat_id}/transcript", params=params,
                             timeout=self.timeout + timeout)

    def messages(self, chat_id: int, sender: str | None = None) -> list[Message]:
        """Messages of a chat as the user sees them; ``sender`` is "bot" or "user"."""
        return [m for m in self.transcript(chat_id)["messages"]
                if sender is None or m["from"] == sender]

    def chats(self) -> list[dict[str, Any]]:
        return self._request("GET", "chats")["chats"]

    def users(self) -> list[dict[str, Any]]:
        return self._request("GET", "users")["users"]

    def bots(self) -> list[dict[str, Any]]:
        return self._request("GET", "bots")["bots"]

    def commands(self) -> list[dict[str, Any]]:
        return self._request("GET", "commands")["commands"]

    def stats(self) -> dict[str, Any]:
        return self._request("GET", "stats")

    def reset_stats(self) -> None:
        self._post("stats/reset")

    def sends(self, since: float | None = None, chat_id: int | None = None) -> list[dict]:
        params = {k: v for k, v in (("since", since), ("chat_id", chat_id)) if v is not None}
        return self._request("GET", "sends", params=params)["sends"]

    # ------------------------------------------------------------ waiting

    def wait_for(
        self, chat_id: int, condition: Callable[[dict[str, Any]], Any], timeout: float = 5.0
    ) -> Any:
        """Wait until ``condition(transcript)`` is truthy and return its value.

        Raises ``TimeoutError`` with the last transcript when the deadline passes.
        """
        deadline = time.monotonic() + timeout
        transcript = self.transcript(chat_id)
        while True:
            found = condition(transcript)
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"chat {chat_id}: condition not met within {timeout}s; "
                                   f"transcript: {transcript['messages'][-5:]}")
            transcript = self.transcript(chat_id, wait_version=transcript["version"],
                                         timeout=min(remaining, 10.0))

    def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[Message], Any] | None = None,
        timeout: float = 5.0,
        sender: str | None = "bot",
        after_message_id: int = 0,
    ) -> Message:
        """The first message (by default from the bot) after ``after_message_id`` that
        satisfies ``predicate``."""

        def first_match(transcript: dict[str, Any]) -> Message | None:
            for message in transcript["messages"]:
                if message["message_id"] <= after_message_id:
                    continue
                if sender is not None and message["from"] != sender:
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        return self.wait_for(chat_id, first_match, timeout)

    def wait_for_callback_answer(
        self, chat_id: int, callback_query_id: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The bot's answerCallbackQuery for that query (text, show_alert, url)."""

        def answered(transcript: dict[str, Any]) -> dict[str, Any] | None:
            return next((a for a in transcript["callback_answers"]
                         if a["callback_query_id"] == callback_query_id), None)

        return self.wait_for(chat_id, answered, timeout)

    def wait_for_pre_checkout_answer(
        self, user_id: int, query_id: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The bot's answerPreCheckoutQuery (``ok``, ``error_message``) for that query."""

        def answered(transcript: dict[str, Any]) -> dict[str, Any] | None:
            return next((a for a in transcript["pre_checkout_answers"]
                         if a["pre_checkout_query_id"] == query_id), None)

        return self.wait_for(user_id, answered, timeout)
