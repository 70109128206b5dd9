"""!approve, !reject and !proposals: voting by text, and what is open."""

from __future__ import annotations

import datetime as dt

from bot.core.approvals import Choice
from bot.core.context import Arg, CommandContext
from bot.core.registry import CommandGroup

group = CommandGroup("approvals")
_ID = Arg("id", "the proposal id shown in the proposal")


@group.command("approve", help="Approve a proposal (like reacting 👍).", args=(_ID,), quick=True)
async def approve(ctx: CommandContext) -> None:
    await ctx.control.vote(ctx, ctx.args["id"], Choice.APPROVE)


@group.command("reject", help="Reject a proposal (like reacting 👎).", args=(_ID,), quick=True)
async def reject(ctx: CommandContext) -> None:
    await ctx.control.vote(ctx, ctx.args["id"], Choice.REJECT)


@group.command("proposals", help="List the open proposals in this room.", quick=True)
async def proposals(ctx: CommandContext) -> None:
    rows = [
        row for row in ctx.services.store.proposals("open") if row.room_id == ctx.message.room_id
    ]
    if not rows:
        await ctx.reply("No proposal is open.")
        return
    lines = ["Open proposals:", ""]
    for row in rows:
        until = dt.datetime.fromtimestamp(row.expires_at, dt.UTC).strftime("%H:%M UTC")
        votes = ctx.services.store.votes(row.id)
        lines.append(
            f"- `{row.id}` `{row.text}` by {row.requester}, until {until} "
            f"({len(votes)} vote{'s' if len(votes) != 1 else ''} cast)"
        )
    await ctx.reply("\n".join(lines))
