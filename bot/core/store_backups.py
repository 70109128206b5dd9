"""The store's rows for backups that hold data (bot/features/backups/health.py): each
run's repository size, the per-app accepted baseline and retention pause. A part of
`Store` (store.py is at its size limit), on the same connection."""

from __future__ import annotations

import sqlite3
import time
from typing import Any


class BackupHealthRows:
    _db: sqlite3.Connection

    def set_backup_repo_bytes(self, run_id: int, repo_bytes: int) -> None:
        self._db.execute("UPDATE backups SET repo_bytes = ? WHERE id = ?", (repo_bytes, run_id))

    def set_backup_results(self, app: str, old: str, new: str) -> int:
        """Change the result of the app's runs that have `old` (an accepted suspect
        run becomes a good one); how many."""
        cursor = self._db.execute(
            "UPDATE backups SET result = ? WHERE app = ? AND result = ?", (new, app, old)
        )
        return cursor.rowcount

    def backup_gauges(self) -> list[tuple[str, bool, int | None]]:
        """Per app with a baseline or a measured size: (app, paused, newest repo_bytes),
        what /metrics shows again after a restart."""
        rows = self._db.execute(
            "SELECT app, MAX(paused IS NOT NULL) AS paused, (SELECT repo_bytes FROM backups b"
            " WHERE b.app = a.app AND repo_bytes IS NOT NULL ORDER BY id DESC LIMIT 1)"
            " AS repo FROM (SELECT app, paused FROM backup_health UNION ALL"
            " SELECT DISTINCT app, NULL FROM backups WHERE repo_bytes IS NOT NULL) a"
            " GROUP BY app ORDER BY app"
        )
        return [(row["app"], bool(row["paused"]), row["repo"]) for row in rows]

    def backup_health(self, app: str) -> dict[str, Any] | None:
        """The app's accepted baseline (files, bytes, hook_bytes) and retention pause."""
        row = self._db.execute("SELECT * FROM backup_health WHERE app = ?", (app,)).fetchone()
        return None if row is None else dict(row)

    def set_backup_health(self, app: str, **fields: Any) -> None:
        """Insert or update the app's row; `fields` are columns of `backup_health`."""
        allowed = {"files", "bytes", "hook_bytes", "paused", "paused_at", "updated_by"}
        if set(fields) - allowed:
            raise ValueError(f"unknown backup_health fields: {sorted(set(fields) - allowed)}")
        fields["updated_at"] = time.time()
        columns = ["app", *fields]
        self._db.execute(
            f"INSERT INTO backup_health ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT (app) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in fields),
            (app, *fields.values()),
        )
