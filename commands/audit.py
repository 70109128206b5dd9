"""!audit: who did what, when."""

from __future__ import annotations

from bot.core.context import Arg, CommandContext, positive_int
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.fmt import utc_time

group = CommandGroup("audit")


def _app_or_count(text: str) -> str | int:
    return int(text) if text.isdigit() else text


@group.command(
    "audit",
    help="Show the audit log: every command, decision and result, newest first.",
    args=(
        Arg(
            "app",
            "only entries about this app (or a number of entries)",
            required=False,
            type=_app_or_count,
        ),
        Arg("n", "how many entries (default 20, at most 200)", required=False, type=positive_int),
    ),
    role=Role.OPERATOR,
    quick=True,
    example="audit cloud.example.coop 50",
)
async def audit(ctx: CommandContext) -> None:
    app, count = ctx.args["app"], ctx.args["n"]
    if isinstance(app, int):  # `!audit 50`: a count, not an app
        app, count = None, app
    rows = ctx.services.store.audit_log(app, min(count or 20, 200))
    if not rows:
        await ctx.reply("The audit log is empty" + (f" for {app}." if app else "."))
        return
    lines = [f"Audit log{f' for {app}' if app else ''}, newest first:", ""]
    for row in rows:
        when = utc_time(row.at, seconds=True)
        where = f" [{row.app}]" if row.app else ""
        lines.append(f"- {when} {row.actor} **{row.action}**{where} {row.detail}".rstrip())
    await ctx.reply("\n".join(lines))
