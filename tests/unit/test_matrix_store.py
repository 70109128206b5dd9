"""bot/ops/matrix_store.py: nio's key store drops a write the full disk refuses (a real
SQLITE_FULL, made by capping the database's page count) instead of raising it out of
the sync; other errors still raise; writes go through again once there is room."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from nio.crypto import OlmAccount
from peewee import OperationalError

from bot.ops.matrix_store import FullDiskStore


def test_a_write_the_full_disk_refuses_is_dropped_and_told_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FullDiskStore("@bot:test", "DEVICE", str(tmp_path), "", "bot.db")
    account = OlmAccount()
    store.save_account(account)
    pages = store.database.execute_sql("PRAGMA page_count").fetchone()[0]
    store.database.execute_sql(f"PRAGMA max_page_count = {pages}")  # no page more: full
    with caplog.at_level(logging.ERROR, "bot.ops.matrix_store"):
        for _ in range(3):
            store.save_encrypted_rooms([f"!room{n}:test" for n in range(2000)])
    assert store.full
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "keeps new keys in memory only" in errors[0].getMessage()
    assert store.load_encrypted_rooms() == set()  # dropped, not half-written

    store.database.execute_sql(f"PRAGMA max_page_count = {pages * 100}")  # room again
    store.save_encrypted_rooms(["!room:test"])
    assert not store.full
    assert store.load_encrypted_rooms() == {"!room:test"}


def test_other_database_errors_still_raise(tmp_path: Path) -> None:
    store = FullDiskStore("@bot:test", "DEVICE", str(tmp_path), "", "bot.db")
    store.save_account(OlmAccount())
    store.database.execute_sql("DROP TABLE encryptedrooms")
    with pytest.raises(OperationalError, match="no such table"):
        store.save_encrypted_rooms(["!room:test"])
    assert not store.full
