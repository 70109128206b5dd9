"""Backups with restic, driven by the recipes' backupbot labels.

One feature in four parts, each a module with one job, joined into `Backups`:
- targets.py: what an app's backup covers, read from its labels, volumes and mounts;
- repository.py: the restic repository's first use, its snapshots and each app's state;
- run.py: a backup run (settle, hooks, restic, record), retention, check and drill;
- restore.py: the restore procedure (restore aside, scale to 0, swap, scale back).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from pathlib import Path

from bot.config import BackupsConfig
from bot.core.metrics import Metrics
from bot.core.store import Store
from bot.errors import UserError
from bot.features.apps import Apps
from bot.features.backups import health
from bot.features.backups.repository import (
    AppBackupState,
    restic_environment,
    snapshot_app,
    snapshot_tag,
)
from bot.features.backups.restore import Restores, _in_stack_volume, restore_scope
from bot.features.backups.run import BackupOutcome, Runs, progress_line
from bot.features.backups.targets import APP_TAG, COOPBOT_TAG, BackupTarget, tree_totals
from bot.ops.restic import Restic
from bot.ops.swarm import Swarm

__all__ = [
    "APP_TAG",
    "COOPBOT_TAG",
    "AppBackupState",
    "BackupOutcome",
    "BackupTarget",
    "Backups",
    "_in_stack_volume",
    "progress_line",
    "restic_environment",
    "restore_scope",
    "snapshot_app",
    "snapshot_tag",
    "tree_totals",
]


class Backups(Restores, Runs):
    """Backups of every labelled app into one restic repository."""

    def __init__(
        self,
        config: BackupsConfig,
        apps: Apps,
        store: Store,
        restic: Restic,
        *,
        data_dir: Path | None = None,
        metrics: Metrics | None = None,
        node_swarms: Mapping[str, Mapping[str, Swarm]] | None = None,
    ) -> None:
        self.config = config
        self.apps = apps
        self.store = store
        self._data_dir = data_dir or Path(tempfile.gettempdir())
        self.restic = restic
        self._metrics = metrics
        self.node_swarms = node_swarms or {}  # hooks on other nodes (remote.py)
        if metrics is not None:  # known after a restart too, not only after the next run
            for app, runs in store.last_backups().items():
                good = runs["good"]
                if good is not None:
                    when = good["finished_at"] or good["started_at"]
                    metrics.backup_last_good.labels(app).set(when)
            health.gauges(store, metrics)
        self._repo_ready = False
        self._repo_created = False
        self._repo_lock = asyncio.Lock()  # two first uses at once must not both init

    def accept(self, app: str, actor: str) -> str:
        """`!backup accept`: the app's newest run is its normal size; retention resumes."""
        try:
            text = health.accept(self.store, app, actor)
        except LookupError:
            raise UserError(f"{app} has no recorded backup with a snapshot to accept.") from None
        if self._metrics is not None:
            self._metrics.backup_retention_paused.labels(app).set(0)
        return text
