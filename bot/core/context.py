"""What a command is and what it runs with.

A command module declares *what* a command is (`CommandSpec`: name, typed
arguments, role, whether it needs a vote); the dispatcher decides *how* it runs
and hands the handler a `CommandContext`. Usage lines are generated from the
spec, so they can never drift from the parser. `Services` is everything a
command may use, built once in bot/app.py and frozen.

The spec and the context refer to each other (a handler takes a context, a
context carries its spec), so they live in one module, below every other core
module: registry, jobs, gate and dispatcher import this, never the reverse.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from bot.config import Config
from bot.core.access import Access
from bot.core.approvals import Choice, Plan
from bot.core.chat import Chat, Message
from bot.core.metrics import Metrics
from bot.core.progress import Progress
from bot.core.records import JobState, job_thread_key
from bot.core.roles import Role
from bot.core.scheduler import Schedule
from bot.core.store import Store
from bot.core.windows import Windows
from bot.errors import StalePlan, UsageError
from bot.features.apps import Apps
from bot.features.backups import Backups
from bot.features.upgrades import Upgrades
from bot.fmt import code

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
    # Takes every remaining token as a list, each converted (arguments kept apart).
    many: bool = False

    def usage(self) -> str:
        label = "|".join(self.choices) if self.choices else self.name
        label += "..." if self.rest or self.many else ""
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
    # Takes a free-text reason after a lone `--` (every voted command does).
    reason: bool = False
    # One invocation that shows how the command is used, without the prefix
    # ("deploy cloud.example.coop 2.1.0+1.0"); `!help <command>` shows it.
    example: str = ""
    # A family (`!backup <app>|all|check`): the first argument picks one of these;
    # anything else is the command's own form (`args`). A subcommand's name is
    # "<family> <word>"; it has its own help, arguments and example, and runs with
    # the family's role, lock, vote and timeout. The family's first argument holds
    # the word, so `lock_arg` and `!jobs` see it as before.
    subcommands: tuple[CommandSpec, ...] = ()
    # How many words after the command's name the audit and the job list keep; None
    # keeps the whole line. `!cmd` passes arguments (passwords, tokens) to a recipe's
    # function: the room saw them once, the bot's records need not keep them.
    recorded_words: int | None = None

    def recorded(self, body: str) -> str:
        """The command line as the bot's own records keep it (see `recorded_words`)."""
        if self.recorded_words is None:
            return body
        words = body.split()
        kept = words[: 1 + self.recorded_words]
        hidden = len(words) - len(kept)
        return " ".join(kept) + (f" … ({hidden} more words not recorded)" if hidden else "")

    @property
    def summary(self) -> str:
        return self.help.strip().splitlines()[0] if self.help.strip() else ""

    @property
    def word(self) -> str:
        """The word that names this command, or this subcommand within its family."""
        return self.name.rsplit(" ", 1)[-1]

    def subcommand(self, word: str) -> CommandSpec | None:
        for sub in self.subcommands:
            if sub.word == word:
                return sub
        return None

    def chosen(self, args: dict[str, Any]) -> CommandSpec:
        """The subcommand that parsed `args`, or this spec for its own form."""
        if not self.subcommands or not self.args:
            return self
        return self.subcommand(str(args.get(self.args[0].name))) or self

    def usage(self, prefix: str = "!") -> str:
        parts = [prefix + self.name]
        parts += [arg.usage() for arg in self.args]
        parts += [option.usage() for option in self.options]
        return " ".join(parts)

    def usages(self, prefix: str = "!") -> list[str]:
        """Every form: the command's own, then each subcommand's."""
        return [self.usage(prefix), *(sub.usage(prefix) for sub in self.subcommands)]

    def parse(self, text: str, prefix: str = "!") -> dict[str, Any]:
        """Bind the text after the command name to typed values, or raise UsageError."""
        usage = self.usage(prefix)
        try:
            tokens = shlex.split(text)
        except ValueError as exc:
            raise UsageError(f"cannot read the arguments: {str(exc).lower()}", usage) from None
        sub = self.subcommand(tokens[0]) if self.subcommands and tokens else None
        if sub is not None and self.args:
            values = sub._bind(tokens[1:], sub.usage(prefix))
            values[self.args[0].name] = sub.word
            return values
        return self._bind(tokens, usage)

    def _bind(self, tokens: list[str], usage: str) -> dict[str, Any]:
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
                raise UsageError(f"unknown option {code('--' + name)}", usage)
            if option.flag:
                if has_value:
                    raise UsageError(f"{code('--' + name)} takes no value", usage)
                values[name] = True
                continue
            if not has_value:
                if index >= len(tokens):
                    raise UsageError(f"{code('--' + name)} needs a value", usage)
                inline = tokens[index]
                index += 1
            values[name] = _convert(f"--{name}", option.type, inline, usage)
        for arg in self.args:
            if not positional:
                if arg.required:
                    raise UsageError(f"missing <{arg.name}>", usage)
                break
            if arg.many:
                items, positional = positional, []
                values[arg.name] = [_convert(f"<{arg.name}>", arg.type, t, usage) for t in items]
                break
            if arg.rest:
                raw, positional = " ".join(positional), []
            else:
                raw = positional.pop(0)
            if arg.choices and raw not in arg.choices:
                raise UsageError(
                    f"<{arg.name}> must be one of {', '.join(arg.choices)}, not {code(raw)}", usage
                )
            values[arg.name] = _convert(f"<{arg.name}>", arg.type, raw, usage)
        if positional:
            raise UsageError(f"unexpected argument {code(positional[0])}", usage)
        return values


def _convert(label: str, converter: Converter, raw: str, usage: str) -> Any:
    try:
        return converter(raw)
    except ValueError as exc:
        raise UsageError(f"{label}: {exc}", usage) from None


_REASON = re.compile(r"(?:^|\s)--\s+(?P<reason>\S.*)$", re.DOTALL)


def split_reason(rest: str) -> tuple[str, str | None]:
    """`app 1.2.0 -- moving to the new server` → ("app 1.2.0", "moving to ..."): the
    reason a member gives for a risky request, after a lone `--`."""
    found = _REASON.search(rest)
    if found is None:
        return rest, None
    return rest[: found.start()].rstrip(), " ".join(found["reason"].split())


class Commands(Protocol):
    """The registry as the core sees it (bot/core/registry.py)."""

    def get(self, word: str) -> CommandSpec | None: ...
    def suggest(self, word: str) -> list[str]: ...
    def visible_to(self, role: Role) -> list[CommandSpec]: ...
    def family_of(self, spec: CommandSpec) -> str: ...


class JobView(Protocol):
    """One tracked job, as `!jobs` and `!cancel` see it."""

    id: int
    ctx: CommandContext
    app: str | None
    state: JobState
    created_at: float
    cancelled_by: str | None

    @property
    def text(self) -> str: ...


class Jobs(Protocol):
    """The job manager (bot/core/jobs.py)."""

    def start(self, ctx: CommandContext) -> JobView: ...
    def get(self, job_id: int) -> JobView | None: ...
    def active(self) -> Sequence[JobView]: ...
    def cancel(self, job_id: int, by: str) -> JobView | None: ...
    # The per-app lock the jobs take, for work on several apps inside one job and for
    # the crash recovery finishing a job; a job waiting for it names `holder`.
    def app_lock(
        self, app: str, holder: str | None = None
    ) -> AbstractAsyncContextManager[None]: ...


class Control(Protocol):
    """What a command may ask of the dispatcher that runs it."""

    async def vote(self, ctx: CommandContext, proposal_id: str, choice: Choice) -> None:
        """A vote by text (`!approve ID`), counted like a reaction."""

    async def urgent(self, ctx: CommandContext, proposal_id: str) -> None:
        """Break-glass: run an open proposal now (its policy must allow it)."""

    async def describe_open(self, room_id: str) -> list[str]:
        """Each open proposal of the room: plan, votes, what is still needed."""

    async def run_scheduled(self, text: str) -> None:
        """Run a command line as the scheduler identity, reporting in the room that
        takes its family's reports (matrix.rooms[].reports), else the home room."""

    async def hears(self, room_id: str, spec: CommandSpec) -> bool:
        """Whether the room hears this command's family (matrix.rooms[].hears)."""


@dataclass(frozen=True)
class Services:
    """Everything a command may use. Built once, complete, in bot/app.py."""

    config: Config
    chat: Chat
    store: Store
    registry: Commands
    access: Access
    metrics: Metrics
    apps: Apps
    jobs: Jobs
    upgrades: Upgrades
    schedule: Schedule
    backups: Backups | None = None  # None without a backups: section
    windows: Windows | None = None  # maintenance windows (bot/core/windows.py)

    @property
    def prefix(self) -> str:
        matrix = self.config.matrix
        return matrix.prefix if matrix else "!"


@dataclass
class CommandContext:
    spec: CommandSpec
    args: dict[str, Any]
    message: Message
    role: Role
    services: Services
    control: Control
    job: JobView | None = None
    # The plan this run stands on: the one members voted for (with `proposal_id`), or
    # the one taken when a no-vote request was asked. Checked again after every wait.
    planned: Plan | None = None
    proposal_id: str | None = None
    reason: str | None = None  # a risky request's `-- why`, shown with its proposal
    _progress: Progress | None = None

    @property
    def sender(self) -> str:
        return self.message.sender

    def run_as_planned(self, plan: Plan, proposal_id: str | None = None) -> None:
        """Run with the plan's resolved arguments (the exact version, snapshot...)."""
        self.planned, self.proposal_id = plan, proposal_id
        self.args.update(plan.pins)

    async def recheck(self) -> None:
        """After any wait (the app's lock, a backup first, a scale-down): the world
        must still be as planned. If it is not, nothing more runs: a voted plan goes
        stale, and a request that ran without a vote runs on only if it still needs
        none. Raises StalePlan."""
        planned = self.planned
        if self.spec.plan is None or planned is None:
            return
        fresh = await self.spec.plan(self)
        same_policy = (fresh.policy or self.spec.vote_policy) == (
            planned.policy or self.spec.vote_policy
        )
        if fresh.fingerprint == planned.fingerprint and same_policy:
            return
        if self.proposal_id is None and not fresh.needs_vote:
            self.run_as_planned(fresh)  # still nothing to vote on: run what is true now
            return
        if self.proposal_id is not None:
            raise StalePlan(
                f"Not run: things changed since the vote on `{self.proposal_id}`, so it no "
                f"longer holds.\n- voted: {planned.summary}\n- now: {fresh.summary}\n"
                f"Nothing was changed; ask again to vote on the new plan."
            )
        raise StalePlan(
            "Not run: while this waited, things changed and it now needs a vote.\n"
            f"- now: {fresh.summary}\nNothing was changed; send it again to propose it."
        )

    @property
    def prefix(self) -> str:
        return self.services.prefix

    async def reply(self, markdown: str, *, mentions: Sequence[str] = ()) -> str:
        return await self.services.chat.send(
            self.message.room_id,
            markdown,
            reply_to=self.message.reply_target,
            thread_root=self.message.thread_root,
            mentions=mentions,
        )

    @property
    def progress(self) -> Progress:
        """The job's one progress message (created on first update)."""
        if self._progress is None:
            self._progress = Progress(
                self.services.chat,
                self.message.room_id,
                self.message.reply_target,
                self.message.thread_root,
                self.services.config.jobs.progress_interval,
                on_posted=self._remember_thread,
            )
        return self._progress

    def _remember_thread(self, event_id: str) -> None:
        """Where this job's thread is (the thread it was asked in, else its progress
        message's), kept for the message a restart after a crash sends there."""
        if self.job is not None:
            thread = self.message.thread_root or event_id
            self.services.store.put(job_thread_key(self.job.id), thread)

    async def report_failure(self, markdown: str) -> None:
        """Failures end the progress message if there is one, else they are a reply."""
        if self._progress is not None and self._progress.event_id is not None:
            await self._progress.finish(markdown)
        else:
            await self.reply(markdown)

    async def settle(self) -> None:
        """Show the progress message's newest text if the throttle still holds it."""
        if self._progress is not None:
            await self._progress.settle()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
