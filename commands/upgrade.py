"""Upgrades: !upgrades (what is new) and !upgrade (a voted upgrade)."""

from __future__ import annotations

from bot.core.access import SCHEDULER
from bot.core.approvals import AUTO_PATCH, Plan
from bot.core.autopatch import hold
from bot.core.context import Arg, CommandContext, Option
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.core.singleflight import shared
from bot.errors import UserError
from bot.features.apps import check_domain, check_version
from bot.features.upgrades import UpgradePlan, Upgrades, auto_refusal, plan_summary, render_report

group = CommandGroup("upgrade")

APP = Arg("app", "the app's domain, e.g. cloud.example.coop", type=check_domain)
VERSION = Arg(
    "version", "a release tag of the recipe (default: the newest)", required=False,
    type=check_version,
)  # fmt: skip
CHECK_TIMEOUT = 900.0  # a check fetches every recipe (each git fetch has its own limit)


def _upgrades(ctx: CommandContext) -> Upgrades:
    if ctx.services.upgrades is None:  # only when a test builds Services by hand
        raise UserError("Upgrades are not available in this bot.")
    return ctx.services.upgrades


@group.command(
    "upgrades",
    help="What can be upgraded: deployed → newest release, patch/minor/major, release "
    "notes, image drift, and what could not be checked.",
    timeout=CHECK_TIMEOUT,
    example="upgrades",
)
async def upgrades_command(ctx: CommandContext) -> None:
    upgrades = _upgrades(ctx)
    # Several askers while a check runs share it: one set of git fetches and registry
    # lookups (Docker Hub counts pulls), not one per message.
    report = await shared(ctx, "upgrade check", upgrades.check)
    if ctx.sender != SCHEDULER:
        await ctx.reply(render_report(report, ctx.prefix))
        return
    # The scheduled check speaks only when something is new: no daily repeats.
    fresh = upgrades.remember(report)
    if fresh:
        await ctx.reply(render_report(report, ctx.prefix, new=fresh))
    if ctx.services.config.upgrades.auto_patch:
        for domain, version in upgrades.auto_patches(report):
            await ctx.control.run_scheduled(f"upgrade {domain} {version}")


async def _prepare(ctx: CommandContext, *, changes: bool = False) -> UpgradePlan:
    env = await ctx.services.apps.find(ctx.args["app"])
    return await _upgrades(ctx).prepare(env, ctx.args["version"], ctx.prefix, changes=changes)


async def _upgrade_plan(ctx: CommandContext) -> Plan:
    if ctx.args.get("dry-run"):  # runs at once, as a job, and only shows the plan
        return Plan("Dry run of `upgrade`", fingerprint="dry-run", needs_vote=False)
    plan = await _prepare(ctx, changes=ctx.sender != SCHEDULER)  # a proposal shows it
    needs_vote, policy, run_at = True, "major_upgrade" if plan.kind == "major" else None, None
    summary = plan_summary(plan)
    if ctx.args.get("now"):
        summary += "\n\n" + _break_glass(
            ctx, "major_upgrade" if plan.kind == "major" else "upgrade"
        )
    if ctx.sender == SCHEDULER:
        # The scheduler asks for no vote: it upgrades at once, holds the upgrade to the
        # window (posted approved; a 👎 cancels it), or does not upgrade at all.
        why = auto_refusal(plan, ctx.services.config.upgrades.auto_patch)
        if why is not None:
            raise UserError(
                f"Not upgraded automatically: {why}. "
                f"`{ctx.prefix}upgrade {plan.env.domain} {plan.target.text}` asks for a vote."
            )
        needs_vote = False
        if ctx.proposal_id is not None:  # a held auto-patch starting: its window is open
            policy = AUTO_PATCH
        elif held := await hold(
            ctx.services.windows, ctx.services.store, plan.env.domain, plan.target.text, ctx.prefix
        ):  # outside the window: posted approved, held to its start; a 👎 cancels it
            needs_vote, policy, run_at = True, AUTO_PATCH, held.run_at
            summary += "\n\n" + held.note
    return Plan(
        summary,
        fingerprint=plan.fingerprint,
        policy=policy,
        needs_vote=needs_vote,
        run_at=run_at,
        # The exact target: a newer tag that arrives during the vote changes nothing.
        pins={"version": plan.target.text},
    )


def _break_glass(ctx: CommandContext, policy_name: str) -> str:
    """`--now` skips the server's maintenance window: the break-glass rule of the
    policy (it must allow it; an admin asks, with a reason). The plan says so."""
    if not ctx.services.config.approvals.policy(policy_name).break_glass:
        raise UserError(
            f"`--now` needs break-glass, which the {policy_name} policy does not allow "
            f"(approvals.policies.{policy_name}.break_glass). Nothing was done."
        )
    if ctx.role < Role.ADMIN or not ctx.reason:
        raise UserError(
            "`--now` (break-glass) is for an admin who says why: "
            f"`{ctx.prefix}upgrade {ctx.args['app']} --now -- the hole is exploited`. "
            "Nothing was done."
        )
    return (
        f"⚡ **--now** (break-glass, by {ctx.sender}): once approved it runs at once, "
        "outside the server's maintenance window if need be."
    )


@group.command(
    "upgrade",
    help="Upgrade an app to a newer release (default: the newest), after a vote: backup "
    "first, deploy, roll back if it fails. A major step needs the major_upgrade quorum.",
    args=(APP, VERSION),
    options=(
        Option("dry-run", "show the plan only: nothing is proposed or changed", flag=True),
        Option("now", "once approved, run outside the maintenance window (break-glass)", flag=True),
    ),
    role=Role.OPERATOR,
    vote_policy="upgrade",
    lock_arg="app",
    plan=_upgrade_plan,
    example="upgrade cloud.example.coop 2.1.0+1.0",
)
async def upgrade(ctx: CommandContext) -> None:
    # The job checked the plan still holds after its lock wait (CommandContext.recheck),
    # and runs with the voted version pinned: this is the move members voted for.
    if ctx.args.get("dry-run"):
        shown = plan_summary(await _prepare(ctx, changes=True))
        await ctx.progress.finish(f"**Dry run**: nothing was proposed or changed.\n\n{shown}")
        return
    plan = await _prepare(ctx)
    report = await _upgrades(ctx).upgrade(
        plan,
        ctx.progress,
        ctx.sender,
        ctx.job.id if ctx.job else None,
        ctx.prefix,
        still_as_planned=ctx.recheck,  # after the backup first, before the deploy
    )
    await ctx.progress.finish(report)
