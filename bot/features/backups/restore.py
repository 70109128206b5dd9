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
from pathlib import Path, PurePosixPath

from bot.errors import UserError
from bot.features.backups.hooks import run_hook
from bot.features.backups.repository import Repository, snapshot_tag
from bot.features.backups.targets import tree_totals
from bot.fmt import human_bytes, utc_time
from bot.ops.abra import AppEnv
from bot.ops.backupbot import backup_specs
from bot.ops.restic import Snapshot
from bot.ops.swarm import Swarm
from bot.ports import StatusSink

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


class Restores(Repository):
    """The part of `Backups` that puts a snapshot back in place of an app's data."""

    async def restore_plan(
        self, env: AppEnv, snapshot_id: str | None, path: str | None, prefix: str = "!"
    ) -> tuple[Snapshot, list[Path], str]:
        """(snapshot, paths replaced, the plan as Markdown)."""
        snap = await self.find_snapshot(env, snapshot_id, prefix)
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
            f"({utc_time(snap.time)}, "
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
        prefix: str = "!",
    ) -> str:
        snap, scope, _ = await self.restore_plan(env, snapshot_id, path, prefix)
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
                    await run_hook(
                        swarm, env, spec.service, spec.restore_pre_hook, "restore pre-hook"
                    )
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
                    f"(scale back with `{prefix}deploy {env.domain}` once fixed)"
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
                    await run_hook(
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
