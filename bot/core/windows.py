"""Maintenance windows: upgrades of a server's apps run only inside its window.

A window is a crontab line (`servers.<name>.window`, in the configured time zone)
read minute by minute: a minute is inside the window when the line matches it, so
`* 2-4 * * 6,0` is Saturday and Sunday 02:00-04:59 and the window starts at the first
matching minute. Windows are what watchtower's users asked for most (its issue 12).

An approved proposal of a windowed command (`!upgrade`) outside its server's window
is held, still open, until the next window start: the gate's delay mechanism
(`run_at`), so an eligible 👎 until then cancels it, as during a policy's delay. The
room is told when it will run. A proposal made with `--now` skips the window; the
command allows `--now` only where the policy has break_glass.

A scheduled auto-patch outside the window is posted as a proposal approved already and
held the same way (bot/core/autopatch.py), so a 👎 cancels it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo

from bot.config import Config
from bot.core.chat import Chat
from bot.core.cron import crontab_trigger
from bot.core.records import ProposalRow
from bot.core.store import Store
from bot.errors import UserError
from bot.fmt import code, utc_time

log = logging.getLogger(__name__)

WINDOWED = frozenset({"upgrade"})  # the commands a window holds
NOW_FLAG = "--now"
ServerOf = Callable[[str], Awaitable[str | None]]  # app domain -> its server


def inside(window: str, zone: tzinfo, at: float) -> bool:
    """Whether the minute of `at` matches the window's crontab line."""
    minute = datetime.fromtimestamp(at, zone).replace(second=0, microsecond=0)
    trigger = crontab_trigger(window, zone)
    fire = trigger.get_next_fire_time(None, minute)
    return fire is not None and fire == minute


def next_start(window: str, zone: tzinfo, at: float) -> float | None:
    """`at` itself if inside the window, else the first minute of the next one."""
    if inside(window, zone, at):
        return at
    moment = datetime.fromtimestamp(at, zone)
    fire = crontab_trigger(window, zone).get_next_fire_time(None, moment)
    return None if fire is None else fire.timestamp()


def delayed(row: ProposalRow, now: float, delay: float) -> float | None:
    """When an approved proposal may run under its policy's delay alone; None: now."""
    run_at = row.run_at if row.run_at is not None else now + delay
    return run_at if run_at > now else None


async def delay_only(row: ProposalRow, now: float, delay: float) -> float | None:
    """`Windows.run_at` for a bot without windows: the policy's delay alone."""
    return delayed(row, now, delay)


class Windows:
    """The servers' windows, for the gate (approved proposals) and the scheduler's
    auto-patches. `clock`: the bot's (tests pass their own)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        chat: Chat,
        server_of: ServerOf,
        zone: tzinfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config, self._store, self._chat = config, store, chat
        self.server_of = server_of
        self.commands = WINDOWED  # the commands it holds (tests hold their own)
        self._zone, self._clock = zone, clock
        # Proposals `run_at` found held by a window, told once the gate keeps them held
        # (`announce`): a 👎 in the deciding tally rejects them, and then no 🕑 note.
        self._holding: dict[str, str] = {}  # proposal id -> its server

    def window(self, server: str | None) -> str | None:
        found = self._config.servers.get(server or "")
        return None if found is None else found.window

    def describe(self, server: str, at: float) -> str:
        """`window` of server X (zone), and when it next opens."""
        window = self.window(server) or "*"
        opens = next_start(window, self._zone, at)
        when = f"; it next opens at {utc_time(opens)}" if opens is not None else ""
        return f"the maintenance window {code(window)} of server {server} ({self._zone}){when}"

    async def server(self, app: str | None) -> str | None:
        if not app:
            return None
        try:
            return await self.server_of(app)
        except UserError:  # an app gone from the inventory: no window to respect
            log.warning("maintenance window: cannot find the server of %s", app)
            return None
        # Anything else propagates: the gate's sweep logs it and asks again next time,
        # so a held upgrade never runs outside its window because a lookup failed.

    async def outside(self, app: str) -> tuple[str, float] | None:
        """(server, next start) when the app's server has a window and now is outside it."""
        server = await self.server(app)
        window = self.window(server)
        if server is None or window is None:
            return None
        now = self._clock()
        opens = next_start(window, self._zone, now)
        return None if opens is None or opens <= now else (server, opens)

    async def run_at(self, row: ProposalRow, now: float, delay: float) -> float | None:
        """When the approved proposal may run (None: now): after its policy's delay,
        and for a windowed command without `--now`, inside its server's window. A
        window start past the proposal's expiry extends the expiry to it: an approved
        upgrade waits for its window rather than running outside it."""
        base = delayed(row, now, delay) or now
        if row.command not in self.commands or NOW_FLAG in row.text.split():
            return base if base > now else None
        server = await self.server(row.app)
        window = self.window(server)
        if window is None or server is None:
            return base if base > now else None
        opens = next_start(window, self._zone, base)
        if opens is None or opens <= now:
            return None
        if opens >= row.expires_at:
            self._store.set_proposal_expires_at(row.id, opens + 3600)
        if row.run_at is None or abs(row.run_at - opens) > 1:
            self._holding[row.id] = server
        return opens

    async def announce(self, row: ProposalRow, run_at: float) -> None:
        """The gate holds the approved proposal to `run_at`: if a window holds it,
        audit it and tell the room when it runs (after the deciding tally, so a
        proposal a 👎 rejects in the same count gets no 🕑 note)."""
        server = self._holding.pop(row.id, None)
        if server is None:
            return  # held by its policy's delay alone
        self._store.audit(
            row.requester,
            "window",
            f"{row.id}: {row.text}; held for {self.describe(server, self._clock())}",
            app=row.app,
            room_id=row.room_id,
        )
        await self._chat.send(
            row.room_id, self.hold_note(row, run_at, server), thread_root=row.thread_root
        )

    def hold_note(self, row: ProposalRow, run_at: float, server: str) -> str:
        return (
            f"🕑 Proposal `{row.id}` ({code(row.text)}) is approved; it waits for "
            f"{self.describe(server, self._clock())} and runs at **{utc_time(run_at)}**. "
            "An eligible 👎 until then cancels it."
        )
