"""A backup run, and the repository's upkeep: retention, check, drill.

A run waits until the stack is not mid-update, runs the recipe's pre-hooks, restic
over the paths the labels name (`targets.py`), and the post-hooks whatever
happened. Every run is recorded in the store, which `!backups` and the age alerts
read.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot.core.records import OPEN_JOB_STATES
from bot.errors import UserError
from bot.faults import fault_point
from bot.features.backups import health
from bot.features.backups.hooks import run_hook
from bot.features.backups.remote import Remote
from bot.features.backups.repository import PARTIAL, snapshot_app
from bot.features.backups.resume import lock_note, mark_started
from bot.features.backups.space import check_room
from bot.features.backups.targets import APP_TAG, COOPBOT_TAG, BackupTarget, tree_totals
from bot.fmt import human_age, human_bytes
from bot.labels import MOVING_STATES, STUCK_STATES
from bot.ops.abra import AppEnv
from bot.ops.restic import Progress as ResticProgress
from bot.ops.restic import ResticError, Snapshot
from bot.ops.swarm import ServiceInfo
from bot.ports import StatusSink

AppLock = Callable[[str], AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def no_lock(app: str) -> AsyncIterator[None]:
    """For callers that already exclude other work (tests, a single-app tool)."""
    yield


def progress_line(p: ResticProgress) -> str:
    """One line from a restic status: percent, bytes, files, ETA."""
    eta = f", about {human_age(p.seconds_remaining)} left" if p.seconds_remaining else ""
    total = f" of {human_bytes(p.total_bytes)}" if p.total_bytes else ""
    return (
        f"{p.percent:.0f}% · {human_bytes(p.bytes_done)}{total} · "
        f"{p.files_done} of {p.total_files or '?'} files{eta}"
    )


@dataclass
class BackupOutcome:
    app: str
    snapshot_id: str
    report: str  # Markdown, for the room
    warnings: list[str] = field(default_factory=list)
    suspect: bool = False  # empty or shrunk (health.py): a person must look


class Runs(Remote):
    """The part of `Backups` that makes snapshots and keeps the repository healthy."""

    async def wait_settled(
        self,
        env: AppEnv,
        sink: StatusSink | None = None,
        services: list[ServiceInfo] | None = None,
    ) -> bool:
        """Return once no service of the stack is mid-update (True if that took a
        wait); raise if it stays so longer than settle_timeout, or is stuck (paused).
        `services`: a listing just made, used for the first look."""
        swarm = self.apps.swarm(env.server)
        deadline = time.monotonic() + self.config.settle_timeout
        told = waited = False
        while True:
            if services is None:
                services = await swarm.services(env.stack_name)
            # Stuck states will not end by themselves: fail at once, with the reason.
            stuck = [s for s in services if (s.update_state or "") in STUCK_STATES]
            if stuck:
                raise UserError(
                    f"{env.domain} is not backed up: the update of "
                    + ", ".join(f"{s.short_name} is {s.update_state}" for s in stuck)
                    + ". Finish or roll back that deploy first."
                )
            # Moving states change the stack under our feet: wait for them to end.
            moving = [s for s in services if (s.update_state or "") in MOVING_STATES]
            if not moving:
                return waited
            what = ", ".join(f"{s.short_name} ({s.update_state})" for s in moving)
            if time.monotonic() >= deadline:
                raise UserError(
                    f"{env.domain} is not backed up: it is mid-update ({what}) and did not "
                    f"settle within {human_age(self.config.settle_timeout)}; a backup taken "
                    "now could mix old and new data."
                )
            if not told and sink is not None:
                await sink.update(f"⏳ {env.domain} is mid-update ({what}): waiting for it")
                told = True
            await asyncio.sleep(2)
            services, waited = None, True

    async def backup(self, env: AppEnv, progress: StatusSink, actor: str) -> BackupOutcome:
        """Back one app up now: settle, pre-hook, restic, post-hook. Every run is
        recorded; failures raise UserError with the reason."""
        started = time.time()
        mark_started(self.store, env.domain, started)  # read after a crash (resume.py)
        try:
            await self._ready()
            target = await self.target(env)
            if await self.wait_settled(env, progress, target.services):
                target = await self.target(env)  # the update may have changed it
            return await self._backup(target, progress, actor)
        except UserError as e:
            self.store.add_backup(
                env.domain,
                actor,
                "failed",
                started_at=started,
                finished_at=time.time(),
                detail=str(e)[:2000],
            )
            self.store.audit(actor, "backup.failed", str(e)[:500], app=env.domain)
            if self._metrics is not None:
                self._metrics.backups.labels("failed").inc()
            locks = await lock_note(self, self.apps.prefix) if isinstance(e, ResticError) else ""
            if locks and isinstance(e, ResticError):  # a failing restic leaves its lock
                raise ResticError(f"{e}\n{locks}", kind=e.kind, exit_code=e.exit_code) from e
            raise

    async def _backup(
        self, target: BackupTarget, progress: StatusSink, actor: str
    ) -> BackupOutcome:
        env = target.env
        swarm = self.hook_swarm(target)  # the node's own daemon when the data is elsewhere
        where = target.location
        node = where.hostname if where is not None and where.remote else None

        async def hook(service: str, command: str, what: str) -> int:
            # A dead node endpoint is named as the node, with what to do next.
            manager, prefix = self.apps.swarm(env.server), self.apps.prefix
            return await run_hook(
                swarm, env, service, command, what, node=node, manager=manager, prefix=prefix
            )

        title = f"💾 Backing up **{env.domain}**"
        started = time.time()
        hooks_failed: list[str] = []
        hook_bytes: int | None = None  # the pre-hooks' output (a dump printed?)
        summary = None
        try:
            for spec in target.specs:
                if spec.pre_hook:
                    await progress.update(f"{title}: pre-hook in {spec.service}")
                    out = await hook(spec.service, spec.pre_hook, "pre-hook")
                    hook_bytes = (hook_bytes or 0) + out
            fault_point("backup.pre_hooks_done")

            async def on_progress(p: ResticProgress) -> None:
                fault_point("backup.restic_running")
                await progress.update(f"{title}: {progress_line(p)}")

            await progress.update(f"{title}: starting restic")
            try:
                summary = await self.restic_backup(target, on_progress)
            except ResticError as e:
                if e.kind != "no_repository":
                    raise
                await self._create_repository()
                summary = await self.restic_backup(target, on_progress)
            fault_point("backup.restic_done")  # the snapshot exists; post-hooks not run
        finally:
            # The post-hook undoes what the pre-hook did (maintenance mode, a lock):
            # it runs whatever happened above.
            for spec in target.specs:
                if spec.post_hook:
                    try:
                        await hook(spec.service, spec.post_hook, "post-hook")
                    except UserError as e:
                        hooks_failed.append(str(e))
        warnings = [*target.warnings, *summary.warnings, *hooks_failed]
        # Unreadable files (restic exit 3) make an incomplete snapshot: recorded, shown
        # with ⚠, but not a good backup (max_age, the metric, the drill, retention).
        incomplete = bool(summary.warnings)
        sizes = health.summary_sizes(summary, hook_bytes)
        drop = self.config.size_drop_alert
        suspect = [] if incomplete else health.judge(self.store, env.domain, sizes, drop, actor)
        warnings += suspect
        result = PARTIAL if incomplete else health.SUSPECT if suspect else None
        result = result or ("warning" if warnings else "ok")
        run_id = self.store.add_backup(
            env.domain,
            actor,
            result,
            started_at=started,
            finished_at=time.time(),
            snapshot_id=summary.snapshot_id,
            version=target.version,
            files_new=summary.files_new,
            files_changed=summary.files_changed,
            files_unmodified=summary.files_unmodified,
            data_added=summary.data_added,
            total_bytes=summary.total_bytes_processed,
            hook_bytes=hook_bytes,
            detail="\n".join(warnings)[:2000] or None,
        )
        tag = APP_TAG + env.domain
        await health.measure(self.restic, self.store, self._metrics, env.domain, tag, run_id)
        if self._metrics is not None:
            self._metrics.backups.labels(result).inc()
            if not incomplete and not suspect:
                self._metrics.backup_last_good.labels(env.domain).set(time.time())
        mark = "⚠️" if warnings else "✅"
        lines = [
            f"{mark} **{env.domain}**: snapshot `{summary.snapshot_id[:8]}` "
            f"({target.version or 'unversioned'}) in {human_age(summary.duration)}: "
            f"{summary.files_new} new, {summary.files_changed} changed, "
            f"{summary.files_unmodified} unchanged files; "
            f"{human_bytes(summary.data_added)} added of "
            f"{human_bytes(summary.total_bytes_processed)}."
        ]
        if incomplete:
            lines[0] += (
                " **Incomplete**: not counted as a good backup; retention of this app "
                "waits for a clean one."
            )
        lines[0] += health.note(self.store, env.domain, suspect) or ""
        lines += [f"  - ⚠️ {w}" for w in warnings[:20]]
        if len(warnings) > 20:
            lines.append(f"  - … and {len(warnings) - 20} more")
        report = "\n".join(lines)
        return BackupOutcome(env.domain, summary.snapshot_id, report, warnings, bool(suspect))

    # -- retention, check, drill -------------------------------------------------------
    async def retention(self, sink: StatusSink, lock: AppLock = no_lock) -> str:
        """`forget` per app by the retention policy, then `prune` as its own step.
        `lock(app)`: the app's job lock, so a forget never runs beside that app's
        backup or restore (each app in turn; prune takes them all, in order). An app
        with an open restore proposal keeps its snapshots (the voted one is held),
        and so does one whose newest backup is incomplete."""
        keep = self.config.retention
        snaps = await self._snapshots(COOPBOT_TAG)
        apps = sorted({app for s in snaps if (app := snapshot_app(s)) is not None})
        removed, skipped = 0, []
        for app in apps:
            async with lock(app):  # decided under the lock: a restore may just have begun
                why = "a restore of it is being voted on" if app in self.held_apps() else None
                why = why or self.retention_paused(app)
                if why is not None:
                    skipped.append(f"{app} ({why})")
                    continue
                await sink.update(f"🧹 Retention: forgetting old snapshots of {app}")
                gone = await self.restic.forget(
                    [APP_TAG + app], keep.daily, keep.weekly, keep.monthly, group_by=""
                )
            removed += len(gone)
        await sink.update("🧹 Retention: pruning unused data")
        async with contextlib.AsyncExitStack() as stack:
            # Prune changes the whole repository: no app's backup or restore meanwhile.
            for app in apps:
                await stack.enter_async_context(lock(app))
            await self.restic.prune()
        report = (
            f"🧹 Retention (daily {keep.daily}, weekly {keep.weekly}, monthly {keep.monthly}): "
            f"{removed} snapshot(s) of {len(apps) - len(skipped)} app(s) forgotten, "
            "repository pruned."
        )
        if skipped:
            report += "\n⏸ Kept every snapshot of " + ", ".join(skipped) + "."
        return report

    def held_apps(self) -> set[str]:
        """Apps with a restore being voted on (or approved and waiting for its delay)
        or a restore job not yet ended (waiting for the app's lock, or running): the
        snapshot it was voted for is held until the restore finished or failed."""
        voting = {row.app for row in self.store.proposals("open") if row.command == "restore"}
        jobs = {
            row.app for row in self.store.jobs(OPEN_JOB_STATES, 1000) if row.command == "restore"
        }
        return {app for app in voting | jobs if app}

    async def check(self) -> str:
        await self._ready()
        subset = self.config.check_read_data_subset
        await self.restic.check(read_data_subset=subset)
        return f"✅ `restic check` passed (structure, and {subset} of the data read back)."

    async def drill(self, sink: StatusSink, lock: AppLock = no_lock) -> tuple[bool, str]:
        """Restore each app's newest snapshot into a temporary folder and compare file
        counts and sizes with the snapshot's own listing."""
        newest = await self._newest_per_app()
        if not newest:
            return False, "❌ Restore drill: the repository has no coopbot snapshots yet."
        lines, ok = [], True
        for index, (app, snap) in enumerate(sorted(newest.items()), 1):
            await sink.update(f"🧪 Restore drill {index}/{len(newest)}: {app}")
            try:
                async with lock(app):  # not while retention forgets that snapshot
                    line = await self._drill_one(app, snap)
            except UserError as e:
                ok, line = False, f"❌ {app} ({snap.short_id}): {e}"
            if line.startswith("❌"):
                ok = False
            lines.append(line)
        head = "✅ Restore drill passed" if ok else "❌ Restore drill found problems"
        return ok, head + ":\n" + "\n".join(f"- {x}" for x in lines)

    async def _drill_one(self, app: str, snap: Snapshot) -> str:
        listing = await self.restic.ls(snap.id)
        want_files = sum(1 for _, kind, _ in listing if kind == "file")
        want_size = sum(size for _, kind, size in listing if kind == "file")
        place = self.config.drill_dir or self._data_dir
        await asyncio.to_thread(place.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(check_room, place, want_size)  # refuses before writing
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, "", "drill-", place))
        try:
            started = time.monotonic()
            await self.restic.restore(snap.id, folder)
            files, size = await asyncio.to_thread(tree_totals, folder)
            took = human_age(time.monotonic() - started)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        age = human_age((datetime.now(UTC) - snap.time).total_seconds())
        if (files, size) != (want_files, want_size):
            return (
                f"❌ {app} ({snap.short_id}, {age} old): restored {files} files / "
                f"{human_bytes(size)}, the snapshot lists {want_files} / {human_bytes(want_size)}"
            )
        return (
            f"✅ {app} ({snap.short_id}, {age} old): {files} files, {human_bytes(size)} "
            f"restored and matching, in {took}"
        )
