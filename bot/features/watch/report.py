"""Incidents in the room: one message each, edited while it lasts, and a recovery
message when it is over; non-urgent ones held in quiet hours and sent as one
digest when they end. Every incident is a row in the store first, so a restarted
bot edits the same messages and announces nothing twice."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from datetime import time as clock_time

from bot.core.chat import Chat
from bot.core.records import Held, IncidentRow
from bot.core.store import Store
from bot.features.watch.rules import Decision, Incident

log = logging.getLogger(__name__)


def parse_span(text: str) -> tuple[clock_time, clock_time]:
    start, _, end = text.partition("-")
    h1, m1 = (int(x) for x in start.split(":"))
    h2, m2 = (int(x) for x in end.split(":"))
    return clock_time(h1, m1), clock_time(h2, m2)


def in_span(moment: clock_time, span: tuple[clock_time, clock_time]) -> bool:
    """Whether a time of day is inside "start-end" (which may run past midnight)."""
    start, end = span
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


def _when(at: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(at, UTC).astimezone(zone).strftime("%H:%M")


def _lasted(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def as_incident(row: IncidentRow) -> Incident:
    return Incident(
        row.key, row.server, row.kind, row.subject, row.summary, row.urgent, row.opened_at
    )


class Reporter:
    def __init__(
        self,
        chat: Chat,
        store: Store,
        admins: Sequence[str],
        *,
        zone: tzinfo,
        quiet_hours: str | None = None,
        room: Callable[[], Awaitable[str | None]] | None = None,
        rooms: Mapping[str, str] | None = None,
    ) -> None:
        self._chat = chat
        self.store = store
        self._admins = list(admins)
        self._zone = zone
        self._quiet = parse_span(quiet_hours) if quiet_hours else None
        self._room = room or chat.home_room
        # server -> the room that watches it (servers.<name>.room); others: the main room
        self._rooms = dict(rooms or {})

    async def room_of(self, server: str) -> str | None:
        return self._rooms.get(server) or await self._room()

    def quiet(self, at: float) -> bool:
        if self._quiet is None:
            return False
        local = datetime.fromtimestamp(at, UTC).astimezone(self._zone)
        return in_span(local.time().replace(tzinfo=None), self._quiet)

    def _text(self, row: IncidentRow, summary: str) -> str:
        icon = "🚨" if row.urgent else "⚠️"
        text = f"{icon} Incident #{row.id} on **{row.server}**: {summary}"
        text += f"\n\nsince {_when(row.opened_at, self._zone)}"
        if row.updated_at > row.opened_at + 1:
            text += f", updated {_when(row.updated_at, self._zone)}"
        if self._admins:
            text += " · " + " ".join(self._admins)
        return text

    async def apply(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            try:
                await self._apply(decision)
            except Exception:  # one failed send must not lose the others
                log.exception("could not report incident %s", decision.incident.key)

    async def _apply(self, decision: Decision) -> None:
        incident, at = decision.incident, decision.at
        open_rows = {row.key: row for row in self.store.open_incidents()}
        row = open_rows.get(incident.key)
        if decision.action == "open":
            if row is not None:  # already open (a restart): never announced twice
                return
            row = self.store.open_incident(
                incident.key,
                incident.server,
                incident.kind,
                incident.subject,
                incident.summary,
                incident.urgent,
                at,
            )
            if self.quiet(at) and not incident.urgent:
                self.store.set_incident_message(row.id, None, None, Held.HELD)
                log.info("incident #%s held for the digest: %s", row.id, incident.key)
                return
            await self._announce(row)
            return
        if row is None:
            return
        if decision.action == "update":
            self.store.update_incident(row.id, incident.summary, incident.urgent, at)
            row = self.store.incident(row.id) or row
            if row.held == Held.HELD and row.urgent:
                await self._announce(row)  # held, then became urgent: say it now
            elif row.held == Held.SENT and row.message_id and row.room_id:
                await self._chat.edit(row.room_id, row.message_id, self._text(row, row.summary))
            return
        self.store.close_incident(row.id, at)
        row = self.store.incident(row.id) or row
        if row.held == Held.HELD:
            return  # the digest will tell it, opened and closed
        if row.room_id is None:
            return
        lasted = _lasted(at - row.opened_at)
        if row.held == Held.SENT and row.message_id:
            await self._chat.edit(
                row.room_id,
                row.message_id,
                f"✅ ~~Incident #{row.id} on **{row.server}**~~: {row.summary}\n\n"
                f"resolved at {_when(at, self._zone)} after {lasted}",
            )
        await self._chat.send(
            row.room_id,
            f"✅ Recovered: incident #{row.id} on **{row.server}** ({row.kind} "
            f"{row.subject}) is over after {lasted}.",
            reply_to=row.message_id,
        )

    async def _announce(self, row: IncidentRow) -> None:
        room_id = await self.room_of(row.server)
        if room_id is None:
            log.warning("incident #%s not announced: no room yet", row.id)
            return
        message_id = await self._chat.send(
            room_id, self._text(row, row.summary), mentions=self._admins, notify=True
        )
        self.store.set_incident_message(row.id, room_id, message_id, Held.SENT)

    async def digest(self, now: float) -> str | None:
        """After quiet hours: one message for everything held; its event id."""
        if self.quiet(now):
            return None
        everything = self.store.held_incidents()
        by_room: dict[str, list[IncidentRow]] = {}
        for row in everything:
            if (room_id := await self.room_of(row.server)) is not None:
                by_room.setdefault(room_id, []).append(row)
        message_id = None
        for room_id, held in by_room.items():  # each room hears of its own servers
            message_id = await self._digest(room_id, held)
        return message_id

    async def _digest(self, room_id: str, held: list[IncidentRow]) -> str:
        lines = [f"🌅 While it was quiet, {len(held)} incident(s):"]
        for row in held:
            opened = _when(row.opened_at, self._zone)
            state = (
                f"over at {_when(row.closed_at, self._zone)}"
                if row.closed_at is not None
                else "**still open**"
            )
            lines.append(f"- #{row.id} {row.server}: {row.summary} (from {opened}, {state})")
        still_open = [row for row in held if row.closed_at is None]
        message_id = await self._chat.send(
            room_id,
            "\n".join(lines),
            mentions=self._admins if still_open else (),
            notify=bool(still_open),
        )
        for row in held:
            self.store.set_incident_message(row.id, room_id, message_id, Held.DIGEST)
        return message_id
