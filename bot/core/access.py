"""Roles: from the config lists first, then from the room's power levels."""

from __future__ import annotations

from bot.config import AccessConfig
from bot.core.chat import Chat, Membership
from bot.core.roles import Role

# Who scheduled work runs as. Matrix user ids always start with "@", so no member
# can be this identity.
SCHEDULER = "scheduler"


class Access:
    def __init__(self, config: AccessConfig, chat: Chat) -> None:
        self._config = config
        self._chat = chat

    async def role(self, room_id: str, user_id: str) -> Role | None:
        """The member's role now, or None if they are not in the room."""
        if user_id == SCHEDULER:
            return Role.OPERATOR
        if user_id in self._config.admins:  # a listed admin needs no room state
            return Role.ADMIN
        if user_id in self._config.operators:
            return Role.OPERATOR
        membership = await self._chat.membership(room_id, user_id)
        if not membership.member:
            return None
        return role_of(self._config, user_id, membership)


def role_of(config: AccessConfig, user_id: str, membership: Membership) -> Role:
    """A joined member's role: the config lists first, then the room's power levels
    (room v12 creators are admins). Also what `coopbot check` counts voters by."""
    if user_id in config.admins:
        return Role.ADMIN
    if user_id in config.operators:
        return Role.OPERATOR
    if membership.creator or membership.power_level >= config.admin_power:
        return Role.ADMIN
    if membership.power_level >= config.operator_power:
        return Role.OPERATOR
    return Role.VIEWER
