"""Where handlers register: commands, conversation states, callback actions and the other
update kinds (`pre_checkout_query`, `successful_payment`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Handler = Callable[..., Any]


class Registry:
    def __init__(self) -> None:
        self.commands: dict[str, Handler] = {}
        self.states: dict[str, Handler] = {}
        self.callbacks: dict[str, Handler] = {}
        self.events: dict[str, Handler] = {}

    def command(self, *names: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for name in names:
                self.commands[name] = fn
            return fn
        return register

    def state(self, *names: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for name in names:
                self.states[name] = fn
            return fn
        return register

    def callback(self, *actions: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for action in actions:
                self.callbacks[action] = fn
            return fn
        return register

    def event(self, *kinds: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for kind in kinds:
                self.events[kind] = fn
            return fn
        return register


registry = Registry()
