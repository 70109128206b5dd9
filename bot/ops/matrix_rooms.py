"""A room's joined members and what the room says about each (power level, creator),
read from its state in one request: for `coopbot check`, which has no sync."""

from __future__ import annotations

from typing import Any

from nio import AsyncClient, RoomGetStateError, RoomResolveAliasError

from bot.core.chat import Membership


class RoomReadError(Exception):
    """The room's state could not be read (not joined yet, unknown alias)."""


def is_hydra(room_version: str) -> bool:
    """Room versions 12 and later give creators power above every level."""
    return (room_version.isdigit() and int(room_version) >= 12) or "hydra" in room_version


def members_of(state: list[dict[str, Any]]) -> dict[str, Membership]:
    """Joined members from a room's full state (pure)."""
    levels: dict[str, Any] = {}
    creators: set[str] = set()
    joined: list[str] = []
    for event in state:
        kind, content = event.get("type"), event.get("content") or {}
        if kind == "m.room.power_levels":
            levels = content
        elif kind == "m.room.create" and is_hydra(str(content.get("room_version", "1"))):
            creators = {event["sender"], *content.get("additional_creators", [])}
        elif kind == "m.room.member" and content.get("membership") == "join":
            joined.append(str(event["state_key"]))
    users = levels.get("users") or {}
    default = int(levels.get("users_default", 0))
    return {
        user: Membership(True, int(users.get(user, default)), creator=user in creators)
        for user in joined
    }


async def room_members(client: AsyncClient, ref: str) -> dict[str, Membership]:
    """The joined members of a room given by id or alias; RoomReadError if unreadable."""
    room_id = ref
    if ref.startswith("#"):
        resolved = await client.room_resolve_alias(ref)
        if isinstance(resolved, RoomResolveAliasError):
            raise RoomReadError(f"room alias {ref} does not resolve")
        room_id = resolved.room_id
    response = await client.room_get_state(room_id)
    if isinstance(response, RoomGetStateError):
        raise RoomReadError(f"cannot read the members of {ref}: {response.message}")
    return members_of(response.events)
