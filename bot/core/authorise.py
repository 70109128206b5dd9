"""Is this member allowed to run this command here, now? Asked when a command
arrives and again when its job starts (a role can be taken away in between)."""

from __future__ import annotations

from bot.core.access import Access
from bot.core.chat import Message
from bot.core.context import CommandContext, CommandSpec
from bot.core.metrics import Metrics
from bot.core.roles import Role
from bot.core.store import Store
from bot.errors import PermissionDenied


class Authoriser:
    def __init__(self, access: Access, store: Store, metrics: Metrics, prefix: str) -> None:
        self._access = access
        self._store = store
        self._metrics = metrics
        self._prefix = prefix

    async def authorise(self, spec: CommandSpec, message: Message) -> Role:
        """The member's role, or PermissionDenied (audited) when it is too low."""
        role = await self._access.role(message.room_id, message.sender)
        if role is None or role < spec.role:
            self._metrics.commands.labels(spec.name, "denied").inc()
            self._store.audit(
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

    async def reauthorise(self, ctx: CommandContext) -> None:
        ctx.role = await self.authorise(ctx.spec, ctx.message)
