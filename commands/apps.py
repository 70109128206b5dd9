"""Apps on the swarm: !apps !status !logs !deploy !rollback !undeploy !secrets."""

from __future__ import annotations

import asyncio

from bot.core.approvals import Plan
from bot.core.context import Arg, CommandContext, Option, positive_int
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.core.singleflight import shared
from bot.errors import UserError
from bot.features.apps import AppEnv, ServiceInfo, check_domain, check_version, deployed_from
from bot.features.nodes import Nodes
from bot.features.upgrades import UpgradePlan, is_major_step
from bot.fmt import code_block, utc_time
from bot.labels import MOVING_STATES, STUCK_STATES
from bot.redact import log_file, prepare_log

group = CommandGroup("apps")

APP = Arg("app", "the app's domain, e.g. cloud.example.coop", type=check_domain)
VERSION = Arg("version", "a release tag of the recipe", required=False, type=check_version)
MAX_TAIL = 2000


@group.command(
    "apps",
    help="List every app of every server, its version and state.",
    quick=True,
    example="apps",
)
async def apps_command(ctx: CommandContext) -> None:
    # Several askers at once share one listing of every server and recipe.
    await ctx.reply(await shared(ctx, "apps listing", lambda: _apps_table(ctx)))


async def _apps_table(ctx: CommandContext) -> str:
    apps = ctx.services.apps
    envs, problems = await apps.inventory()
    if not envs and not problems:
        return (
            "No apps: add `servers:` to the config and `.env` files under "
            f"{apps.abra_dir}/servers/."
        )
    by_server: dict[str, list[AppEnv]] = {}
    for env in envs:
        by_server.setdefault(env.server, []).append(env)
    lines = ["| app | server | recipe | deployed | state | newest |", "|---|---|---|---|---|---|"]
    # One services+tasks listing per server and the recipes' tags, all at once.
    stacks_of, newest = await asyncio.gather(
        asyncio.gather(
            *(apps.swarm(server).stacks() for server in by_server), return_exceptions=True
        ),
        asyncio.gather(*(apps.newest(env) for env in envs), return_exceptions=True),
    )
    newest_of = {env.domain: n for env, n in zip(envs, newest, strict=True)}
    for server, stacks in zip(by_server, stacks_of, strict=True):
        for env in by_server[server]:
            latest = newest_of[env.domain]
            newest_text = (
                "?"
                if isinstance(latest, BaseException)
                # A recipe without release tags deploys its current commit only.
                else latest.text
                if latest
                else "untagged: `--chaos` only"
            )
            if isinstance(stacks, BaseException):
                lines.append(
                    f"| {env.domain} | {server} | {env.recipe} | ? | ⚠ server "
                    f"unreachable | {newest_text} |"
                )
                continue
            deployed = deployed_from(env.stack_name, stacks.get(env.stack_name, []))
            lines.append(
                f"| {env.domain} | {server} | {env.recipe} | "
                f"{deployed.version or 'not deployed'}{' (chaos)' if deployed.chaos else ''} | "
                f"{_state(deployed.services)} | {newest_text} |"
            )
    unreachable = [
        f"⚠ {server}: {stacks}"
        for server, stacks in zip(by_server, stacks_of, strict=True)
        if isinstance(stacks, BaseException)
    ]
    return "\n".join(lines + [""] + unreachable + [f"⚠ {p}" for p in problems]).strip()


def _state(services: list[ServiceInfo]) -> str:
    if not services:
        return "—"
    parts = []
    for service in services:
        if (service.update_state or "") in MOVING_STATES:
            return "updating"
        if (service.update_state or "") in STUCK_STATES:
            return "failed (update paused)"
        desired = service.replicas_desired
        parts.append((service.replicas_running, desired if desired is not None else 1))
    running, desired = sum(p[0] for p in parts), sum(p[1] for p in parts)
    mark = "✅" if running >= desired else "⚠"
    return f"{mark} {running}/{desired} running"


@group.command(
    "status",
    help="Services, replicas, images, errors and the last deploy of one app.",
    args=(APP,),
    quick=True,
    example="status cloud.example.coop",
)
async def status(ctx: CommandContext) -> None:
    apps = ctx.services.apps
    env = await apps.find(ctx.args["app"])
    deployed = await apps.deployed(env)
    lines = [f"**{env.domain}** ({env.recipe} on {env.server}, stack `{env.stack_name}`)", ""]
    if not deployed.exists:
        lines.append("Not deployed.")
    else:
        lines.append(
            f"Version: {deployed.version or 'unknown'}"
            + (" — **chaos** (an untagged commit)" if deployed.chaos else "")
        )
        for service in deployed.services:
            desired = service.replicas_desired if service.replicas_desired is not None else "global"
            update = f", update {service.update_state}" if service.update_state else ""
            lines.append(
                f"- {service.short_name}: {service.replicas_running}/{desired}"
                f"{update}, `{service.image}`"
            )
            for error in service.recent_errors[:3]:
                lines.append(f"  - ⚠ {error}")
        # Where each task runs, and services that would lose their volume by moving.
        lines += await Nodes(apps, list(ctx.services.config.servers)).status_lines(env)
    history = ctx.services.store.deploys(env.domain, limit=1)
    if history:
        last = history[0]
        lines.append(
            f"Last deploy: {last['version']} by {last['actor']} at {utc_time(last['at'])}"
            f" ({last['result']})"
        )
    await ctx.reply("\n".join(lines))


@group.command(
    "logs",
    help="Recent logs of an app (or one service); secrets in KEY=value lines are masked.",
    args=(APP, Arg("service", "one service, e.g. app", required=False)),
    options=(
        Option(
            "tail", "lines per service (default 100)", type=positive_int, default=100, metavar="N"
        ),
    ),
    role=Role.OPERATOR,
    quick=True,
    example="logs cloud.example.coop app --tail 50",
)
async def logs(ctx: CommandContext) -> None:
    apps = ctx.services.apps
    env = await apps.find(ctx.args["app"])
    tail = min(ctx.args["tail"], MAX_TAIL)
    raw = await apps.swarm(env.server).logs(env.stack_name, ctx.args["service"], tail)
    # Masking and cutting read every character of up to MAX_TAIL lines per service: in
    # a thread, so the bot keeps hearing the room meanwhile.
    text, shown, note = await asyncio.to_thread(prepare_log, raw)
    del raw
    if not text.strip():
        await ctx.reply(f"No logs for {env.domain}.")
        return
    if note is None:
        await ctx.reply(code_block(shown))  # container output: inert
        return
    await ctx.reply(f"{code_block(shown)}\n{note}")  # container output: inert
    data = await asyncio.to_thread(log_file, text)
    await ctx.services.chat.send_file(
        ctx.message.room_id,
        f"{env.stack_name}.log",
        data,
        reply_to=ctx.message.event_id,
        thread_root=ctx.message.thread_root,
    )


async def _deploy_target(ctx: CommandContext, env: AppEnv) -> str | None:
    """The exact version a deploy runs: the one asked for (or pinned by the vote), the
    .env's pinned one, else the newest release."""
    if ctx.args["version"] or env.pinned_version:
        return str(ctx.args["version"] or env.pinned_version)
    newest = await ctx.services.apps.newest(env)
    return newest.text if newest else None


async def _major_step(
    ctx: CommandContext, env: AppEnv, current: str | None, target: str
) -> UpgradePlan | None:
    """The upgrade plan when this move grows the recipe-semver major part (it then
    needs the major_upgrade quorum and a backup first, like `!upgrade`), else None."""
    if not is_major_step(current, target) or ctx.services.upgrades is None:
        return None
    return await ctx.services.upgrades.prepare(env, target, ctx.prefix)


def _major_note(plan: UpgradePlan | None) -> str:
    if plan is None:
        return ""
    return (
        f"\n⚠ A **major** step ({plan.current.text} → {plan.target.text}): it needs the "
        f"major_upgrade quorum and runs as an upgrade. {plan.backup}"
    )


DRY_RUN = Option("dry-run", "show the plan only: nothing is proposed or changed", flag=True)


def _dry_run(ctx: CommandContext) -> Plan | None:
    """A dry run needs no vote: it runs at once, as a job, and only shows the plan."""
    if not ctx.args.get("dry-run"):
        return None
    return Plan(f"Dry run of `{ctx.spec.name}`", fingerprint="dry-run", needs_vote=False)


async def _deploy_plan(ctx: CommandContext) -> Plan:
    dry = _dry_run(ctx)
    if dry is not None:
        return dry
    apps = ctx.services.apps
    env = await apps.find(ctx.args["app"])
    deployed = await apps.deployed(env)
    state = f"{deployed.version}|{deployed.chaos}"
    if ctx.args["chaos"]:
        # The commit is what is voted for: a commit landing during the vote is stale.
        commit = await apps.head(env)
        summary = (
            f"Deploy **{env.domain}**: {deployed.version or 'not deployed'} → the recipe's "
            f"commit **{commit[:8]}** (chaos) on {env.server}."
        )
        if deployed.exists:  # a proposal: it shows the plan the deploy will show
            summary += "\n\n" + await apps.plan(env, chaos=True)
        return Plan(
            summary,
            fingerprint=f"{state}|chaos@{commit}",
            needs_vote=deployed.exists,
            pins={"commit": commit},
        )
    target = await _deploy_target(ctx, env)
    major = await _major_step(ctx, env, deployed.version, target) if target else None
    summary = (
        f"Deploy **{env.domain}**: {deployed.version or 'not deployed'} → **{target or '?'}** "
        f"on {env.server}.{_major_note(major)}"
    )
    needs_vote = deployed.exists and deployed.version != target
    if needs_vote and target:  # a proposal: it shows the plan the deploy will show
        summary += "\n\n" + await apps.plan(env, target)
    return Plan(
        summary,
        fingerprint=f"{state}|{target}",
        policy="major_upgrade" if major else None,
        needs_vote=needs_vote,
        pins={"version": target} if target else {},
    )


@group.command(
    "deploy",
    help="Deploy an app: a release tag (default: the .env's pinned version, else the newest). "
    "A first deploy or a redeploy runs at once; a version change needs a vote, and a major "
    "step the major_upgrade quorum and a backup first.",
    args=(APP, VERSION),
    options=(
        Option("chaos", "deploy the recipe's current commit, labelled chaos", flag=True),
        DRY_RUN,
    ),
    role=Role.OPERATOR,
    vote_policy="deploy_version_change",
    lock_arg="app",
    plan=_deploy_plan,
    example="deploy cloud.example.coop 2.1.0+1.0",
)
async def deploy(ctx: CommandContext) -> None:
    apps = ctx.services.apps
    env = await apps.find(ctx.args["app"])
    if ctx.args.get("dry-run"):
        version = None if ctx.args["chaos"] else await _deploy_target(ctx, env)
        text = await apps.plan(env, version, chaos=bool(ctx.args["chaos"]))
        await ctx.progress.finish(f"**Dry run**: nothing was proposed or changed.\n\n{text}")
        return
    if ctx.args["chaos"]:
        report = await apps.deploy(
            env,
            ctx.progress,
            ctx.sender,
            chaos=True,
            commit=ctx.args.get("commit"),  # the planned (voted) commit, or refused
            job_id=ctx.job.id if ctx.job else None,
        )
        await ctx.progress.finish(report)
        return
    # The plan pinned the exact version (ctx.args["version"]): what was voted runs.
    target = await _deploy_target(ctx, env)
    await _deploy_version(ctx, env, target, "deploy")


async def _deploy_version(
    ctx: CommandContext, env: AppEnv, target: str | None, action: str
) -> None:
    """Deploy `target`; a major step goes through the upgrade (backup first)."""
    deployed = await ctx.services.apps.deployed(env)
    major = await _major_step(ctx, env, deployed.version, target) if target else None
    job_id = ctx.job.id if ctx.job else None
    if major is not None:
        upgrades = ctx.services.upgrades
        report = await upgrades.upgrade(
            major,
            ctx.progress,
            ctx.sender,
            job_id,
            ctx.prefix,
            action=action,
            still_as_planned=ctx.recheck,  # after the backup first, before the deploy
        )
    else:
        report = await ctx.services.apps.deploy(
            env, ctx.progress, ctx.sender, target, job_id=job_id, action=action
        )
    await ctx.progress.finish(report)


async def _rollback_target(ctx: CommandContext) -> tuple[AppEnv, str | None, str]:
    apps = ctx.services.apps
    env = await apps.find(ctx.args["app"])
    deployed = await apps.deployed(env)
    target = ctx.args["version"] or apps.previous_version(env, deployed.version)
    if target is None:
        raise UserError(
            f"No earlier successful deploy of {env.domain} in the history; "
            f"name a version: `{ctx.prefix}rollback {env.domain} <version>`."
        )
    return env, deployed.version, target


async def _rollback_plan(ctx: CommandContext) -> Plan:
    env, current, target = await _rollback_target(ctx)
    major = await _major_step(ctx, env, current, target)
    return Plan(
        f"Roll **{env.domain}** back: {current or 'not deployed'} → **{target}**."
        + _major_note(major),
        # The version it rolls back from: if another deploy ran meanwhile, it is stale.
        fingerprint=f"{current}→{target}",
        policy="major_upgrade" if major else None,
        pins={"version": target},  # the exact target, not "the previous one" at run time
    )


@group.command(
    "rollback",
    help="Return an app to its previous version (from history) or to a given one.",
    args=(APP, VERSION),
    role=Role.OPERATOR,
    vote_policy="rollback",
    lock_arg="app",
    plan=_rollback_plan,
    example="rollback cloud.example.coop",
)
async def rollback(ctx: CommandContext) -> None:
    env, _, target = await _rollback_target(ctx)
    await _deploy_version(ctx, env, target, "rollback")


async def _undeploy_plan(ctx: CommandContext) -> Plan:
    apps = ctx.services.apps
    env = await apps.find(ctx.args["app"])
    if apps.self_app is not None:  # refused before any vote (and again when it runs)
        apps.self_app.refuse_undeploy(env.domain)
    deployed = await apps.deployed(env)
    if not deployed.exists:
        raise UserError(f"{env.domain} is not deployed.")
    volumes = await apps.swarm(env.server).volumes(env.stack_name)
    kept = ", ".join(f"`{v}`" for v in volumes) or "none"
    return Plan(
        f"Remove the stack of **{env.domain}** ({deployed.version}) from {env.server}. "
        f"Volumes are kept: {kept}.",
        fingerprint=str(deployed.version),
    )


@group.command(
    "undeploy",
    help="Remove an app's stack; its volumes are kept.",
    args=(APP,),
    role=Role.OPERATOR,
    vote_policy="undeploy",
    lock_arg="app",
    plan=_undeploy_plan,
    example="undeploy cloud.example.coop",
)
async def undeploy(ctx: CommandContext) -> None:
    apps = ctx.services.apps
    env = await apps.find(ctx.args["app"])
    await ctx.progress.finish(await apps.undeploy(env, ctx.progress, ctx.sender))


@group.command(
    "secrets",
    help="List the secrets an app needs and which exist (never their values); "
    "`generate` creates the missing ones from the .env hints.",
    args=(APP, Arg("action", "generate the missing ones", required=False, choices=("generate",))),
    role=Role.OPERATOR,
    lock_arg="app",
    example="secrets cloud.example.coop generate",
)
async def secrets_command(ctx: CommandContext) -> None:
    apps = ctx.services.apps
    env = await apps.find(ctx.args["app"])
    if ctx.args["action"] == "generate":
        created = await apps.generate_secrets(env, ctx.sender)
        await ctx.reply(
            f"Created {len(created)} secret(s): "
            + (", ".join(f"`{n}`" for n in created) or "none were missing")
            + ". Values are stored in the swarm only."
        )
        return
    states = await apps.secrets(env)  # what its rendered compose references
    if not states:
        await ctx.reply(f"{env.domain} uses no secrets.")
        return
    lines = [f"Secrets of {env.domain}:"]
    lines += [
        f"- `{s.name}`: "
        + ("✅ exists" if s.exists else f"⚠ {s.problem}" if s.problem else "❌ missing")
        for s in states
    ]
    if any(not s.exists for s in states):
        lines.append(f"`{ctx.prefix}secrets {env.domain} generate` creates the missing ones.")
    await ctx.reply("\n".join(lines))
