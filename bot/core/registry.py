"""The registry: every command the modules under commands/ declare, by word."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bot.core.context import CommandSpec, Handler
from bot.core.roles import Role


@dataclass
class CommandGroup:
    """What one module under commands/ declares, collected by a decorator."""

    name: str
    specs: list[CommandSpec] = field(default_factory=list)

    def command(self, name: str, *, help: str, **fields: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.specs.append(CommandSpec(name=name, handler=handler, help=help, **fields))
            return handler

        return register


class Registry:
    def __init__(self, groups: Iterable[CommandGroup] = ()) -> None:
        self._specs: dict[str, CommandSpec] = {}
        self._by_word: dict[str, CommandSpec] = {}
        for group in groups:
            for spec in group.specs:
                self.add(spec)

    def add(self, spec: CommandSpec) -> None:
        for word in (spec.name, *spec.aliases):
            if word in self._by_word:
                raise ValueError(f"command word {word!r} is declared twice")
            self._by_word[word] = spec
        self._specs[spec.name] = spec

    def get(self, word: str) -> CommandSpec | None:
        return self._by_word.get(word.lower())

    def suggest(self, word: str) -> list[str]:
        return difflib.get_close_matches(word.lower(), self._by_word, n=3, cutoff=0.6)

    def visible_to(self, role: Role) -> list[CommandSpec]:
        return sorted(
            (spec for spec in self._specs.values() if spec.role <= role), key=lambda s: s.name
        )
