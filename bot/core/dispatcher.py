"""parse → authorise → (approval gate) → run as a job → report."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.core.access import SCHEDULER, Access
from bot.features.apps import Apps
from bot.features.backups import Backups
from bot.core.chat import Chat, ChatEvent, Message, Reaction, Redaction
from bot.config import Config
from bot.errors import PermissionDenied, UserError
from bot.core.gate import ApprovalGate
from bot.core.jobs import Job, JobManager, Progress
from bot.core.metrics import Metrics
from bot.core.registry import CommandSpec, Registry, Role
from bot.core.scheduler import Scheduler
from bot.core.store import Store
from bot.features.upgrades import Upgrades

log = logging.getLogger(__name__)

# Longer messages are refused before parsing: no command needs them.
MAX_COMMAND_LENGTH = 4000
QUICK_TIMEOUT = 60.0
_WORD = re.compile(r"(\S+)\s*(.*)", re.DOTALL)


@dataclass
class Services:
    """Everything a command may use. Built once, in bot/app.py."""

    config: Config
    chat: Chat
    store: Store
    registry: Registry
    access: Access
    metrics: Metrics
    apps: Apps
    backups: Backups | None = None  # None without a backups: section
    upgrades: Upgrades | None = None
    scheduler: Scheduler | None = None  # set by bot/app.py
    jobs: JobManager = field(init=False)
    gate: ApprovalGate = field(init=False)
    # Run a command line ("backup all") as the scheduler identity, reporting in the
    # home room; set by the Dispatcher.
    run_scheduled: Callable[[str], Awaitable[None]] = field(init=False)


@dataclass
class CommandContext:
    spec: CommandSpec
    args: dict[str, Any]
    message: Message
    role: Role
    services: Services
    job: Job | None = None
    _progress: Progress | None = None

    @property
    def sender(self) -> str:
        return self.message.sender

    @property
    def prefix(self) -> str:
        matrix = self.services.config.matrix
        return matrix.prefix if matrix else "!"

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
            )
        return self._progress

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


class Dispatcher:
    def __init__(self, services: Services, prefix: str, gate: ApprovalGate) -> None:
        self._services = services
        self._prefix = prefix
        self._tasks: set[asyncio.Task[None]] = set()
        services.jobs = JobManager(
            services.store, services.config.jobs, services.metrics, self._reauthorise
        )
        services.gate = gate
        services.run_scheduled = self.run_scheduled

    def is_command(self, body: str) -> bool:
        return body.startswith(self._prefix) and len(body) > len(self._prefix)

    async def submit(self, event: ChatEvent) -> None:
        """Called by the chat adapter for each new event; returns at once so the
        receive loop keeps hearing. The handling task is tracked."""
        if isinstance(event, Message):
            if not self.is_command(event.body):
                return
            work = self.handle(event)
        elif isinstance(event, Reaction):
            work = self._guard(self._services.gate.on_reaction(event))
        elif isinstance(event, Redaction):
            work = self._guard(self._services.gate.on_redaction(event))
        task = asyncio.create_task(work, name=f"handle-{event.event_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            self._services.metrics.failures.inc()
            log.exception("counting a vote failed")

    async def drain(self) -> None:
        """Wait until every message being handled and every job has finished."""
        while self._tasks or self._services.jobs.active():
            pending = [*self._tasks, *(j.task for j in self._services.jobs.active() if j.task)]
            await asyncio.gather(*pending, return_exceptions=True)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._services.jobs.shutdown()

    async def run_scheduled(self, text: str) -> None:
        """Handle `text` (without the prefix) as a command of the scheduler identity,
        exactly as a member's: parsed, authorised, gated and run as a job. Its
        messages go to the home room and answer no message (the event id is empty)."""
        room_id = await self._services.chat.home_room()
        if room_id is None:  # the scheduler waits for the room, so this is a fault
            raise RuntimeError(f"scheduled {text!r} not run: the home room is not known")
        message = Message(room_id, "", SCHEDULER, self._prefix + text, int(time.time() * 1000))
        await self.handle(message)

    async def handle(self, message: Message) -> None:
        services = self._services
        try:
            await self._handle(message)
        except UserError as exc:
            await self._reply(message, str(exc))
        except Exception:
            incident = secrets.token_hex(4)
            log.exception("handling %s failed: incident %s", message.event_id, incident)
            services.metrics.failures.inc()
            await self._reply(
                message,
                f"💥 Something went wrong (incident `{incident}`); the bot's log has the details.",
            )

    async def _handle(self, message: Message) -> None:
        services = self._services
        services.metrics.sync_lag.set(max(0.0, time.time() - message.timestamp_ms / 1000))
        body = message.body.strip()
        if len(body) > MAX_COMMAND_LENGTH:
            services.metrics.commands.labels("?", "too_long").inc()
            raise UserError(f"That message is too long for a command ({len(body)} characters).")
        match = _WORD.match(body[len(self._prefix) :])
        if match is None:
            return
        word, rest = match.groups()
        spec = services.registry.get(word)
        if spec is None:
            services.metrics.commands.labels("?", "unknown").inc()
            suggestions = services.registry.suggest(word)
            hint = (
                " Did you mean " + " or ".join(f"`{self._prefix}{s}`" for s in suggestions) + "?"
                if suggestions
                else ""
            )
            raise UserError(
                f"Unknown command `{self._prefix}{_shorten(word)}`.{hint} "
                f"`{self._prefix}help` lists what you can run."
            )
        services.store.audit(
            message.sender,
            "command",
            _shorten(body, 500),
            room_id=message.room_id,
            event_id=message.event_id,
        )
        role = await self._authorise(spec, message)
        args = spec.parse(rest, self._prefix)
        ctx = CommandContext(spec, args, message, role, services)
        services.metrics.commands.labels(spec.name, "accepted").inc()
        if spec.vote_policy is not None:
            await services.gate.propose(ctx)
        elif spec.quick:
            # Quick answers (help, ping) get no job record, which would only
            # crowd !jobs; they are still tracked tasks with a time limit.
            try:
                async with asyncio.timeout(spec.timeout or QUICK_TIMEOUT):
                    await spec.handler(ctx)
            except TimeoutError:
                raise UserError(
                    f"`{self._prefix}{spec.name}` took too long and was stopped."
                ) from None
        else:
            services.jobs.start(ctx)

    async def _authorise(self, spec: CommandSpec, message: Message) -> Role:
        services = self._services
        role = await services.access.role(message.room_id, message.sender)
        if role is None or role < spec.role:
            services.metrics.commands.labels(spec.name, "denied").inc()
            services.store.audit(
                message.sender,
                "denied",
                f"{spec.name} needs {spec.role.label}",
                room_id=message.room_id,
                event_id=message.event_id,
            )
            have = role.label if role is not None else "not a member of this room"
            raise PermissionDenied(
                f"🔒 `{self._prefix}{spec.name}` needs the {spec.role.label} role; "
                f"{message.sender} is {have}. Nothing was done."
            )
        return role

    async def _reauthorise(self, ctx: CommandContext) -> None:
        ctx.role = await self._authorise(ctx.spec, ctx.message)

    async def _reply(self, message: Message, markdown: str) -> None:
        try:
            await self._services.chat.send(
                message.room_id,
                markdown,
                reply_to=message.reply_target,
                thread_root=message.thread_root,
            )
        except Exception:
            log.exception("could not reply to %s", message.event_id)


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
