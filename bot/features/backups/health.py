"""Backups that hold data: a run that "succeeded" with nothing in it is not a ✅.

After each backup the new snapshot's numbers (files, bytes, the pre-hooks' output) are
compared with the app's accepted baseline: no files, a size drop beyond
`backups.size_drop_alert`, or a pre-hook that printed nothing where it used to print
a dump make the run *suspect*. A suspect run is shown with ⚠ and both sets of
numbers, is not counted as a good backup, and pauses the app's retention: forgetting
by count would otherwise drop the last snapshots that hold the data (DBackup 154,
bcgov backup-container 140). `accept` (`!backup accept <app>`, an operator) takes
the newest run as the new normal and resumes retention.

`assess` is pure; the other functions read and write the store's `backup_health`
row of the app (baseline and pause) and its `backups` rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from bot.core.metrics import Metrics
from bot.core.store import Store
from bot.errors import UserError
from bot.fmt import human_age, human_bytes
from bot.ops.restic import BackupSummary, Restic

log = logging.getLogger(__name__)

SUSPECT = "suspect"  # a run's result: a whole snapshot that looks empty or shrunk
GROWTH_WINDOW = 7 * 86400.0  # `!backups` shows the repository growth over this


@dataclass(frozen=True)
class Sizes:
    """What one backup held: files and bytes read, and the pre-hooks' output."""

    files: int
    bytes: int
    hook_bytes: int | None = None  # None: the app has no pre-hook

    def text(self) -> str:
        hook = f", pre-hook printed {self.hook_bytes} B" if self.hook_bytes else ""
        return f"{self.files} files, {human_bytes(self.bytes)}{hook}"


def summary_sizes(summary: BackupSummary, hook_bytes: int | None) -> Sizes:
    files = summary.files_new + summary.files_changed + summary.files_unmodified
    return Sizes(files, summary.total_bytes_processed, hook_bytes)


def run_sizes(row: dict[str, Any]) -> Sizes | None:
    """The sizes of a recorded run (a `backups` row), None if it has no snapshot."""
    if not row.get("snapshot_id") or row.get("total_bytes") is None:
        return None
    files = sum(int(row.get(k) or 0) for k in ("files_new", "files_changed", "files_unmodified"))
    hook = row.get("hook_bytes")
    return Sizes(files, int(row["total_bytes"]), None if hook is None else int(hook))


def assess(baseline: Sizes | None, now: Sizes, drop_share: float) -> list[str]:
    """Why this run looks like it lost data (empty: it does not). `drop_share`: the
    share of the baseline's bytes that may go before it is a ⚠ (0.5: half)."""
    reasons = []
    before = f" (accepted before: {baseline.text()})" if baseline is not None else ""
    if now.files == 0:
        reasons.append(f"the snapshot holds no files{before}")
    elif baseline is not None and baseline.bytes > 0:
        lost = 1 - now.bytes / baseline.bytes
        if lost > drop_share:
            reasons.append(
                f"its size dropped by {lost:.0%}: {baseline.text()} before, {now.text()} now "
                f"(a drop beyond {drop_share:.0%} is a ⚠)"
            )
    if baseline is not None and baseline.hook_bytes and now.hook_bytes == 0:
        reasons.append(
            f"the pre-hook printed nothing, where it printed {baseline.hook_bytes} B before "
            "(a dump that did not happen?)"
        )
    return reasons


def baseline(store: Store, app: str) -> Sizes | None:
    """The app's accepted sizes; for an app backed up before this check existed, its
    newest good run."""
    row = store.backup_health(app)
    if row is not None and row["files"] is not None:
        hook = row["hook_bytes"]
        return Sizes(int(row["files"]), int(row["bytes"] or 0), None if hook is None else hook)
    for run in store.backups(app, limit=50):
        if run["result"] in ("ok", "warning") and (sizes := run_sizes(run)) is not None:
            return sizes
    return None


def judge(store: Store, app: str, now: Sizes, drop_share: float, actor: str) -> list[str]:
    """Compare a new run with the baseline: the reasons it is suspect (and then the
    app's retention is paused, the baseline kept), or [] (and it becomes the
    baseline; a pause stays until a person accepts)."""
    reasons = assess(baseline(store, app), now, drop_share)
    if reasons:
        if paused(store, app) is None:
            why = f"a suspect backup at {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC: "
            store.set_backup_health(
                app, paused=why + "; ".join(reasons), paused_at=time.time(), updated_by=actor
            )
    else:
        store.set_backup_health(
            app, files=now.files, bytes=now.bytes, hook_bytes=now.hook_bytes, updated_by=actor
        )
    return reasons


def paused(store: Store, app: str) -> str | None:
    """Why the app's retention is paused by a suspect backup, or None."""
    row = store.backup_health(app)
    return None if row is None or not row["paused"] else str(row["paused"])


def accept(store: Store, app: str, actor: str) -> str:
    """Take the app's newest run with a snapshot as its normal size and resume its
    retention; the sentence for the room. Raises LookupError without such a run."""
    newest = next(
        (s for run in store.backups(app, limit=50) if (s := run_sizes(run)) is not None), None
    )
    if newest is None:
        raise LookupError(app)
    was = paused(store, app)
    # The suspect runs are taken as they are: good ones from now on (restore, drill, age).
    store.set_backup_results(app, SUSPECT, "warning")
    store.set_backup_health(
        app,
        files=newest.files,
        bytes=newest.bytes,
        hook_bytes=newest.hook_bytes,
        paused=None,
        paused_at=None,
        updated_by=actor,
    )
    store.audit(
        actor, "backup.accept", f"baseline {newest.text()}; was: {was or 'not paused'}", app=app
    )
    head = "▶️ Retention resumed" if was else "Retention was not paused"
    return f"{head} for **{app}**; its normal size is now {newest.text()}."


def note(store: Store, app: str, suspect: list[str]) -> str | None:
    """What the backup report adds about the app's retention, if anything."""
    if suspect:
        return (
            " **Suspect**: not counted as a good backup; retention of this app is paused "
            f"until an operator looks and accepts the new size (`backup accept {app}`)."
        )
    if paused(store, app) is not None:
        return (
            " Retention of this app stays paused after an earlier suspect backup "
            f"(`backup accept {app}`)."
        )
    return None


async def measure(
    restic: Restic, store: Store, metrics: Metrics | None, app: str, tag: str, run_id: int
) -> None:
    """Record the app's repository size after a run (restic stats, raw-data) and set
    the gauges; a failure is logged: the backup itself is done."""
    if metrics is not None:
        metrics.backup_retention_paused.labels(app).set(1 if paused(store, app) else 0)
    try:
        size = await restic.stats([tag])
    except UserError as e:
        log.warning("restic stats for %s failed: %s", app, e)
        return
    store.set_backup_repo_bytes(run_id, size)
    if metrics is not None:
        metrics.backup_repository_bytes.labels(app).set(size)


def gauges(store: Store, metrics: Metrics) -> None:
    """The per-app gauges from the store (at start-up: known before the next backup)."""
    for app, is_paused, repo_bytes in store.backup_gauges():
        metrics.backup_retention_paused.labels(app).set(1 if is_paused else 0)
        if repo_bytes is not None:
            metrics.backup_repository_bytes.labels(app).set(repo_bytes)


def growth(
    store: Store, app: str, now: float | None = None
) -> tuple[int | None, int | None, float | None]:
    """The app's repository size (newest measured), and its growth since the oldest
    measurement within GROWTH_WINDOW (or the newest one before it) with that span in
    seconds; (None, None, None) before any measurement."""
    now = time.time() if now is None else now
    measured = [r for r in store.backups(app, limit=500) if r.get("repo_bytes") is not None]
    if not measured:
        return None, None, None
    newest = measured[0]  # newest first
    since = newest
    for run in measured[1:]:
        since = run
        if now - float(run["started_at"]) >= GROWTH_WINDOW:
            break
    if since is newest:
        return int(newest["repo_bytes"]), None, None
    span = float(newest["started_at"]) - float(since["started_at"])
    return int(newest["repo_bytes"]), int(newest["repo_bytes"]) - int(since["repo_bytes"]), span


def growth_text(size: int | None, delta: int | None, span: float | None) -> str:
    if size is None:
        return "?"
    if delta is None or span is None:
        return human_bytes(size)
    sign = "+" if delta >= 0 else "−"
    return f"{human_bytes(size)} ({sign}{human_bytes(abs(delta))} in {human_age(span)})"
