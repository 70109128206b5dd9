"""When the data disk is full, SQLite answers SQLITE_FULL to every write.

The store's connection (bot/core/store.py connects with `factory=Guarded`) then sorts
the writes into two kinds. Bookkeeping that only makes the bot better informed is
dropped with one logged error: the seen-event marks (kept in memory instead, so
an event is still answered once per run), the key/value state (the sync token, a
job's thread) and the audit. Everything else, which is what a job or a vote stands
on (its record, its state, a proposal), raises StoreFull: a UserError, so the member
is told that nothing was started, and read-only commands go on answering.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, cast

from bot.errors import UserError

log = logging.getLogger(__name__)

# The statements whose loss costs only bookkeeping (see the module docstring).
_SOFT = ("INSERT OR IGNORE INTO seen_events", "INSERT INTO kv", "INSERT INTO audit")
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class StoreFull(UserError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            "💾 The bot cannot record this: the disk of its data folder is full "
            f"(SQLite: {detail}). Nothing was started. Commands that only read still "
            "answer; free space where the bot keeps its data (data_dir), then ask again."
        )


class _Dropped:
    """What a dropped bookkeeping write returns in place of a cursor."""

    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount
        self.lastrowid = None

    def fetchone(self) -> None:
        return None


class Guarded(sqlite3.Connection):
    """A connection that knows a full disk from other errors (see the docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.full = False
        self._seen: set[str] = set()  # event ids marked while the disk was full

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            cursor = super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            return self._when_full(sql, parameters, exc)
        if self.full and sql.lstrip().upper().startswith(_WRITES):
            log.warning("the data disk takes writes again")
            self.full = False
        return cursor

    def _when_full(
        self, sql: str, parameters: Any, exc: sqlite3.OperationalError
    ) -> sqlite3.Cursor:
        if not self.full:
            log.error("the data disk is full (%s): nothing new can be recorded", exc)
        self.full = True
        text = " ".join(sql.split())
        if not text.startswith(_SOFT):
            raise StoreFull(str(exc)) from exc
        if text.startswith(_SOFT[0]):  # mark_seen: new (1) or already seen (0)
            event_id = str(parameters[0])
            new = event_id not in self._seen
            self._seen.add(event_id)
            return cast(sqlite3.Cursor, _Dropped(1 if new else 0))
        return cast(sqlite3.Cursor, _Dropped(1))


def connect(path: str) -> Guarded:
    """The store's connection: autocommit, rows by name, WAL, foreign keys on."""
    db = sqlite3.connect(path, isolation_level=None, factory=Guarded)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    return db
