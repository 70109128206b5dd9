"""!jobs and !cancel."""

from __future__ import annotations

import time

from bot.core.context import Arg, CommandContext, positive_int
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.errors import UserError
from bot.fmt import human_age

group = CommandGroup("jobs")


@group.command(
    "jobs",
    help="List running and waiting work, and the last finished jobs.",
    quick=True,
    example="jobs",
)
async def jobs(ctx: CommandContext) -> None:
    now = time.time()
    active = ctx.services.jobs.active()
    lines = []
    for job in active:
        app = f" on {job.app}" if job.app else ""
        lines.append(
            f"- #{job.id} **{job.state}**{app}: `{job.text}` by {job.ctx.sender}, "
            f"{human_age(now - job.created_at)} ago"
        )
    if not lines:
        lines.append("No job is running or waiting.")
    keep = ctx.services.config.jobs.keep_finished
    active_ids = {job.id for job in active}
    finished = [
        row for row in ctx.services.store.jobs(limit=keep + len(active)) if row.id not in active_ids
    ][:keep]
    if finished:
        lines += ["", "Finished:"]
        lines += [
            f"- #{row.id} {row.state}: `{row.text}` by {row.sender}, "
            f"{human_age(now - (row.finished_at or row.created_at))} ago"
            + (f" ({row.result})" if row.result and row.result != "ok" else "")
            for row in finished
        ]
    await ctx.reply("\n".join(lines))


@group.command(
    "cancel",
    help="Cancel a running or waiting job.",
    args=(Arg("id", "the job number shown by !jobs", type=positive_int),),
    role=Role.OPERATOR,
    quick=True,
    example="cancel 12",
)
async def cancel(ctx: CommandContext) -> None:
    job_id = ctx.args["id"]
    job = ctx.services.jobs.get(job_id)
    if job is None:
        raise UserError(f"No running or waiting job #{job_id}. `{ctx.prefix}jobs` lists them.")
    if job.ctx.spec.role > ctx.role:
        raise UserError(f"Job #{job_id} needs the {job.ctx.spec.role.label} role to cancel.")
    ctx.services.jobs.cancel(job_id, ctx.sender)
    ctx.services.store.audit(
        ctx.sender,
        "cancel",
        f"#{job_id} {job.text}",
        app=job.app,
        room_id=ctx.message.room_id,
        event_id=ctx.message.event_id,
    )
    await ctx.reply(f"Cancelling job #{job_id} (`{job.text}`).")
