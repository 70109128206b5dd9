"""The Chat interface: what the core needs from a chat network.

Matrix (bot/ops/matrix.py) and the local console (bot/core/console.py) implement it.
Messages are written in Markdown: the plain-text body is the Markdown itself
(readable as is) and the HTML is rendered from it with raw HTML disabled, so
text that came from members or from apps can never inject markup.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore

# No rule makes a link or an image: the bot's own messages use none, so whatever a
# member, a release note or a log smuggles in (`[x](https://evil)`, `<https://…>`,
# `![](mxc://…)`, a reference definition) stays visible text. Raw HTML stays escaped.
_markdown = (
    MarkdownIt("commonmark", {"html": False, "breaks": True})
    .enable("table")
    .disable(["link", "image", "autolink", "reference"])
)
# Element turns the text "@room" into a room pill (and older clients notify on it);
# outside code a word joiner keeps the word readable but no longer that keyword.
_ROOM_WORD = re.compile(r"@room\b", re.IGNORECASE)


def _inert_mentions(state: StateCore) -> None:
    for block in state.tokens:
        for token in block.children or ():
            if token.type == "text":
                token.content = _ROOM_WORD.sub(lambda m: "@\u2060" + m[0][1:], token.content)


_markdown.core.ruler.push("inert_mentions", _inert_mentions)


def render_html(markdown: str) -> str:
    """The formatted_body of a message: links, images and "@room" never come out."""
    return str(_markdown.render(markdown)).strip()


# Put among a message's mentions to mention the whole room (m.mentions.room).
ROOM_MENTION = "@room"


@dataclass(frozen=True)
class Message:
    """A member's text message, already filtered by the adapter (not ours, not
    a notice, not an edit, not a replay)."""

    room_id: str
    event_id: str
    sender: str
    body: str
    timestamp_ms: int
    thread_root: str | None = None

    @property
    def reply_target(self) -> str | None:
        """The event a reply answers: none for scheduled work, whose messages have an
        empty event id because nobody typed them."""
        return self.event_id or None


@dataclass(frozen=True)
class Reaction:
    """An m.reaction annotation by a member (the bot's own are filtered out)."""

    room_id: str
    event_id: str
    sender: str
    target: str  # the event reacted to
    key: str
    timestamp_ms: int


@dataclass(frozen=True)
class Redaction:
    """A redaction: for votes, the withdrawal of a reaction."""

    room_id: str
    event_id: str
    sender: str
    redacts: str


ChatEvent = Message | Reaction | Redaction


@dataclass(frozen=True)
class Membership:
    """What the room says about a user, for deciding their role."""

    member: bool
    power_level: int
    creator: bool = False  # room v12+: creators outrank every power level


EventHandler = Callable[[ChatEvent], Awaitable[None]]


class Chat(Protocol):
    user_id: str

    async def send(
        self,
        room_id: str,
        markdown: str,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
        mentions: Sequence[str] = (),
        notify: bool = False,
    ) -> str:
        """Post a notice; returns its event id.

        `notify=True` is for what someone must act on (a vote, a failure): the message
        then notifies exactly `mentions` (Matrix: `m.text` with those `m.mentions`,
        because push rules silence every `m.notice`). Routine answers leave it off."""
        ...

    async def edit(self, room_id: str, event_id: str, markdown: str) -> None: ...

    async def send_file(
        self,
        room_id: str,
        filename: str,
        data: bytes,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
    ) -> str:
        """Post a text file (long logs); returns its event id."""
        ...

    async def react(self, room_id: str, event_id: str, key: str) -> str: ...

    async def membership(self, room_id: str, user_id: str) -> Membership: ...

    async def members(self, room_id: str) -> dict[str, Membership]:
        """Every joined member of the room."""
        ...

    async def reactions(self, room_id: str, event_id: str) -> list[Reaction]:
        """Every current (not redacted) reaction to an event, from the server."""
        ...

    async def run(self, on_event: EventHandler) -> None:
        """Receive events until cancelled, handing each to on_event."""
        ...

    def alive(self) -> bool:
        """True while the receive loop is healthy (for /healthz)."""
        ...

    def problems(self) -> list[str]:
        """What keeps members from using the bot although it is alive (for /healthz),
        e.g. a device Element will not trust."""
        ...

    async def home_room(self) -> str | None:
        """Where scheduled work reports: the first configured room (None until known)."""
        ...

    async def room_for(self, ref: str) -> str | None:
        """The id of a configured room given by id or alias (None until known)."""
        ...
