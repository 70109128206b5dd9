"""Backups with restic, driven by the recipes' backupbot labels.

What gets backed up is read from the running stack (labels, volumes, mounts), the
paths come from `bot/ops/backupbot.py`, and restic runs through `bot/ops/restic.py`.
Every run is recorded in the store, which `!backups` and the age alerts read.

Restores never write into a live volume: the snapshot is restored next to the data
(inside the volume's own folder, so the swap is a rename on one filesystem), the
app is scaled to 0, the old data is moved aside and the restored data moved in.
The old data is deleted only once the app runs again; on any failure the report
says where everything is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from bot.config import BackupsConfig
from bot.core.metrics import Metrics
from bot.core.store import Store
from bot.errors import UserError
from bot.features.apps import Apps, deployed_from
from bot.ops.abra import AppEnv
from bot.ops.backupbot import BackupSpec, backup_specs, volume_paths
from bot.ops.restic import Progress as ResticProgress
from bot.ops.restic import Restic, ResticError, Snapshot, human_age
from bot.ops.swarm import ServiceInfo, Swarm, SwarmError
from bot.ports import StatusSink

log = logging.getLogger(__name__)

APP_TAG = "app="  # every snapshot is tagged app=<domain>, stack=<stack>, version=<v>
COOPBOT_TAG = "coopbot"
# Update states in which a stack is changing under our feet: wait for them to end.
MOVING = frozenset({"updating", "rollback_started"})
# Update states that will not end by themselves: fail at once, with the reason.
STUCK = frozenset({"paused", "rollback_paused"})
RESTORE_DIR = "coopbot-restore-"  # inside <volumes_root>/<volume>/, beside _data
ASIDE_DIR = "coopbot-previous-"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def progress_line(p: ResticProgress) -> str:
    """One line from a restic status: percent, bytes, files, ETA."""
    eta = f", about {human_age(p.seconds_remaining)} left" if p.seconds_remaining else ""
    total = f" of {human_bytes(p.total_bytes)}" if p.total_bytes else ""
    return (
        f"{p.percent:.0f}% · {human_bytes(p.bytes_done)}{total} · "
        f"{p.files_done} of {p.total_files or '?'} files{eta}"
    )


@dataclass(frozen=True)
class BackupTarget:
    """What one app's backup covers, read from its running stack."""

    env: AppEnv
    specs: list[BackupSpec]
    paths: list[Path]
    version: str | None
    services: list[ServiceInfo]
    warnings: list[str]

    @property
    def tags(self) -> list[str]:
        tags = [COOPBOT_TAG, APP_TAG + self.env.domain, "stack=" + self.env.stack_name]
        if self.version:
            tags.append("version=" + self.version)
        return tags


@dataclass
class BackupOutcome:
    app: str
    snapshot_id: str
    report: str  # Markdown, for the room
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AppBackupState:
    """One line of `!backups`."""

    app: str
    newest: Snapshot | None
    size: int | None  # of the newest good run, when the store knows it
    last_failed: str | None  # the last run's error, if it failed
    age: float | None  # seconds since the newest snapshot

    def stale(self, max_age: float) -> bool:
        return self.age is None or self.age > max_age


def snapshot_tag(snapshot: Snapshot, prefix: str) -> str | None:
    """The value of the snapshot's first `prefix…` tag ("version=" gives the version)."""
    for tag in snapshot.tags:
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return None


def snapshot_app(snapshot: Snapshot) -> str | None:
    return snapshot_tag(snapshot, APP_TAG)


def restore_scope(
    snapshot: Snapshot, volumes_root: Path, stack: str, path: str | None
) -> list[Path]:
    """The host paths a restore replaces: the snapshot's own paths, or the one that
    `path` ("<volume>[/<sub>]") names inside them. Refuses anything that is not in one
    of this stack's volumes."""
    inside = [Path(p) for p in snapshot.paths]
    for p in inside:
        if not _in_stack_volume(p, volumes_root, stack):
            raise UserError(
                f"snapshot {snapshot.short_id} holds {p}, which is not in a volume of "
                f"{stack} under {volumes_root}: refusing to restore it"
            )
    if path is None:
        return inside
    parts = PurePosixPath(path.strip("/")).parts
    if not parts or ".." in parts:
        raise UserError(f"--path {path!r}: give <volume>[/<sub-path>], e.g. `data/uploads`")
    wanted = volumes_root / f"{stack}_{parts[0]}" / "_data" / Path(*parts[1:])
    for p in inside:
        if wanted == p or p in wanted.parents:
            return [wanted]
    names = ", ".join(sorted({_volume_of(p, volumes_root) for p in inside}))
    raise UserError(f"--path {path!r} is not in snapshot {snapshot.short_id} (it has: {names})")


def _in_stack_volume(path: Path, volumes_root: Path, stack: str) -> bool:
    try:
        rel = path.relative_to(volumes_root)
    except ValueError:
        return False
    parts = rel.parts
    return (
        len(parts) >= 2
        and parts[0].startswith(stack + "_")
        and parts[1] == "_data"
        and ".." not in parts
    )


def _volume_of(path: Path, volumes_root: Path) -> str:
    rel = path.relative_to(volumes_root)
    return rel.parts[0] + ("/" + "/".join(rel.parts[2:]) if len(rel.parts) > 2 else "")


def tree_totals(root: Path) -> tuple[int, int]:
    """(regular files, their total size) under root, symlinks not followed."""
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(st.st_mode):  # lstat: a symlink is not a file here
                files += 1
                size += st.st_size
    return files, size


class Backups:
    def __init__(
        self,
        config: BackupsConfig,
        apps: Apps,
        store: Store,
        restic: Restic,
        *,
        data_dir: Path | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.apps = apps
        self.store = store
        self._data_dir = data_dir or Path(tempfile.gettempdir())
        self.restic = restic
        self._metrics = metrics
        if metrics is not None:  # known after a restart too, not only after the next run
            for app, runs in store.last_backups().items():
                good = runs["good"]
                if good is not None:
                    when = good["finished_at"] or good["started_at"]
                    metrics.backup_last_good.labels(app).set(when)
        self._repo_ready = False
        self._repo_created = False
        self._repo_lock = asyncio.Lock()  # two first uses at once must not both init

    # -- what to back up ----------------------------------------------------------
    async def has_labels(self, env: AppEnv) -> bool:
        services = await self.apps.swarm(env.server).services(env.stack_name)
        return bool(backup_specs({s.short_name: s.labels for s in services}))

    async def labelled_apps(self) -> tuple[list[AppEnv], list[str]]:
        """Deployed apps with a service labelled backupbot.backup=true; problems."""
        apps, problems = await self.apps.inventory()
        stacks: dict[str, dict[str, list[ServiceInfo]]] = {}
        for server in sorted({a.server for a in apps}):
            try:
                stacks[server] = await self.apps.swarm(server).stacks()
            except SwarmError as e:
                problems.append(f"{server}: {e}")
        found = []
        for env in apps:
            services = stacks.get(env.server, {}).get(env.stack_name, [])
            if backup_specs({s.short_name: s.labels for s in services}):
                found.append(env)
        return found, problems

    async def target(self, env: AppEnv) -> BackupTarget:
        swarm = self.apps.swarm(env.server)
        services = await swarm.services(env.stack_name)
        if not services:
            raise UserError(f"{env.domain} is not deployed: there is nothing to back up.")
        specs = backup_specs({s.short_name: s.labels for s in services})
        if not specs:
            raise UserError(
                f"{env.domain} has no `backupbot.backup=true` label on any service: "
                "its recipe does not say what to back up."
            )
        prefix = env.stack_name + "_"
        volumes = [
            v[len(prefix) :]
            for v in await swarm.volumes(env.stack_name)
            if v.startswith(prefix) and len(v) > len(prefix)
        ]
        warnings = [w for spec in specs for w in spec.warnings]
        paths: list[Path] = []
        root = self.config.volumes_root
        for spec in specs:
            try:
                if spec.deprecated_paths:
                    paths += await self._deprecated(env, swarm, spec)
                else:
                    paths += volume_paths(env.stack_name, root, volumes, spec)
            except ValueError as e:
                raise UserError(f"{env.domain}: {e}") from None
        paths = list(dict.fromkeys(paths))
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise UserError(
                f"{env.domain}: cannot see {', '.join(map(str, missing))}; is "
                f"backups.volumes_root ({root}) where the docker volumes are?"
            )
        if not paths:
            raise UserError(f"{env.domain}: every volume is skipped by its labels.")
        deployed = deployed_from(env.stack_name, services)  # no second listing
        return BackupTarget(env, specs, paths, deployed.version, services, warnings)

    async def _deprecated(self, env: AppEnv, swarm: Swarm, spec: BackupSpec) -> list[Path]:
        """backupbot.backup.path names paths inside the labelled container: map them
        through that service's volume mounts to the host."""
        mounts = (await swarm.mounts(env.stack_name)).get(spec.service, [])
        # The innermost mount first: a volume mounted inside another hides that part of it.
        mounts = sorted(mounts, key=lambda m: len(PurePosixPath(m[1]).parts), reverse=True)
        result = []
        for raw in spec.deprecated_paths:
            inside = PurePosixPath(raw)
            for source, target in mounts:
                try:
                    rel = inside.relative_to(target)
                except ValueError:
                    continue
                if ".." in rel.parts:  # leaves the mount: not on this volume
                    continue
                result.append(self.config.volumes_root / source / "_data" / rel)
                break
            else:
                raise ValueError(
                    f"backupbot.backup.path {raw} is not on a volume of service {spec.service}"
                )
        return result

    # -- backup -------------------------------------------------------------------
    async def _ready(self) -> None:
        """Check the restic binary once (`restic version`: cheap, no repository)."""
        async with self._repo_lock:
            if not self._repo_ready:
                await self.restic.version()
                self._repo_ready = True

    async def _create_repository(self) -> None:
        """Create the repository on first use. Serialised: two restic inits at once
        would each write their own key and config."""
        async with self._repo_lock:
            if not self._repo_created:  # another first backup may have just made it
                log.warning("creating the restic repository at %s", self.restic.display)
                await self.restic.init()
                self._repo_created = True

    async def _snapshots(self, tag: str) -> list[Snapshot]:
        """Snapshots with this tag; none while the repository does not exist yet."""
        await self._ready()
        try:
            return await self.restic.snapshots(tags=[tag])
        except ResticError as e:
            if e.kind == "no_repository":
                return []
            raise

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
            stuck = [s for s in services if (s.update_state or "") in STUCK]
            if stuck:
                raise UserError(
                    f"{env.domain} is not backed up: the update of "
                    + ", ".join(f"{s.short_name} is {s.update_state}" for s in stuck)
                    + ". Finish or roll back that deploy first."
                )
            moving = [s for s in services if (s.update_state or "") in MOVING]
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

    async def backup(
        self,
        env: AppEnv,
        progress: StatusSink,
        actor: str,
        job_id: int | None = None,
    ) -> BackupOutcome:
        """Back one app up now: settle, pre-hook, restic, post-hook. Every run is
        recorded; failures raise UserError with the reason."""
        started = time.time()
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
            raise

    async def _backup(
        self, target: BackupTarget, progress: StatusSink, actor: str
    ) -> BackupOutcome:
        env = target.env
        swarm = self.apps.swarm(env.server)
        title = f"💾 Backing up **{env.domain}**"
        started = time.time()
        hooks_failed: list[str] = []
        summary = None
        try:
            for spec in target.specs:
                if spec.pre_hook:
                    await progress.update(f"{title}: pre-hook in {spec.service}")
                    await _hook(swarm, env, spec.service, spec.pre_hook, "pre-hook")

            async def on_progress(p: ResticProgress) -> None:
                await progress.update(f"{title}: {progress_line(p)}")

            await progress.update(f"{title}: starting restic")
            try:
                summary = await self.restic.backup(target.paths, target.tags, on_progress)
            except ResticError as e:
                if e.kind != "no_repository":
                    raise
                await self._create_repository()
                summary = await self.restic.backup(target.paths, target.tags, on_progress)
        finally:
            # The post-hook undoes what the pre-hook did (maintenance mode, a lock):
            # it runs whatever happened above.
            for spec in target.specs:
                if spec.post_hook:
                    try:
                        await _hook(swarm, env, spec.service, spec.post_hook, "post-hook")
                    except UserError as e:
                        hooks_failed.append(str(e))
        warnings = [*target.warnings, *summary.warnings, *hooks_failed]
        result = "warning" if warnings else "ok"
        self.store.add_backup(
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
            detail="\n".join(warnings)[:2000] or None,
        )
        if self._metrics is not None:
            self._metrics.backups.labels(result).inc()
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
        lines += [f"  - ⚠️ {w}" for w in warnings[:20]]
        if len(warnings) > 20:
            lines.append(f"  - … and {len(warnings) - 20} more")
        return BackupOutcome(env.domain, summary.snapshot_id, "\n".join(lines), warnings)

    # -- what exists --------------------------------------------------------------
    async def snapshots(self, env: AppEnv) -> list[Snapshot]:
        return await self._snapshots(APP_TAG + env.domain)

    async def newest_snapshot(self, env: AppEnv) -> str | None:
        found = await self.snapshots(env)
        return found[-1].id if found else None

    async def _newest_per_app(self) -> dict[str, Snapshot]:
        newest: dict[str, Snapshot] = {}
        for snap in await self._snapshots(COOPBOT_TAG):  # oldest first: the last one wins
            app = snapshot_app(snap)
            if app is not None:
                newest[app] = snap
        return newest

    async def states(self, now: float | None = None) -> tuple[list[AppBackupState], list[str]]:
        """Per labelled app (and per app with snapshots): the newest snapshot, its
        age and size, and whether the last run failed."""
        now = time.time() if now is None else now
        apps, problems = await self.labelled_apps()
        newest = await self._newest_per_app()
        runs = self.store.last_backups()
        names = sorted({a.domain for a in apps} | set(newest))
        states = []
        for name in names:
            found = newest.get(name)
            run = runs.get(name, {})
            last, good = run.get("last"), run.get("good")
            failed = (
                str(last["detail"] or "failed") if last and last["result"] == "failed" else None
            )
            # restic 0.14 reports short ids, later ones full ids: compare prefixes.
            size = None
            good_id = str(good["snapshot_id"] or "") if good else ""
            if good and found and good_id and found.id.startswith(good_id):
                size = good["total_bytes"]
            age = now - found.time.timestamp() if found else None
            states.append(AppBackupState(name, found, size, failed, age))
        return states, problems

    # -- retention, check, drill -------------------------------------------------------
    async def retention(self, sink: StatusSink) -> str:
        """`forget` per app by the retention policy, then `prune` as its own step."""
        keep = self.config.retention
        snaps = await self._snapshots(COOPBOT_TAG)
        apps = sorted({app for s in snaps if (app := snapshot_app(s)) is not None})
        removed = 0
        for app in apps:
            await sink.update(f"🧹 Retention: forgetting old snapshots of {app}")
            gone = await self.restic.forget(
                [APP_TAG + app], keep.daily, keep.weekly, keep.monthly, group_by=""
            )
            removed += len(gone)
        await sink.update("🧹 Retention: pruning unused data")
        await self.restic.prune()
        return (
            f"🧹 Retention (daily {keep.daily}, weekly {keep.weekly}, monthly {keep.monthly}): "
            f"{removed} snapshot(s) of {len(apps)} app(s) forgotten, repository pruned."
        )

    async def check(self) -> str:
        await self._ready()
        subset = self.config.check_read_data_subset
        await self.restic.check(read_data_subset=subset)
        return f"✅ `restic check` passed (structure, and {subset} of the data read back)."

    async def drill(self, sink: StatusSink) -> tuple[bool, str]:
        """Restore each app's newest snapshot into a temporary folder and compare file
        counts and sizes with the snapshot's own listing."""
        newest = await self._newest_per_app()
        if not newest:
            return False, "❌ Restore drill: the repository has no coopbot snapshots yet."
        lines, ok = [], True
        for index, (app, snap) in enumerate(sorted(newest.items()), 1):
            await sink.update(f"🧪 Restore drill {index}/{len(newest)}: {app}")
            try:
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
        self._data_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, "", "drill-", self._data_dir))
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

    # -- restore ------------------------------------------------------------------------
    async def find_snapshot(self, env: AppEnv, snapshot_id: str | None) -> Snapshot:
        """The app's snapshot with this id (or short id), or its newest. A snapshot of
        another app is refused: restoring it would mix apps' data."""
        found = await self.snapshots(env)
        if not found:
            raise UserError(f"{env.domain} has no snapshots in {self.restic.display}.")
        if snapshot_id is None:
            return found[-1]
        for snap in found:
            if snap.id.startswith(snapshot_id) and len(snapshot_id) >= 4:
                return snap
        raise UserError(
            f"No snapshot `{snapshot_id[:64]}` of {env.domain}; `!snapshots {env.domain}` "
            "lists them."
        )

    async def restore_plan(
        self, env: AppEnv, snapshot_id: str | None, path: str | None
    ) -> tuple[Snapshot, list[Path], str]:
        """(snapshot, paths replaced, the plan as Markdown)."""
        snap = await self.find_snapshot(env, snapshot_id)
        scope = restore_scope(snap, self.config.volumes_root, env.stack_name, path)
        swarm = self.apps.swarm(env.server)
        services = await swarm.services(env.stack_name)
        # The stack-name prefix alone would also match a longer stack's volumes
        # (a_test_x_data for stack a_test): the volume must be this stack's own.
        own = set(await swarm.volumes(env.stack_name))
        foreign = sorted({self._volume_dir(p) for p in scope} - own)
        if foreign:
            raise UserError(
                f"snapshot {snap.short_id} holds {', '.join(foreign)}, which "
                f"{'is' if len(foreign) == 1 else 'are'} not a volume of {env.domain} now: "
                "refusing to restore it"
            )
        fixed = [s.short_name for s in services if s.replicas_desired is None]
        if fixed:
            raise UserError(
                f"{env.domain} has global services ({', '.join(fixed)}), which cannot be "
                "stopped by scaling to 0: restore it by hand."
            )
        lines = [
            f"Restore **{env.domain}** from snapshot `{snap.short_id}` "
            f"({snap.time:%Y-%m-%d %H:%M} UTC, "
            f"{snapshot_tag(snap, 'version=') or 'unversioned'}). This **replaces**:",
        ]
        for p in scope:
            files, size = await asyncio.to_thread(tree_totals, p) if p.exists() else (0, 0)
            lines.append(
                f"- `{_volume_of(p, self.config.volumes_root)}`: now {files} files, "
                f"{human_bytes(size)}"
            )
        running = ", ".join(s.short_name for s in services) or "none"
        lines.append(
            f"The app's services ({running}) are scaled to 0 meanwhile and back afterwards; "
            "the current data is kept aside until the app runs again."
        )
        return snap, scope, "\n".join(lines)

    async def restore(
        self,
        env: AppEnv,
        snapshot_id: str | None,
        path: str | None,
        progress: StatusSink,
        actor: str,
    ) -> str:
        snap, scope, _ = await self.restore_plan(env, snapshot_id, path)
        swarm = self.apps.swarm(env.server)
        services = await swarm.services(env.stack_name)
        specs = backup_specs({s.short_name: s.labels for s in services})
        title = f"♻️ **Restore {env.domain}** from `{snap.short_id}`"
        done: list[str] = []
        state = "running, untouched"
        token = secrets.token_hex(4)
        aside = {dest: self._aside(dest, token) for dest in scope}

        async def step(text: str) -> None:
            await progress.update("\n".join([title, "", *done, f"⏳ {text}"]))

        async def fail(why: str) -> UserError:
            where = "".join(
                f"\n- the data it replaced is kept at `{a}`" for a in aside.values() if a.exists()
            )
            self.store.audit(
                actor, "restore.failed", f"{snap.short_id}: {why}"[:500], app=env.domain
            )
            return UserError(
                "\n".join([title, "", *done])
                + f"\n\n❌ {why}\n**State of {env.domain}:** {state}.{where}"
            )

        replicas = {s.short_name: s.replicas_desired for s in services if s.replicas_desired}
        try:
            for spec in specs:
                if spec.restore_pre_hook:
                    await step(f"restore pre-hook in {spec.service}")
                    await _hook(swarm, env, spec.service, spec.restore_pre_hook, "restore pre-hook")
                    done.append(f"✅ restore pre-hook in {spec.service}")
            await step(f"scaling {', '.join(replicas) or 'nothing'} to 0")
            state = "being scaled to 0"
            await swarm.scale(env.stack_name, {name: 0 for name in replicas})
            await _wait_stopped(swarm, env.stack_name)
            state = f"stopped (scaled to 0; was {_counts(replicas)}), data untouched"
            done.append(f"✅ scaled to 0 (was {_counts(replicas)})")
            for index, dest in enumerate(scope, 1):
                await step(
                    f"restoring {_volume_of(dest, self.config.volumes_root)} ({index}/{len(scope)})"
                )
                await self._restore_one(snap, dest, token, aside[dest])
                state = (
                    f"stopped; {index} of {len(scope)} path(s) restored "
                    f"(scale back with `!deploy {env.domain}` once fixed)"
                )
                done.append(f"✅ restored {_volume_of(dest, self.config.volumes_root)}")
            await step(f"scaling back to {_counts(replicas)}")
            await swarm.scale(env.stack_name, replicas)
            state = "restored, starting again"
            result = await swarm.wait_converged(env.stack_name, timeout=float(env.timeout or 300))
            if not result.ok:
                state = "restored, but not running: " + "; ".join(result.failures[:5])
                raise UserError("the app did not come back up")
            done.append(f"✅ running again ({_counts(replicas)})")
            state = "restored and running"
            for spec in specs:
                if spec.restore_post_hook:
                    await step(f"restore post-hook in {spec.service}")
                    await _hook(
                        swarm, env, spec.service, spec.restore_post_hook, "restore post-hook"
                    )
                    done.append(f"✅ restore post-hook in {spec.service}")
        except (UserError, OSError) as e:
            raise await fail(str(e)) from None
        for dest in scope:  # the app runs on the restored data: the old copy can go
            root = self.config.volumes_root / self._volume_dir(dest) / f"{ASIDE_DIR}{token}"
            await asyncio.to_thread(shutil.rmtree, root, True)
        self.store.audit(
            actor, "restore", f"{snap.short_id} → {len(scope)} path(s)", app=env.domain
        )
        return "\n".join(
            [title, "", *done, "", f"✅ {env.domain} restored from `{snap.short_id}`."]
        )

    def _volume_dir(self, dest: Path) -> str:
        return dest.relative_to(self.config.volumes_root).parts[0]

    def _aside(self, dest: Path, token: str) -> Path:
        """Where the data at `dest` goes while the restored copy takes its place."""
        volume_dir = self.config.volumes_root / self._volume_dir(dest)
        return volume_dir / f"{ASIDE_DIR}{token}" / dest.relative_to(volume_dir)

    async def _restore_one(self, snap: Snapshot, dest: Path, token: str, aside: Path) -> None:
        """Restore `dest` (a path in the snapshot) next to it, then swap it in; the
        previous data goes to `aside`."""
        volume_dir = self.config.volumes_root / self._volume_dir(dest)
        # The swap renames by path: a symlink planted on the way (inside the app's
        # volume) would move files outside it.
        for folder in [dest.parent, *dest.parent.parents]:
            if folder == volume_dir:
                break
            if folder.is_symlink():
                raise UserError(f"{folder} is a symbolic link: refusing to restore through it")
        staging = volume_dir / f"{RESTORE_DIR}{token}"
        await self.restic.restore(snap.id, staging, include=[str(dest)])
        staged = staging / dest.relative_to("/")
        if not staged.exists():
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise UserError(f"{dest} is not in snapshot {snap.short_id}")

        def swap() -> None:
            aside.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                dest.rename(aside)
            staged.rename(dest)
            shutil.rmtree(staging, ignore_errors=True)

        await asyncio.to_thread(swap)


async def _hook(swarm: Swarm, env: AppEnv, service: str, command: str, what: str) -> None:
    code, output = await swarm.exec(env.stack_name, service, command)
    if code != 0:
        tail = output.strip()[-500:]
        raise UserError(
            f"{what} in {service} failed (exit {code})" + (f":\n```\n{tail}\n```" if tail else "")
        )


async def _wait_stopped(swarm: Swarm, stack: str, timeout: float = 120) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        running = [s for s in await swarm.services(stack) if s.replicas_running]
        if not running:
            return
        if time.monotonic() > deadline:
            names = ", ".join(s.short_name for s in running)
            raise UserError(f"{names} still running {timeout:g}s after scaling to 0")
        await asyncio.sleep(1)


def _counts(replicas: dict[str, int]) -> str:
    return ", ".join(f"{name}={count}" for name, count in replicas.items()) or "no services"


def restic_environment(path: Path | None) -> dict[str, str]:
    """VAR=value lines (blank lines and # comments skipped) for restic's environment."""
    if path is None:
        return {}
    env = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise UserError(f"{path}:{number}: expected VAR=value")
        env[key.strip()] = value.strip().strip("'\"")
    return env
