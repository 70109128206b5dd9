"""!approve, !reject and !proposals: voting by text, and what is open."""

from __future__ import annotations

from bot.core.approvals import Choice
from bot.core.context import Arg, CommandContext
from bot.core.registry import CommandGroup
from bot.fmt import utc_time

group = CommandGroup("approvals")
_ID = Arg("id", "the proposal id shown in the proposal")


@group.command(
    "approve",
    help="Approve a proposal (like reacting 👍).",
    args=(_ID,),
    quick=True,
    example="approve 7f3a",
)
async def approve(ctx: CommandContext) -> None:
    await ctx.control.vote(ctx, ctx.args["id"], Choice.APPROVE)


@group.command(
    "reject",
    help="Reject a proposal (like reacting 👎).",
    args=(_ID,),
    quick=True,
    example="reject 7f3a",
)
async def reject(ctx: CommandContext) -> None:
    await ctx.control.vote(ctx, ctx.args["id"], Choice.REJECT)


@group.command(
    "proposals", help="List the open proposals in this room.", quick=True, example="proposals"
)
async def proposals(ctx: CommandContext) -> None:
    rows = [
        row for row in ctx.services.store.proposals("open") if row.room_id == ctx.message.room_id
    ]
    if not rows:
        await ctx.reply("No proposal is open.")
        return
    lines = ["Open proposals:", ""]
    for row in rows:
        until = utc_time(row.expires_at, date=False)
        votes = ctx.services.store.votes(row.id)
        lines.append(
            f"- `{row.id}` `{row.text}` by {row.requester}, until {until} "
            f"({len(votes)} vote{'s' if len(votes) != 1 else ''} cast)"
        )
    await ctx.reply("\n".join(lines))
