"""parse → authorise → (approval gate) → run as a job → report."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from bot.core.access import SCHEDULER
from bot.core.approvals import Choice, State
from bot.core.authorise import Authoriser
from bot.core.chat import ChatEvent, Message, Reaction, Redaction
from bot.core.context import CommandContext, CommandSpec, Services, split_reason
from bot.core.gate import ApprovalGate
from bot.core.jobs import JobManager
from bot.core.rooms import RoomRoles
from bot.errors import UserError
from bot.fmt import code

log = logging.getLogger(__name__)

# Longer messages are refused before parsing: no command needs them.
MAX_COMMAND_LENGTH = 4000
QUICK_TIMEOUT = 60.0
RATE_WINDOW = 60.0  # seconds over which jobs.member_rate is counted
_WORD = re.compile(r"(\S+)\s*(.*)", re.DOTALL)


class Dispatcher:
    def __init__(
        self,
        services: Services,
        jobs: JobManager,
        authoriser: Authoriser,
        *,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = 5.0,
    ) -> None:
        self._services = services
        self._jobs = jobs  # services.jobs, with the controls only the core uses
        self._authoriser = authoriser
        self._prefix = services.prefix
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent: dict[str, deque[float]] = {}  # member -> times of their commands
        self._warned: set[str] = set()  # members told to slow down in this burst
        self.rooms = RoomRoles(services.config.matrix, services.chat)
        self._told: set[tuple[str, str, str]] = set()  # (room, member, family) sent on
        self.gate = ApprovalGate(services, self, clock, sweep_interval)

    def is_command(self, body: str) -> bool:
        return body.startswith(self._prefix) and len(body) > len(self._prefix)

    async def submit(self, event: ChatEvent) -> None:
        """Called by the chat adapter for each new event; returns at once so the
        receive loop keeps hearing. The handling task is tracked."""
        if isinstance(event, Message):
            if self.is_command(event.body):
                work = self.handle(event)
            elif event.thread_root is not None:
                # A member's reply in a proposal's thread is kept with the votes.
                work = self._guard(self.gate.on_comment(event))
            else:
                return
        elif isinstance(event, Reaction):
            work = self._guard(self.gate.on_reaction(event))
        elif isinstance(event, Redaction):
            work = self._guard(self.gate.on_redaction(event))
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
        while self._tasks or self._jobs.active():
            pending = [*self._tasks, *(j.task for j in self._jobs.active() if j.task)]
            await asyncio.gather(*pending, return_exceptions=True)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._jobs.shutdown()

    async def vote(self, ctx: CommandContext, proposal_id: str, choice: Choice) -> None:
        await self.gate.vote_by_text(ctx, proposal_id, choice)

    async def urgent(self, ctx: CommandContext, proposal_id: str) -> None:
        await self.gate.urgent(ctx, proposal_id)

    async def describe_open(self, room_id: str) -> list[str]:
        rows = self._services.store.proposals(State.OPEN)
        return [await self.gate.describe(row) for row in rows if row.room_id == room_id]

    async def hears(self, room_id: str, spec: CommandSpec) -> bool:
        return await self.rooms.hears(room_id, self._services.registry.family_of(spec))

    async def run_scheduled(self, text: str) -> None:
        """Handle `text` (without the prefix) as a command of the scheduler identity,
        exactly as a member's: parsed, authorised, gated and run as a job. Its
        messages go to the room that takes its family's reports (else the home room)
        and answer no message (the event id is empty)."""
        registry = self._services.registry
        spec = registry.get(text.split(maxsplit=1)[0]) if text.strip() else None
        family = registry.family_of(spec) if spec is not None else ""
        room_id = await self.rooms.report_room(family)
        if room_id is None:  # the scheduler waits for the room, so this is a fault
            raise RuntimeError(f"scheduled {text!r} not run: its room is not known")
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
        if not self._within_rate(message):
            return
        word, rest = match.groups()
        spec = services.registry.get(word)
        if spec is None:
            services.metrics.commands.labels("?", "unknown").inc()
            suggestions = services.registry.suggest(word)
            hint = (
                " Did you mean " + " or ".join(code(self._prefix + s) for s in suggestions) + "?"
                if suggestions
                else ""
            )
            raise UserError(
                f"Unknown command {code(self._prefix + _shorten(word))}.{hint} "
                f"`{self._prefix}help` lists what you can run."
            )
        family = services.registry.family_of(spec)
        if message.sender != SCHEDULER and not await self.rooms.hears(message.room_id, family):
            self._not_heard(message, spec, family)
            return
        services.store.audit(
            message.sender,
            "command",
            _shorten(spec.recorded(body), 500),
            room_id=message.room_id,
            event_id=message.event_id,
        )
        role = await self._authoriser.authorise(spec, message)
        reason = None
        if spec.vote_policy is not None or spec.reason:
            rest, reason = split_reason(rest)
        args = spec.parse(rest, self._prefix)
        ctx = CommandContext(spec, args, message, role, services, self, reason=reason)
        services.metrics.commands.labels(spec.name, "accepted").inc()
        if spec.vote_policy is not None:
            await self.gate.propose(ctx)
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

    def _not_heard(self, message: Message, spec: CommandSpec, family: str) -> None:
        """A command of a family this room does not hear: the member is told once where
        to ask (per room and family); after that such commands are ignored quietly,
        so a room for reports stays quiet."""
        self._services.metrics.commands.labels(spec.name, "not_heard").inc()
        told = (message.room_id, message.sender, family)
        if told in self._told:
            return
        self._told.add(told)
        where = self.rooms.heard_in(family)
        hint = f" Ask in {' or '.join(where)}." if where else " No room hears it."
        raise UserError(
            f"{code(self._prefix + spec.name)} is not heard in this room "
            f"(its `hears` in matrix.rooms leaves out {family}).{hint}"
        )

    def _within_rate(self, message: Message) -> bool:
        """At most jobs.member_rate commands per member per minute. The first command
        over the limit is answered (when to try again); the rest of that burst is
        dropped without a word, so a flood does not become a flood of answers."""
        if message.sender == SCHEDULER:
            return True
        now = time.monotonic()
        sent = self._recent.setdefault(message.sender, deque())
        while sent and now - sent[0] > RATE_WINDOW:
            sent.popleft()
        limit = self._services.config.jobs.member_rate
        if len(sent) < limit:
            sent.append(now)
            self._warned.discard(message.sender)
            return True
        self._services.metrics.commands.labels("?", "rate_limited").inc()
        if message.sender not in self._warned:
            self._warned.add(message.sender)
            wait = RATE_WINDOW - (now - sent[0])
            raise UserError(
                f"🐢 Slow down: more than {limit} commands in a minute from {message.sender}. "
                f"Try again in {wait:.0f} s; until then commands are not run."
            )
        return False

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
