"""The restore procedure.

Restores never write into a live volume: the snapshot is restored next to the data
(inside the volume's own folder, so the swap is a rename on one filesystem), the
app is scaled to 0, the old data is moved aside and the restored data moved in.
The old data is deleted only once the app runs again; on any failure the report
says where everything is.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from bot.errors import StalePlan, UserError
from bot.faults import fault_point
from bot.features.backups.hooks import run_hook
from bot.features.backups.remote import Remote
from bot.features.backups.repository import skipped_note, snapshot_tag
from bot.features.backups.resume import save_checkpoint
from bot.features.backups.targets import Location, tree_totals
from bot.fmt import human_bytes, utc_time
from bot.ops.abra import AppEnv
from bot.ops.backupbot import BackupSpec, backup_specs
from bot.ops.restic import Snapshot
from bot.ops.swarm import Swarm
from bot.ports import StatusSink

T = TypeVar("T")

RESTORE_DIR = "coopbot-restore-"  # inside <volumes_root>/<volume>/, beside _data
ASIDE_DIR = "coopbot-previous-"


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
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise UserError(f"--path {path!r}: control characters (a NUL byte, a newline) are refused")
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


class Restores(Remote):
    """The part of `Backups` that puts a snapshot back in place of an app's data."""

    async def restore_plan(
        self,
        env: AppEnv,
        snapshot_id: str | None,
        path: str | None,
        prefix: str = "!",
        *,
        look_inside: bool = False,
    ) -> tuple[Snapshot, list[Path], str]:
        """(snapshot, paths replaced, the plan as Markdown). `look_inside`: a --path
        below one of the snapshot's own paths must exist in the snapshot (its listing
        is read), so a vote is never taken on a restore that cannot happen."""
        snap, skipped = await self.pick_snapshot(env, snapshot_id, prefix)
        scope = restore_scope(snap, self.config.volumes_root, env.stack_name, path)
        if look_inside and path is not None:
            await self._check_in_snapshot(snap, scope, path)
        swarm = self.apps.swarm(env.server)
        services = await swarm.services(env.stack_name)
        # The stack-name prefix alone would also match a longer stack's volumes
        # (a_test_x_data for stack a_test): the volume must be this stack's own.
        own = set(await swarm.volumes(env.stack_name))
        where = await self.locate(env)
        remote = where is not None and where.remote
        if where is not None and where.remote:  # on another node: the manager lists none
            own |= {f"{env.stack_name}_{v}" for v in where.volumes}
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
            f"({utc_time(snap.time)}, "
            f"{snapshot_tag(snap, 'version=') or 'unversioned'}). This **replaces**:",
        ]
        for p in scope:
            if where is not None and remote:
                lines.append(f"- `{_volume_of(p, self.config.volumes_root)}` on {where.hostname}")
                continue
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
        if skipped:  # "the newest" is the newest good one: say what it passed over
            lines.append(skipped_note(env.domain, skipped, prefix))
        return snap, scope, "\n".join(lines)

    async def restore(
        self,
        env: AppEnv,
        snapshot_id: str | None,
        path: str | None,
        progress: StatusSink,
        actor: str,
        prefix: str = "!",
        *,
        paths: Sequence[str] | None = None,
        still_as_planned: Callable[[], Awaitable[None]] | None = None,
        tell: Callable[[str], Awaitable[object]] | None = None,
    ) -> str:
        """Put the snapshot back in place of the app's data. `paths`: the scope that was
        voted for (refused if it is not the scope now); `still_as_planned` is called
        once the app is stopped, and may raise to stop the restore there. Whatever
        happens (an error, a cancel, the job's timeout), the services are scaled back
        to what they were and the report says which paths were replaced, which not,
        and where the replaced data is kept (after a cancel or timeout, through `tell`:
        the job's own message then only says it was cancelled)."""
        snap, scope, _ = await self.restore_plan(env, snapshot_id, path, prefix)
        if paths is not None and [str(p) for p in scope] != list(paths):
            raise UserError(
                f"the paths snapshot {snap.short_id} would restore are not the ones voted "
                "for; nothing was done"
            )
        run = _RestoreRun(self, env, snap, scope, progress, actor, prefix)
        await run.prepare()
        try:
            await run.stop_swap_and_start(still_as_planned)
        except BaseException as e:  # a cancel or the job's timeout too: never left at 0
            report = await run.recover(e)
            run.checkpoint(None)  # ended here: recovered and reported
            if isinstance(e, StalePlan):  # the vote no longer holds: the job marks it
                raise StalePlan(report) from None
            if isinstance(e, (UserError, OSError)):
                raise UserError(report) from None
            if tell is not None:
                await _shielded(tell(report))
            raise
        run.checkpoint(None)
        root = self.config.volumes_root
        kept = [root / self._volume_dir(d) / f"{ASIDE_DIR}{run.token}" for d in scope]
        if run.where is not None and run.where.remote:  # on that node (remote.py)
            await self.remove_remote(env, run.where, sorted(set(kept)))
        for folder in kept:  # the app runs on the restored data: the old copy can go
            await asyncio.to_thread(shutil.rmtree, folder, True)
        self.store.audit(
            actor, "restore", f"{snap.short_id} → {len(scope)} path(s)", app=env.domain
        )
        return "\n".join(
            [run.title, "", *run.done, "", f"✅ {env.domain} restored from `{snap.short_id}`."]
        )

    async def _check_in_snapshot(self, snap: Snapshot, scope: list[Path], path: str) -> None:
        own = {Path(p) for p in snap.paths}
        below = [str(p) for p in scope if p not in own]
        if not below:
            return
        listed = {node for node, _, _ in await self.restic.ls(snap.id)}
        missing = [p for p in below if p not in listed]
        if missing:
            raise UserError(
                f"--path {path!r} is not in snapshot {snap.short_id}: it holds no "
                f"{', '.join(missing)}"
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
        try:
            await self.restic.restore(snap.id, staging, include=[str(dest)])
        except BaseException:
            await _shielded(asyncio.to_thread(shutil.rmtree, staging, True))
            raise
        fault_point("restore.staged")  # restored beside the live data, not swapped in
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


class _RestoreRun:
    """One restore, step by step. It remembers how far it got, so that any end (an
    error, a cancel, the job's timeout) scales the app back to what it was and the
    report says which paths were replaced, which were not, and where the old data is."""

    def __init__(
        self,
        owner: Restores,
        env: AppEnv,
        snap: Snapshot,
        scope: list[Path],
        progress: StatusSink,
        actor: str,
        prefix: str,
    ) -> None:
        self.owner, self.env, self.snap, self.scope = owner, env, snap, scope
        self.progress, self.actor, self.prefix = progress, actor, prefix
        self.swarm = owner.apps.swarm(env.server)
        self.title = f"♻️ **Restore {env.domain}** from `{snap.short_id}`"
        self.done: list[str] = []
        self.state = "running, untouched"
        self.token = secrets.token_hex(4)
        self.aside = {dest: owner._aside(dest, self.token) for dest in scope}
        self.replaced: list[Path] = []
        self.replicas: dict[str, int] = {}
        self.specs: list[BackupSpec] = []
        self.stopping = False  # set before the scale-down: a cancel during it scales back
        self.restarted = False  # the scale back was asked for
        self.where: Location | None = None  # the node of its data (remote.py)

    def _name(self, dest: Path) -> str:
        return _volume_of(dest, self.owner.config.volumes_root)

    def checkpoint(self, step: str | None) -> None:
        """What a restart after a crash needs (resume.py): None once the restore ended."""
        root = self.owner.config.volumes_root
        dirs = sorted({root / self.owner._volume_dir(d) for d in self.scope})
        state: dict[str, Any] = {
            "step": step,
            "server": self.env.server,
            "stack": self.env.stack_name,
            "snapshot": self.snap.short_id,
            "replicas": self.replicas,
            "scope": [self._name(d) for d in self.scope],
            "replaced": [self._name(d) for d in self.replaced],
            "aside": [str(d / f"{ASIDE_DIR}{self.token}") for d in dirs],
            "staging": [str(d / f"{RESTORE_DIR}{self.token}") for d in dirs],
        }
        if self.where is not None and self.where.remote:  # those paths are on that node
            state["node"] = {"id": self.where.node_id, "hostname": self.where.hostname}
        save_checkpoint(self.owner.store, self.env.domain, state if step else None)

    async def prepare(self) -> None:
        services = await self.swarm.services(self.env.stack_name)
        self.specs = backup_specs({s.short_name: s.labels for s in services})
        self.replicas = {s.short_name: s.replicas_desired for s in services if s.replicas_desired}
        self.where = await self.owner.locate(self.env)  # while its tasks still run

    async def _step(self, text: str) -> None:
        await self.progress.update("\n".join([self.title, "", *self.done, f"⏳ {text}"]))

    async def _hooks(self, which: str) -> None:
        for spec in self.specs:
            command = spec.restore_pre_hook if which == "pre" else spec.restore_post_hook
            if command:
                await self._step(f"restore {which}-hook in {spec.service}")
                swarm = self.owner.hook_swarm_for(self.env, self.where)
                where = self.where
                await run_hook(
                    swarm,
                    self.env,
                    spec.service,
                    command,
                    f"restore {which}-hook",
                    node=where.hostname if where is not None and where.remote else None,
                    manager=self.swarm,
                    again=f"{self.prefix}restore {self.env.domain} {self.snap.short_id}",
                )
                self.done.append(f"✅ restore {which}-hook in {spec.service}")

    async def stop_swap_and_start(
        self, still_as_planned: Callable[[], Awaitable[None]] | None
    ) -> None:
        env, swarm, counts = self.env, self.swarm, _counts(self.replicas)
        await self._hooks("pre")
        await self._step(f"scaling {', '.join(self.replicas) or 'nothing'} to 0")
        self.state, self.stopping = "being scaled to 0", True
        self.checkpoint("scaling to 0")
        await swarm.scale(env.stack_name, {name: 0 for name in self.replicas})
        await _wait_stopped(swarm, env.stack_name)
        self.state = f"stopped (scaled to 0; was {counts}), data untouched"
        self.done.append(f"✅ scaled to 0 (was {counts})")
        fault_point("restore.scaled_down")
        if still_as_planned is not None:
            # Stopping took a while: what was voted on must still hold before any
            # data is touched (the job's re-check; it raises if it does not).
            await still_as_planned()
        for index, dest in enumerate(self.scope, 1):
            await self._step(f"restoring {self._name(dest)} ({index}/{len(self.scope)})")
            if self.where is not None and self.where.remote:
                await self.owner.restore_remote(
                    env, self.where, self.snap.id, dest, self.token, self.aside[dest]
                )
            else:
                await self.owner._restore_one(self.snap, dest, self.token, self.aside[dest])
            self.replaced.append(dest)
            self.state = f"stopped; {index} of {len(self.scope)} path(s) restored"
            self.done.append(f"✅ restored {self._name(dest)}")
            self.checkpoint(f"{index} of {len(self.scope)} path(s) swapped in")
            fault_point("restore.swapped")
        await self._step(f"scaling back to {counts}")
        fault_point("restore.before_scale_up")
        self.restarted = True
        self.checkpoint("scaling back up")
        await swarm.scale(env.stack_name, self.replicas)
        self.state = "restored, starting again"
        result = await swarm.wait_converged(env.stack_name, timeout=float(env.timeout or 300))
        if not result.ok:
            self.state = "restored, but not running: " + "; ".join(result.failures[:5])
            raise UserError("the app did not come back up")
        self.done.append(f"✅ running again ({counts})")
        self.state = "restored and running"
        await self._hooks("post")

    async def recover(self, error: BaseException) -> str:
        """After any failure: scale back if the app was stopped, then the report."""
        why = _why(error)
        if self.stopping and not self.restarted:
            counts = _counts(self.replicas)
            try:
                await _shielded(self.swarm.scale(self.env.stack_name, self.replicas))
                data = (
                    f"{len(self.replaced)} of {len(self.scope)} path(s) restored"
                    if self.replaced
                    else "its own data, untouched"
                )
                self.state = f"scaled back to {counts}, on {data}"
                self.done.append(f"↩ scaled back to {counts}")
            except Exception as e:  # the report must still be made
                self.state += (
                    f"; scaling back to {counts} failed ({e}): "
                    f"`{self.prefix}deploy {self.env.domain}` starts it again"
                )
        remote = self.where.hostname if self.where is not None and self.where.remote else ""
        where = "".join(
            f"\n- the data it replaced is kept at `{a}`" + (f" on {remote}" if remote else "")
            for d, a in self.aside.items()
            if a.exists() or (remote and d in self.replaced)
        )
        paths = ""
        if self.stopping:
            untouched = [d for d in self.scope if d not in self.replaced]
            paths = "\n\nReplaced: " + (
                ", ".join(f"`{self._name(d)}`" for d in self.replaced) or "nothing"
            )
            paths += "; not replaced: " + (
                ", ".join(f"`{self._name(d)}`" for d in untouched) or "nothing"
            )
            paths += "."
        self.owner.store.audit(
            self.actor, "restore.failed", f"{self.snap.short_id}: {why}"[:500], app=self.env.domain
        )
        return (
            "\n".join([self.title, "", *self.done])
            + paths
            + f"\n\n❌ {why}\n**State of {self.env.domain}:** {self.state}.{where}"
        )


def _why(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "the restore was cancelled (or its time ran out)"
    if isinstance(error, (UserError, OSError)):
        return str(error)
    return f"an unexpected error ({type(error).__name__}); the bot's log has the details"


async def _shielded(aw: Awaitable[T]) -> T:
    """Finish clean-up even when the task is being cancelled (a second cancel, as at a
    shutdown, waits for it rather than leaving it half done)."""
    task: asyncio.Future[T] = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        return await task


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
