"""Backups: !backup (and its subcommands) !backups !snapshots !restore !schedule."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

from bot.core.access import SCHEDULER
from bot.core.approvals import Plan
from bot.core.context import Arg, CommandContext, Option
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.errors import UserError
from bot.features.apps import AppEnv, check_domain
from bot.features.backups import Backups, snapshot_tag
from bot.fmt import code, human_age, human_bytes, utc_time

group = CommandGroup("backups")

_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{4,64}$")
SNAPSHOTS_SHOWN = 20
AGE_ALERT_KEY = "backups.stale-alerted"


def _snapshot_id(text: str) -> str:
    if not _SNAPSHOT_ID.match(text):
        raise ValueError("a snapshot id is 4 to 64 hex digits (see `!snapshots <app>`)")
    return text


def _backups(ctx: CommandContext) -> Backups:
    if ctx.services.backups is None:
        raise UserError(
            "Backups are not configured: add a `backups:` section (repository, "
            "password_file) to the bot's config."
        )
    return ctx.services.backups


async def _admins(ctx: CommandContext) -> list[str]:
    """Who a failed scheduled run pings: the room's admins."""
    members = await ctx.services.chat.members(ctx.message.room_id)
    access = ctx.services.access
    found = {
        user
        for user, m in members.items()
        if user != ctx.services.chat.user_id
        and (await access.role(ctx.message.room_id, user)) == Role.ADMIN
    }
    return sorted(found)


class _Prefixed:
    """A progress sink that prefixes each line with "[i/n] " for `!backup all`."""

    def __init__(self, ctx: CommandContext, prefix: str) -> None:
        self._ctx, self._prefix = ctx, prefix

    async def update(self, markdown: str) -> None:
        await self._ctx.progress.update(self._prefix + markdown)


backup_family = group.family(
    "backup",
    help="Back up an app now; `all` backs up every labelled app, `check` verifies the "
    "repository, `drill` restores the newest snapshots into a temporary folder and compares "
    "them, `prune` applies the retention policy, `accept <app>` resumes an app's retention "
    "after a suspect backup.",
    args=(
        Arg("target", "an app's domain, or all, check, drill, prune, accept", type=check_domain),
    ),
    role=Role.OPERATOR,
    lock_arg="target",
    timeout=6 * 3600,  # a first backup of a big volume takes long; progress shows it
    example="backup cloud.example.coop",
)


@backup_family.default
async def backup_app(ctx: CommandContext) -> None:
    backups = _backups(ctx)
    env = await ctx.services.apps.find(ctx.args["target"])
    outcome = await backups.backup(env, ctx.progress, ctx.sender)
    await ctx.progress.finish(outcome.report)


@backup_family.sub(
    "check",
    help="Verify the repository's structure and read back part of the data.",
    example="backup check",
)
async def backup_check(ctx: CommandContext) -> None:
    backups = _backups(ctx)
    await ctx.progress.update("🔎 `restic check` running…")
    try:
        await ctx.progress.finish(await backups.check())
    except UserError as e:
        await _fail_loudly(ctx, f"❌ `restic check` failed: {e}")


@backup_family.sub(
    "drill",
    help="Restore each app's newest snapshot into a temporary folder and compare it.",
    example="backup drill",
)
async def backup_drill(ctx: CommandContext) -> None:
    ok, report = await _backups(ctx).drill(ctx.progress, ctx.services.jobs.app_lock)
    if ok:
        await ctx.progress.finish(report)
    else:
        await _fail_loudly(ctx, report)


@backup_family.sub(
    "prune",
    help="Forget old snapshots by the retention policy, then prune.",
    example="backup prune",
)
async def backup_prune(ctx: CommandContext) -> None:
    backups = _backups(ctx)
    await ctx.progress.finish(await backups.retention(ctx.progress, ctx.services.jobs.app_lock))


@backup_family.sub(
    "accept",
    help="After a suspect backup (no files, a big size drop, a silent dump hook): take "
    "the app's newest backup as its normal size and resume its retention.",
    args=(Arg("app", "the app's domain", type=check_domain),),
    example="backup accept cloud.example.coop",
)
async def backup_accept(ctx: CommandContext) -> None:
    await ctx.progress.finish(_backups(ctx).accept(ctx.args["app"], ctx.sender))


@backup_family.sub(
    "all",
    help="Back up every deployed app with a backupbot label; after a complete scheduled "
    "run, apply the retention policy.",
    example="backup all",
)
async def backup_all(ctx: CommandContext) -> None:
    backups = _backups(ctx)
    envs, problems = await backups.labelled_apps()
    if not envs:
        await ctx.progress.finish(
            "No deployed app has a `backupbot.backup=true` label: nothing to back up."
            + "".join(f"\n- ⚠️ {p}" for p in problems)
        )
        return
    reports: dict[str, str] = {}
    failed: list[str] = []
    suspect: list[str] = []  # looks empty or shrunk: its retention waits for a person

    async def one(env: AppEnv, limit: asyncio.Semaphore) -> None:
        async with limit:
            sink = _Prefixed(ctx, f"[{envs.index(env) + 1}/{len(envs)}] ")
            try:
                # Each app's own lock in turn: never beside its restore, deploy or upgrade.
                async with ctx.services.jobs.app_lock(env.domain):
                    outcome = await backups.backup(env, sink, ctx.sender)
                reports[env.domain] = outcome.report
                if outcome.suspect:
                    suspect.append(env.domain)
            except UserError as e:  # this app (its node gone, ...): the others go on
                failed.append(env.domain)
                reports[env.domain] = f"❌ **{env.domain}**: {e}"

    # Apps whose data is on different nodes side by side (one group on a single node),
    # and up to backups.parallel apps of one node at once (still one snapshot each).
    async with asyncio.TaskGroup() as tasks:
        for group in await backups.by_node(envs):
            limit = asyncio.Semaphore(backups.config.parallel)
            for env in group:
                tasks.create_task(one(env, limit))
    lines = [reports[env.domain] for env in envs]
    lines += [f"⚠️ {p}" for p in problems]
    retention_failed = False
    if ctx.sender == SCHEDULER:
        # Retention after a complete nightly run: forget, then prune on its own. Not
        # after a partial one: an app's older snapshots may be all it has.
        if failed:
            lines.append("🧹 Retention skipped: not every app was backed up.")
        else:
            try:
                lines.append(await backups.retention(ctx.progress, ctx.services.jobs.app_lock))
            except UserError as e:
                retention_failed = True
                lines.append(f"❌ retention: {e}")
    head = f"💾 Backups: {len(envs) - len(failed)} of {len(envs)} app(s) backed up"
    head += f"; **{len(failed)} failed**." if failed else "."
    report = head + "\n\n" + "\n".join(lines)
    if suspect:
        report += "\n\n⏸ Suspect, retention paused until accepted: " + ", ".join(sorted(suspect))
    if failed or retention_failed or suspect:
        await _fail_loudly(ctx, report)
    else:
        await ctx.progress.finish(report)


async def _fail_loudly(ctx: CommandContext, report: str) -> None:
    """The report, and when nobody asked for it (the schedule), a ping to the admins."""
    await ctx.progress.finish(report)
    if ctx.sender == SCHEDULER:
        admins = await _admins(ctx)
        if admins:
            await ctx.reply(
                "🚨 " + " ".join(admins) + ": scheduled backup work failed, see above.",
                mentions=admins,
            )


@group.command(
    "backups",
    help="Each app's newest good snapshot, its age and size; ⚠ where it is too old or the "
    "last run failed.",
    role=Role.VIEWER,
    quick=True,
    timeout=300,  # a remote repository can take a while to list
    example="backups",
)
async def backups_command(ctx: CommandContext) -> None:
    backups = _backups(ctx)
    states, problems = await backups.states()
    max_age = backups.config.max_age
    stale = sorted(
        s.app for s in states if s.stale(max_age) or s.last_failed or s.incomplete or s.paused
    )
    if ctx.sender == SCHEDULER:
        # The hourly age check: speak only when the set of apps in trouble changed.
        before = ctx.services.store.get_json(AGE_ALERT_KEY) or []
        ctx.services.store.put_json(AGE_ALERT_KEY, stale)
        if not stale or stale == before:
            return
    lines = [
        "| app | newest snapshot | age | size | repository | |",
        "|---|---|---|---|---|---|",
    ]
    for s in states:
        if s.newest is None:
            never = "⚠️ no complete snapshot" if s.incomplete else "⚠️ never backed up"
            lines.append(f"| {s.app} | none | | | {s.repository} | {never} |")
            continue
        flags = []
        if s.stale(max_age):
            flags.append(f"⚠️ older than {human_age(max_age)}")
        if s.last_failed:
            flags.append("⚠️ last run failed: " + s.last_failed.splitlines()[0][:120])
        if s.incomplete:
            flags.append("⚠️ last snapshot incomplete: " + s.incomplete[:120])
        if s.paused:
            flags.append("⏸ retention paused, " + s.paused[:300])
        size = human_bytes(s.size) if s.size is not None else "?"
        when = utc_time(s.newest.time)
        age = human_age(s.age or 0)
        # On a swarm of several nodes: the node its data was read from (remote.py).
        node = next((t[5:] for t in s.newest.tags if t.startswith("node=")), None)
        when += f" from node {code(node)}" if node else ""
        lines.append(
            f"| {s.app} | `{s.newest.short_id}` {when} | {age} | {size} | {s.repository} | "
            f"{'; '.join(flags) or '✅'} |"
        )
    if not states:
        lines = ["No app is labelled for backups and the repository has no snapshots."]
    lines += [f"\n⚠️ {p}" for p in problems]
    text = "\n".join(lines)
    if ctx.sender == SCHEDULER:
        admins = await _admins(ctx)
        text = f"🚨 {' '.join(admins)} backups need attention: {', '.join(stale)}.\n\n" + text
        await ctx.reply(text, mentions=admins)
    else:
        await ctx.reply(text)


@group.command(
    "snapshots",
    help="List an app's snapshots, newest first.",
    timeout=300,
    args=(Arg("app", "the app's domain", type=check_domain),),
    role=Role.VIEWER,
    quick=True,
    example="snapshots cloud.example.coop",
)
async def snapshots(ctx: CommandContext) -> None:
    backups = _backups(ctx)
    env = await ctx.services.apps.find(ctx.args["app"])
    found = await backups.snapshots(env)
    if not found:
        await ctx.reply(
            f"{env.domain} has no snapshots yet; `{ctx.prefix}backup {env.domain}` makes one."
        )
        return
    lines = [f"Snapshots of {env.domain} ({len(found)}):", "| id | time | version | paths |"]
    lines.append("|---|---|---|---|")
    for snap in reversed(found[-SNAPSHOTS_SHOWN:]):
        version = snapshot_tag(snap, "version=") or ""
        lines.append(
            f"| `{snap.short_id}` | {utc_time(snap.time)} | {version} | {len(snap.paths)} |"
        )
    if len(found) > SNAPSHOTS_SHOWN:
        lines.append(f"… and {len(found) - SNAPSHOTS_SHOWN} older ones.")
    await ctx.reply("\n".join(lines))


async def _restore_env(ctx: CommandContext) -> tuple[Backups, AppEnv]:
    return _backups(ctx), await ctx.services.apps.find(ctx.args["app"])


async def _restore_plan(ctx: CommandContext) -> Plan:
    backups, env = await _restore_env(ctx)
    # A --path that is not in the snapshot is refused now, before anyone votes.
    snap, scope, text = await backups.restore_plan(
        env, ctx.args["snapshot"], ctx.args["path"], ctx.prefix, look_inside=True
    )
    deployed = await ctx.services.apps.deployed(env)
    if not deployed.exists:
        raise UserError(f"{env.domain} is not deployed; deploy it, then restore.")
    paths = [str(p) for p in scope]
    # The full id, not "the newest": a backup taken while this waits is not restored.
    return Plan(
        text,
        fingerprint=f"{snap.id}|{deployed.version}|{'|'.join(paths)}",
        pins={"snapshot": snap.id, "paths": paths},
    )


@group.command(
    "restore",
    help="Restore an app's volumes from a snapshot (default: the newest good one, not a "
    "suspect or incomplete one); the app is "
    "stopped meanwhile. Needs a vote.",
    args=(
        Arg("app", "the app's domain", type=check_domain),
        Arg("snapshot", "a snapshot id from !snapshots", required=False, type=_snapshot_id),
    ),
    options=(Option("path", "only this volume or folder: <volume>[/<sub-path>]", metavar="PATH"),),
    timeout=6 * 3600,
    role=Role.OPERATOR,
    vote_policy="restore",
    lock_arg="app",
    plan=_restore_plan,
    example="restore cloud.example.coop 1a2b3c4d --path data/uploads",
)
async def restore(ctx: CommandContext) -> None:
    backups, env = await _restore_env(ctx)
    report = await backups.restore(
        env,
        ctx.args["snapshot"],
        ctx.args["path"],
        ctx.progress,
        ctx.sender,
        ctx.prefix,
        paths=ctx.args.get("paths"),  # the voted scope (pinned by the plan)
        still_as_planned=ctx.recheck,  # after the scale-down, before any data is touched
        tell=ctx.reply,  # where everything is, if the job is cancelled or times out
    )
    await ctx.progress.finish(report)


@group.command("schedule", help="When scheduled work runs next.", quick=True, example="schedule")
async def schedule(ctx: CommandContext) -> None:
    scheduler = ctx.services.schedule
    if not scheduler.tasks:
        await ctx.reply("Nothing is scheduled.")
        return
    zone = scheduler.zone

    def when(moment: dt.datetime | None) -> str:
        return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M") if moment else "—"

    lines = [f"Times in {zone}.", "| task | cron | runs | next | last |", "|---|---|---|---|---|"]
    for task, last, upcoming in scheduler.rows():
        lines.append(
            f"| {task.what} | `{task.cron}` | `{ctx.prefix}{task.command}` | "
            f"{when(upcoming)} | {when(last)} |"
        )
    await ctx.reply("\n".join(lines))
