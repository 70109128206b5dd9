"""A local room on stdin/stdout: try every command without a homeserver.

The person at the terminal already holds the bot's config and keys, so the
default identity is an admin; `--as @user:server` takes the role that the
access lists give that user instead.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from bot.core.chat import EventHandler, Membership, Message, Reaction

CONSOLE_USER = "@you:console"
CONSOLE_ROOM = "!console:local"


class ConsoleChat:
    user_id = "@coopbot:console"

    def __init__(
        self,
        prefix: str,
        sender: str = CONSOLE_USER,
        stdin: TextIO = sys.stdin,
        stdout: TextIO = sys.stdout,
    ) -> None:
        self._prefix = prefix
        self._sender = sender
        self._stdin = stdin
        self._stdout = stdout
        self._ids = itertools.count(1)
        self._open = False

    def _next_id(self) -> str:
        return f"$console-{next(self._ids)}"

    def _print(self, text: str) -> None:
        self._stdout.write(text + "\n")
        self._stdout.flush()

    async def run(self, on_event: EventHandler) -> None:
        """Read lines until end of input. A line without the prefix gets it."""
        self._open = True
        self._print(
            f"coopbot console: you are {self._sender}. Try {self._prefix}help; Ctrl-D quits."
        )
        try:
            while True:
                line = await asyncio.to_thread(self._stdin.readline)
                if not line:
                    return
                body = line.strip()
                if not body:
                    continue
                if not body.startswith(self._prefix):
                    body = self._prefix + body
                await on_event(
                    Message(
                        CONSOLE_ROOM, self._next_id(), self._sender, body, int(time.time() * 1000)
                    )
                )
        finally:
            self._open = False

    def alive(self) -> bool:
        return self._open

    def problems(self) -> list[str]:
        return []

    async def home_room(self) -> str | None:
        return CONSOLE_ROOM

    async def room_for(self, ref: str) -> str | None:
        return None  # the console is one room, configured nowhere

    async def send(
        self,
        room_id: str,
        markdown: str,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
        mentions: Sequence[str] = (),
        notify: bool = False,  # a terminal has no push notifications
    ) -> str:
        event_id = self._next_id()
        marker = "  ↳ " if thread_root else ""
        ping = f"[to {', '.join(mentions)}] " if mentions else ""
        self._print(f"{marker}coopbot> {ping}{markdown}")
        return event_id

    async def send_file(
        self,
        room_id: str,
        filename: str,
        data: bytes,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
    ) -> str:
        self._print(
            f"coopbot> [file {filename}, {len(data)} bytes]\n" + data.decode(errors="replace")
        )
        return self._next_id()

    async def edit(self, room_id: str, event_id: str, markdown: str) -> None:
        self._print(f"coopbot (update)> {markdown}")

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        self._print(f"coopbot reacts {key}")
        return self._next_id()

    async def membership(self, room_id: str, user_id: str) -> Membership:
        return Membership(member=True, power_level=100 if user_id == CONSOLE_USER else 0)

    async def members(self, room_id: str) -> dict[str, Membership]:
        return {self._sender: await self.membership(room_id, self._sender)}

    async def reactions(self, room_id: str, event_id: str) -> list[Reaction]:
        return []  # the console has no reactions: vote with !approve and !reject
