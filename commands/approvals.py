"""!approve, !reject and !proposals: voting by text, and what is open."""

from __future__ import annotations

from bot.core.approvals import Choice, Plan
from bot.core.context import Arg, CommandContext
from bot.core.registry import CommandGroup
from bot.core.roles import Role

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
    "proposals",
    help="The open proposals in this room: plan, votes, what is still needed.",
    quick=True,
    example="proposals",
)
async def proposals(ctx: CommandContext) -> None:
    described = await ctx.control.describe_open(ctx.message.room_id)
    if not described:
        await ctx.reply("No proposal is open.")
        return
    await ctx.reply("\n".join(["Open proposals:", "", *described]))


@group.command(
    "urgent",
    help="Break-glass: run an open proposal at once, without the vote, where its policy "
    "allows it (break_glass). The whole room is told and a follow-up vote confirms it.",
    args=(_ID,),
    role=Role.ADMIN,
    quick=True,
    reason=True,
    example="urgent 7f3a -- the site is down",
)
async def urgent(ctx: CommandContext) -> None:
    await ctx.control.urgent(ctx, ctx.args["id"])


async def _ratify_plan(ctx: CommandContext) -> Plan:
    return Plan(f"Confirm the break-glass run of proposal `{ctx.args['id']}`.")


@group.command(
    "ratify",
    help="The co-op's after-the-fact vote on a break-glass run (opened by !urgent).",
    args=(_ID,),
    vote_policy="confirm_urgent",
    plan=_ratify_plan,
    example="ratify 7f3a",
)
async def ratify(ctx: CommandContext) -> None:
    await ctx.reply(f"✅ The co-op confirmed the break-glass run of `{ctx.args['id']}`.")
