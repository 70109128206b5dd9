"""Test doubles for the interfaces of bot/ (no network, no threads)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.core.chat import ChatEvent, EventHandler, Membership, Message, Reaction

MemberInfo = Membership | tuple[bool, int] | tuple[bool, int, bool]


@dataclass(frozen=True)
class Sent:
    """A message the bot posted."""

    room: str
    markdown: str
    event_id: str
    reply_to: str | None = None
    thread_root: str | None = None
    mentions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Edit:
    """An edit of a message the bot posted earlier."""

    room: str
    event_id: str
    markdown: str


@dataclass(frozen=True)
class SentReaction:
    room: str
    event_id: str
    key: str
    reaction_id: str


@dataclass
class FakeChat:
    """The Chat protocol of bot/core/chat.py, in memory.

    `roster` maps a user id to `(member, power_level[, creator])` or a Membership;
    anyone else is not in the room. `incoming` is what `run()` feeds to the bot,
    in order, before returning (like the console at end of input).
    `server_reactions` is what the relations endpoint would answer, per event id.
    """

    roster: dict[str, MemberInfo] = field(default_factory=dict)
    incoming: list[ChatEvent] = field(default_factory=list)
    user_id: str = "@coopbot:test"
    sent: list[Sent] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    sent_reactions: list[SentReaction] = field(default_factory=list)
    server_reactions: dict[str, list[Reaction]] = field(default_factory=dict)
    # Everything in the order it happened: Sent, Edit and SentReaction records.
    log: list[Sent | Edit | SentReaction] = field(default_factory=list)
    running: bool = False
    home: str | None = "!room:test"  # where scheduled work reports
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _event_id(self) -> str:
        return f"$bot-{next(self._ids)}"

    async def send(
        self,
        room_id: str,
        markdown: str,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
        mentions: Sequence[str] = (),
    ) -> str:
        record = Sent(room_id, markdown, self._event_id(), reply_to, thread_root, tuple(mentions))
        self.sent.append(record)
        self.log.append(record)
        return record.event_id

    async def send_file(
        self,
        room_id: str,
        filename: str,
        data: bytes,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
    ) -> str:
        record = Sent(
            room_id, f"[file {filename}]\n{data.decode()}", self._event_id(), reply_to, thread_root
        )
        self.sent.append(record)
        self.log.append(record)
        return record.event_id

    async def edit(self, room_id: str, event_id: str, markdown: str) -> None:
        record = Edit(room_id, event_id, markdown)
        self.edits.append(record)
        self.log.append(record)

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        record = SentReaction(room_id, event_id, key, self._event_id())
        self.sent_reactions.append(record)
        self.log.append(record)
        return record.reaction_id

    async def membership(self, room_id: str, user_id: str) -> Membership:
        info = self.roster.get(user_id)
        if info is None:
            return Membership(member=False, power_level=0)
        if isinstance(info, Membership):
            return info
        return Membership(*info)

    def set_member(self, user_id: str, power_level: int, *, creator: bool = False) -> None:
        self.roster[user_id] = Membership(True, power_level, creator)

    async def members(self, room_id: str) -> dict[str, Membership]:
        people = {user: await self.membership(room_id, user) for user in self.roster}
        return {user: info for user, info in people.items() if info.member}

    async def reactions(self, room_id: str, event_id: str) -> list[Reaction]:
        return list(self.server_reactions.get(event_id, []))

    async def run(self, on_event: EventHandler) -> None:
        self.running = True
        try:
            for event in self.incoming:
                await on_event(event)
        finally:
            self.running = False

    async def home_room(self) -> str | None:
        return self.home

    def alive(self) -> bool:
        return self.running

    # -- helpers for assertions ------------------------------------------------
    def texts(self) -> list[str]:
        """The markdown of every posted message, in order (edits not included)."""
        return [record.markdown for record in self.sent]

    def replies_to(self, event_id: str) -> list[str]:
        return [record.markdown for record in self.sent if record.reply_to == event_id]

    def shown(self, event_id: str) -> str:
        """What a posted message reads now, after its edits."""
        text = next(record.markdown for record in self.sent if record.event_id == event_id)
        for edit in self.edits:
            if edit.event_id == event_id:
                text = edit.markdown
        return text

    def edits_of(self, event_id: str) -> list[str]:
        return [edit.markdown for edit in self.edits if edit.event_id == event_id]


def messages(bodies: Iterable[str], sender: str, room: str = "!room:test") -> list[Message]:
    return [
        Message(room, f"$in-{index}", sender, body, 1_700_000_000_000 + index)
        for index, body in enumerate(bodies, start=1)
    ]


def swap_services(services: object, **fakes: object) -> None:
    """Put fakes into a built bot's frozen Services (tests only: the bot itself never
    changes what it was built with)."""
    for name, fake in fakes.items():
        object.__setattr__(services, name, fake)
