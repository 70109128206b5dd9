"""A full data disk (bot/core/storefull.py): bookkeeping writes are dropped, what a
job stands on is refused with a sentence, reads go on. SQLite's own limit on the
database size (PRAGMA max_page_count) gives the same SQLITE_FULL as a full disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.store import Store
from bot.core.storefull import StoreFull


def _fill(store: Store) -> None:
    db = store._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    for n in range(10_000):  # until the table would grow past the limit: full now
        try:
            store.add_job("x", "!x " + "y" * 2000, None, "@a:test", "!r:test", f"$e{n}")
        except StoreFull:
            return
    raise AssertionError("the database never filled up")


def test_a_full_disk_refuses_jobs_drops_bookkeeping_and_keeps_reads(tmp_path: Path) -> None:
    store = Store(tmp_path / "coopbot.db")
    store.put("kept", "before")
    assert store.mark_seen("$old", "!r:test")
    _fill(store)
    with pytest.raises(StoreFull, match="Nothing was started") as refused:
        store.add_job("deploy", "!deploy " + "a" * 3000, "a", "@a:test", "!r:test", "$new")
    assert "disk of its data folder is full" in str(refused.value)
    store.audit("@a:test", "command", "!ping " + "z" * 5000)  # dropped, not raised
    store.put("kept", "after" * 1000)  # kept in memory: read back (a sync token moves on)
    assert store.get("kept") == "after" * 1000
    assert store.get("other") is None
    assert store.mark_seen("$fresh", "!r:test")  # answered once...
    assert not store.mark_seen("$fresh", "!r:test")  # ...and only once
    assert not store.mark_seen("$old", "!r:test")
    assert store.jobs(limit=1)  # reads work
    store._db.execute("PRAGMA max_page_count = 1000000")  # space again
    store.add_job("deploy", "!deploy " + "a" * 3000, "a", "@a:test", "!r:test", "$later")
    store.close()
    assert Store(tmp_path / "coopbot.db").get("kept") == "after" * 1000  # written since
