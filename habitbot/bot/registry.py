"""Where handlers register: commands, conversation states and callback actions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Handler = Callable[..., Any]


class Registry:
    def __init__(self) -> None:
        self.commands: dict[str, Handler] = {}
        self.states: dict[str, Handler] = {}
        self.callbacks: dict[str, Handler] = {}

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


registry = Registry()
