"""!incidents: what the swarm watch (and Alertmanager) found that is still open."""

from __future__ import annotations

import time

from bot.core.context import CommandContext
from bot.core.registry import CommandGroup
from bot.fmt import human_age

group = CommandGroup("incidents")


@group.command(
    "incidents",
    help="The open incidents: a failing or stuck service, a node down or drained, a "
    "full disk, a firing alert; since when, and whether it waits for the digest.",
    quick=True,
    example="incidents",
)
async def incidents(ctx: CommandContext) -> None:
    now = time.time()
    rows = ctx.services.store.open_incidents()
    if ctx.services.config.watch is None and not rows:
        await ctx.reply("The swarm watch is off (no `watch:` section in the config).")
        return
    if not rows:
        await ctx.reply("✅ No open incident.")
        return
    lines = [f"{len(rows)} open incident(s):"]
    for row in rows:
        icon = "🚨" if row.urgent else "⚠️"
        held = " (held for the quiet-hours digest)" if row.held == 1 else ""
        lines.append(
            f"- {icon} #{row.id} **{row.server}** {row.kind}: {row.summary}, "
            f"for {human_age(now - row.opened_at)}{held}"
        )
    await ctx.reply("\n".join(lines))
