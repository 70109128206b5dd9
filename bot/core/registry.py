"""Declarative command specs and the registry that holds them.

A command module declares *what* a command is (name, typed arguments, role,
whether it needs a vote); the dispatcher decides *how* it runs. Usage lines and
help are generated from the spec, so they can never drift from the parser.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from bot.errors import UsageError

if TYPE_CHECKING:
    from bot.core.approvals import Plan
    from bot.core.dispatcher import CommandContext


class Role(IntEnum):
    VIEWER = 0
    OPERATOR = 1
    ADMIN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


Converter = Callable[[str], Any]
Handler = Callable[["CommandContext"], Awaitable[None]]
Planner = Callable[["CommandContext"], Awaitable["Plan"]]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


@dataclass(frozen=True)
class Arg:
    """A positional argument."""

    name: str
    help: str = ""
    type: Converter = str
    required: bool = True
    default: Any = None
    choices: tuple[str, ...] = ()
    # Takes every remaining token, joined by spaces (free text such as a reason).
    rest: bool = False

    def usage(self) -> str:
        label = "|".join(self.choices) if self.choices else self.name
        label += "..." if self.rest else ""
        return f"<{label}>" if self.required else f"[{label}]"


@dataclass(frozen=True)
class Option:
    """A named option: `--name VALUE`, or `--name` alone when `flag` is set."""

    name: str
    help: str = ""
    type: Converter = str
    default: Any = None
    flag: bool = False
    metavar: str = "VALUE"

    def usage(self) -> str:
        return f"[--{self.name}]" if self.flag else f"[--{self.name} {self.metavar}]"


@dataclass(frozen=True)
class CommandSpec:
    name: str
    handler: Handler
    help: str
    args: tuple[Arg, ...] = ()
    options: tuple[Option, ...] = ()
    aliases: tuple[str, ...] = ()
    role: Role = Role.VIEWER
    # The approval policy this command goes through (e.g. "rollback"); None runs at once.
    vote_policy: str | None = None
    # Describes what the command will do, for the proposal and the stale check.
    plan: Planner | None = None
    # The argument whose value names the app this command works on: jobs on one
    # app take its lock, so two of them never run at once.
    lock_arg: str | None = None
    timeout: float | None = None  # overrides jobs.timeout
    # Answers at once without a job record (help, ping): nothing to track or cancel.
    quick: bool = False

    @property
    def summary(self) -> str:
        return self.help.strip().splitlines()[0] if self.help.strip() else ""

    def usage(self, prefix: str = "!") -> str:
        parts = [prefix + self.name]
        parts += [arg.usage() for arg in self.args]
        parts += [option.usage() for option in self.options]
        return " ".join(parts)

    def parse(self, text: str, prefix: str = "!") -> dict[str, Any]:
        """Bind the text after the command name to typed values, or raise UsageError."""
        usage = self.usage(prefix)
        try:
            tokens = shlex.split(text)
        except ValueError as exc:
            raise UsageError(f"cannot read the arguments: {str(exc).lower()}", usage) from None
        values: dict[str, Any] = {a.name: a.default for a in self.args}
        values.update({o.name: (False if o.flag else o.default) for o in self.options})
        options = {o.name: o for o in self.options}
        positional: list[str] = []
        index = 0
        while index < len(tokens):
            token = tokens[index]
            index += 1
            if token == "--":
                positional += tokens[index:]
                break
            if not token.startswith("--") or len(token) == 2:
                positional.append(token)
                continue
            name, has_value, inline = token[2:].partition("=")
            option = options.get(name)
            if option is None:
                raise UsageError(f"unknown option --{name}", usage)
            if option.flag:
                if has_value:
                    raise UsageError(f"--{name} takes no value", usage)
                values[name] = True
                continue
            if not has_value:
                if index >= len(tokens):
                    raise UsageError(f"--{name} needs a value", usage)
                inline = tokens[index]
                index += 1
            values[name] = _convert(f"--{name}", option.type, inline, usage)
        for arg in self.args:
            if not positional:
                if arg.required:
                    raise UsageError(f"missing <{arg.name}>", usage)
                break
            if arg.rest:
                raw, positional = " ".join(positional), []
            else:
                raw = positional.pop(0)
            if arg.choices and raw not in arg.choices:
                raise UsageError(
                    f"<{arg.name}> must be one of {', '.join(arg.choices)}, not {raw!r}", usage
                )
            values[arg.name] = _convert(f"<{arg.name}>", arg.type, raw, usage)
        if positional:
            raise UsageError(f"unexpected argument {positional[0]!r}", usage)
        return values


def _convert(label: str, converter: Converter, raw: str, usage: str) -> Any:
    try:
        return converter(raw)
    except ValueError as exc:
        raise UsageError(f"{label}: {exc}", usage) from None


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
