"""The restic repository: created on first use, and what it holds per app.

Every snapshot the bot makes is tagged `coopbot` and `app=<domain>`, so the
repository can be shared with other tools and still be read app by app. The
store keeps each run's record (size, failure), which `!backups` joins with the
snapshots to show each app's state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from bot.core.metrics import Metrics
from bot.core.store import Store
from bot.errors import UserError
from bot.features.backups import health
from bot.features.backups.targets import APP_TAG, COOPBOT_TAG, Targets
from bot.fmt import utc_time
from bot.ops.abra import AppEnv
from bot.ops.dotenv import as_dict, read_file
from bot.ops.restic import Restic, ResticError, Snapshot

log = logging.getLogger(__name__)


def _listed(snap: Snapshot, ids: set[str]) -> bool:
    # restic 0.14 reports short ids, later ones full ids: compare prefixes.
    return any(snap.id.startswith(i) or i.startswith(snap.id) for i in ids)


def skipped_note(app: str, skipped: list[tuple[Snapshot, str]], prefix: str = "!") -> str:
    """A restore plan's line on the newer snapshots `pick_snapshot` passed over."""
    listed = ", ".join(f"`{s.short_id}` ({utc_time(s.time)}, {why})" for s, why in skipped[:5])
    listed += f" and {len(skipped) - 5} older" if len(skipped) > 5 else ""
    newest = skipped[0][0].short_id
    return (
        f"⚠ Newer snapshots were skipped, as not good: {listed}. To restore one of them "
        f"anyway, name it: `{prefix}restore {app} {newest}`."
    )


@dataclass(frozen=True)
class AppBackupState:
    """One line of `!backups`."""

    app: str
    newest: Snapshot | None
    size: int | None  # of the newest good run, when the store knows it
    last_failed: str | None  # the last run's error, if it failed
    age: float | None  # seconds since the newest snapshot
    # The newest run made an incomplete snapshot (restic exit 3: unreadable files):
    # its first warning. Such a snapshot is never the "newest good" one.
    incomplete: str | None = None
    # Retention waits for `!backup accept` after a suspect backup: why (health.py).
    paused: str | None = None
    repository: str = "?"  # the app's repository size and growth (restic stats)

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


# A run whose snapshot is incomplete (restic exit 3, or a target that did not exist).
PARTIAL = "partial"
GOOD_RESULTS = ("ok", "warning")  # "warning": hooks or labels; the snapshot is whole


def restic_environment(path: Path | None) -> dict[str, str]:
    """restic's extra environment (S3 keys and the like) from `backups.env_file`, read
    by the project's one .env reader (godotenv's rules, as abra's files)."""
    return {} if path is None else as_dict(read_file(path))


class Repository(Targets):
    """The part of `Backups` that knows the repository: first use, and its snapshots."""

    store: Store
    restic: Restic
    _data_dir: Path
    _metrics: Metrics | None
    _repo_ready: bool
    _repo_created: bool
    _repo_lock: asyncio.Lock

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

    async def snapshots(self, env: AppEnv) -> list[Snapshot]:
        return await self._snapshots(APP_TAG + env.domain)

    async def newest_snapshot(self, env: AppEnv) -> str | None:
        """The app's newest complete snapshot (an incomplete one restores only part)."""
        partial = self._partial_ids(env.domain)
        found = [s for s in await self.snapshots(env) if not _listed(s, partial)]
        return found[-1].id if found else None

    async def _newest_per_app(self) -> dict[str, Snapshot]:
        """Each app's newest complete snapshot: incomplete ones (restic exit 3) do not
        count for `max_age`, the drill or the metrics."""
        newest: dict[str, Snapshot] = {}
        partial: dict[str, set[str]] = {}
        for snap in await self._snapshots(COOPBOT_TAG):  # oldest first: the last one wins
            app = snapshot_app(snap)
            if app is None:
                continue
            if app not in partial:
                partial[app] = self._partial_ids(app)
            if not _listed(snap, partial[app]):
                newest[app] = snap
        return newest

    def _partial_ids(self, app: str) -> set[str]:
        """The snapshot ids of the app's runs that were incomplete, or suspect (empty or
        shrunk, not accepted yet: health.py): never the newest good one (the store's
        record)."""
        return {
            str(row["snapshot_id"])
            for row in self.store.backups(app, limit=500)
            if row["result"] in (PARTIAL, health.SUSPECT) and row["snapshot_id"]
        }

    def retention_paused(self, app: str) -> str | None:
        """Why retention leaves this app alone, or None. After an incomplete backup it
        waits for a clean one: forgetting by count could drop the last whole snapshots
        and keep only incomplete ones. After a suspect one (empty, shrunk: health.py)
        it waits for a person to accept the new size."""
        if (why := health.paused(self.store, app)) is not None:
            return "its backups look like data went missing, until `backup accept`: " + why
        for row in self.store.backups(app, limit=500):  # newest first
            if row["result"] in GOOD_RESULTS:
                return None
            if row["result"] == PARTIAL:
                return "its newest backup is incomplete (restic could not read every file)"
        return None

    async def find_snapshot(
        self, env: AppEnv, snapshot_id: str | None, prefix: str = "!"
    ) -> Snapshot:
        """The app's snapshot with this id (or short id), or its newest good one."""
        return (await self.pick_snapshot(env, snapshot_id, prefix))[0]

    async def pick_snapshot(
        self, env: AppEnv, snapshot_id: str | None, prefix: str = "!"
    ) -> tuple[Snapshot, list[tuple[Snapshot, str]]]:
        """The app's snapshot with this id (or short id), or its newest good one, with
        the newer snapshots skipped for it (suspect: empty or shrunk, health.py; or
        incomplete) and why: restoring "the newest" must not put an empty dump back.
        A snapshot of another app is refused: restoring it would mix apps' data.
        `prefix`: the command prefix, for the hints."""
        found = await self.snapshots(env)
        if not found:
            raise UserError(f"{env.domain} has no snapshots in {self.restic.display}.")
        if snapshot_id is None:
            unsound = {
                str(row["snapshot_id"]): str(row["result"])
                for row in self.store.backups(env.domain, limit=500)
                if row["result"] in (PARTIAL, health.SUSPECT) and row["snapshot_id"]
            }
            skipped: list[tuple[Snapshot, str]] = []
            for snap in reversed(found):  # newest first
                why = next((r for i, r in unsound.items() if _listed(snap, {i})), None)
                if why is None:
                    return snap, skipped
                skipped.append((snap, "incomplete" if why == PARTIAL else why))
            raise UserError(
                f"{env.domain} has no good snapshot: each one is suspect (empty or shrunk) "
                f"or incomplete. Name the one to restore: `{prefix}snapshots {env.domain}` "
                "lists them."
            )
        for snap in found:
            if snap.id.startswith(snapshot_id) and len(snapshot_id) >= 4:
                return snap, []  # named: taken as asked, suspect or not
        raise UserError(
            f"No snapshot `{snapshot_id[:64]}` of {env.domain}; `{prefix}snapshots "
            f"{env.domain}` lists them."
        )

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
            incomplete = None
            if last and last["result"] == PARTIAL:
                incomplete = (str(last["detail"] or "").splitlines() or ["unreadable files"])[0]
            # restic 0.14 reports short ids, later ones full ids: compare prefixes.
            size = None
            good_id = str(good["snapshot_id"] or "") if good else ""
            if good and found and good_id and found.id.startswith(good_id):
                size = good["total_bytes"]
            age = now - found.time.timestamp() if found else None
            paused = health.paused(self.store, name)
            repo = health.growth_text(*health.growth(self.store, name, now))
            states.append(AppBackupState(name, found, size, failed, age, incomplete, paused, repo))
        return states, problems
