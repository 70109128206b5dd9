"""When the data disk is full, SQLite answers SQLITE_FULL to every write.

The store's connection (bot/core/store.py connects with `factory=Guarded`) then sorts
the writes into two kinds. Bookkeeping that only makes the bot better informed is
kept in memory instead, with one logged error: the seen-event marks (so an event
is still answered once per run) and the key/value state (the sync token above all: a
token that did not advance would fetch the same events again and again); the audit
is dropped. Everything else, which is what a job or a vote stands
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
# Store.get and Store.put, as store.py words them.
_KV_READ = "SELECT value FROM kv WHERE key = ?"
_KV_WRITE = (
    "INSERT INTO kv (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class StoreFull(UserError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            "💾 The bot cannot record this: the disk of its data folder is full "
            f"(SQLite: {detail}). Nothing was started. Commands that only read still "
            "answer; free space where the bot keeps its data (data_dir), then ask again."
        )


class _Dropped:
    """What a dropped bookkeeping write returns in place of a cursor."""

    def __init__(self, rowcount: int, row: tuple[str] | None = None) -> None:
        self.rowcount = rowcount
        self.lastrowid = None
        self._row = row

    def fetchone(self) -> tuple[str] | None:
        return self._row


class Guarded(sqlite3.Connection):
    """A connection that knows a full disk from other errors (see the docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.full = False
        self._seen: set[str] = set()  # event ids marked while the disk was full
        self._kv: dict[str, str] = {}  # key/value writes made while the disk was full

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if self._kv and sql.startswith(_KV_READ) and parameters[0] in self._kv:
            return cast(sqlite3.Cursor, _Dropped(1, (self._kv[parameters[0]],)))
        try:
            cursor = super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            return self._when_full(sql, parameters, exc)
        if self.full and sql.lstrip().upper().startswith(_WRITES):
            log.warning("the data disk takes writes again")
            self.full = False
            pending, self._kv = self._kv, {}
            for key, value in pending.items():  # what was kept in memory is written now
                self.execute(_KV_WRITE, (key, value))
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
        if text.startswith(_SOFT[1]):  # put: read back from memory until written
            self._kv[str(parameters[0])] = str(parameters[1])
        return cast(sqlite3.Cursor, _Dropped(1))


def connect(path: str) -> Guarded:
    """The store's connection: autocommit, rows by name, WAL, foreign keys on."""
    db = sqlite3.connect(path, isolation_level=None, factory=Guarded)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    return db
