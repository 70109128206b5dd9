"""The registry: every command the modules under commands/ declare, by word."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from bot.core.context import CommandContext, CommandSpec, Handler
from bot.core.roles import Role
from bot.errors import UsageError


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

    def family(self, name: str, *, help: str, **fields: Any) -> Family:
        """A command whose first argument picks a subcommand (`!backup check`), declared
        with `@family.default` (its own form, e.g. `<app>`) and `@family.sub(word)`."""
        family = Family(self, len(self.specs), name)
        self.specs.append(CommandSpec(name=name, handler=family.run, help=help, **fields))
        return family


class Family:
    """Builds one family's spec as its forms are declared. The spec is frozen, so
    each declaration replaces it in the group's list."""

    def __init__(self, group: CommandGroup, index: int, name: str) -> None:
        self._group, self._index, self.name = group, index, name
        self._default: Handler | None = None

    @property
    def spec(self) -> CommandSpec:
        return self._group.specs[self._index]

    def default(self, handler: Handler) -> Handler:
        """The handler of the family's own form (its `args`)."""
        self._default = handler
        return handler

    def sub(self, word: str, *, help: str, **fields: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            sub = CommandSpec(name=f"{self.name} {word}", handler=handler, help=help, **fields)
            subs = (*self.spec.subcommands, sub)
            self._group.specs[self._index] = replace(self.spec, subcommands=subs)
            return handler

        return register

    async def run(self, ctx: CommandContext) -> None:
        """The family's handler: the chosen subcommand's, or the default form's."""
        chosen = ctx.spec.chosen(ctx.args)
        if chosen is not ctx.spec:
            await chosen.handler(ctx)
        elif self._default is not None:
            await self._default(ctx)
        else:
            raise UsageError(
                "pick one of: " + ", ".join(s.word for s in ctx.spec.subcommands),
                ctx.spec.usage(ctx.prefix),
            )


class Registry:
    def __init__(self, groups: Iterable[CommandGroup] = ()) -> None:
        self._specs: dict[str, CommandSpec] = {}
        self._by_word: dict[str, CommandSpec] = {}
        self._family: dict[str, str] = {}  # command name -> its group's name
        for group in groups:
            for spec in group.specs:
                self.add(spec, group.name)

    def add(self, spec: CommandSpec, family: str = "") -> None:
        for word in (spec.name, *spec.aliases):
            if word in self._by_word:
                raise ValueError(f"command word {word!r} is declared twice")
            self._by_word[word] = spec
        self._specs[spec.name] = spec
        self._family[spec.name] = family

    def family_of(self, spec: CommandSpec) -> str:
        """The family a command belongs to (its module's group name): what a room hears."""
        return self._family.get(spec.name, "")

    def families(self) -> set[str]:
        return set(self._family.values())

    def get(self, word: str) -> CommandSpec | None:
        return self._by_word.get(word.lower())

    def suggest(self, word: str) -> list[str]:
        return difflib.get_close_matches(word.lower(), self._by_word, n=3, cutoff=0.6)

    def visible_to(self, role: Role) -> list[CommandSpec]:
        return sorted(
            (spec for spec in self._specs.values() if spec.role <= role), key=lambda s: s.name
        )
