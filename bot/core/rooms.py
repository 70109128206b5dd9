"""Room roles: which command families a room hears, and where reports go.

Each entry of `matrix.rooms` may say `hears: [families]` (unset: every family) and
`reports: [backups, upgrade, incidents]`. `help` is heard everywhere, so a member can
always find out what a room is for. A report (a scheduled backup or upgrade check,
a swarm incident) goes to the first room whose `reports` names its family, and to
the first room (the home room) when none does: without any roles, as before.
"""

from __future__ import annotations

from bot.config import MatrixConfig, RoomEntry
from bot.core.chat import Chat

ALWAYS_HEARD = frozenset({"help"})


class RoomRoles:
    def __init__(self, matrix: MatrixConfig | None, chat: Chat) -> None:
        self._entries: list[RoomEntry] = list(matrix.rooms) if matrix else []
        self._chat = chat

    async def _entry(self, room_id: str) -> RoomEntry | None:
        for entry in self._entries:
            if entry.room == room_id or await self._chat.room_for(entry.room) == room_id:
                return entry
        return None

    async def hears(self, room_id: str, family: str) -> bool:
        """A room without a role (the console, or no `hears`) hears every family."""
        if family in ALWAYS_HEARD:
            return True
        entry = await self._entry(room_id)
        return entry is None or entry.hears is None or family in entry.hears

    def heard_in(self, family: str) -> list[str]:
        """The configured rooms (as written) that hear this family: where to send a
        member who asked in the wrong room."""
        return [e.room for e in self._entries if e.hears is None or family in e.hears]

    async def report_room(self, family: str) -> str | None:
        """Where this family's reports go (None until that room is known)."""
        for entry in self._entries:
            if family in entry.reports:
                return await self._chat.room_for(entry.room)
        return await self._chat.home_room()
