"""bot/core/store.py: the SQLite state."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.core.records import JobState
from bot.core.store import MIGRATIONS, SEEN_RETENTION_S, Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "state" / "coopbot.sqlite")
    yield store
    store.close()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows} - {"sqlite_sequence"}


def test_migrates_an_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "coopbot.sqlite"  # parent folders are created
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS) >= 1
    store.close()
    assert tables(path) == {
        "kv",
        "seen_events",
        "rooms",
        "jobs",
        "proposals",
        "votes",
        "audit",
        "deploys",
        "backups",
        "incidents",  # the swarm watch (issue 15)
        "hook_deliveries",
        "backup_health",  # backups that hold data (issue 15)
        "self_upgrades",  # the bot's upgrade of itself (issue 14)
    }
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_in_memory_store() -> None:
    store = Store(":memory:")
    store.put("k", "v")
    assert store.get("k") == "v"
    store.close()


def test_key_value_and_json(store: Store) -> None:
    assert store.get("sync_token") is None
    store.put("sync_token", "s1")
    store.put("sync_token", "s2")
    assert store.get("sync_token") == "s2"
    store.put_json("state", {"rooms": ["!a:b"], "n": 3})
    assert store.get_json("state") == {"rooms": ["!a:b"], "n": 3}
    assert store.get_json("missing") is None


def test_mark_seen_dedupes(store: Store) -> None:
    assert store.mark_seen("$e1", "!r:test") is True
    assert store.mark_seen("$e1", "!r:test") is False
    assert store.mark_seen("$e1", "!other:test") is False
    assert store.mark_seen("$e2", "!r:test") is True


def test_forget_old_events(store: Store) -> None:
    store.mark_seen("$old", "!r:test")
    store.forget_old_events(now=10**12)  # far in the future: everything is old
    assert store.mark_seen("$old", "!r:test") is True
    store.forget_old_events()  # just seen: kept
    assert store.mark_seen("$old", "!r:test") is False
    assert SEEN_RETENTION_S >= 86400


def test_room_joined_at_is_set_once(store: Store) -> None:
    assert store.room_joined_at("!r:test") is None
    store.set_room_joined_at("!r:test", 1000)
    store.set_room_joined_at("!r:test", 2000)
    assert store.room_joined_at("!r:test") == 1000


def test_job_lifecycle(store: Store) -> None:
    job_id = store.add_job("deploy", "!deploy a", "a", "@u:test", "!r:test", "$e")
    row = store.job(job_id)
    assert row is not None
    assert (row.command, row.text, row.app, row.state) == ("deploy", "!deploy a", "a", "waiting")
    assert row.started_at is None
    assert row.finished_at is None

    store.set_job_state(job_id, JobState.RUNNING)
    row = store.job(job_id)
    assert row is not None
    assert row.state == "running"
    assert row.started_at is not None

    store.set_job_state(job_id, JobState.DONE, "ok")
    row = store.job(job_id)
    assert row is not None
    assert (row.state, row.result) == ("done", "ok")
    assert row.started_at is not None
    assert row.finished_at is not None
    assert row.finished_at >= row.started_at
    assert store.job(job_id + 1) is None


def test_jobs_filter_by_state_newest_first(store: Store) -> None:
    ids = [store.add_job("c", f"!c {n}", None, "@u:test", "!r:test", f"$e{n}") for n in range(4)]
    store.set_job_state(ids[0], JobState.DONE, "ok")
    store.set_job_state(ids[2], JobState.RUNNING)
    assert [row.id for row in store.jobs()] == ids[::-1]
    assert [row.id for row in store.jobs(limit=2)] == [ids[3], ids[2]]
    assert [row.id for row in store.jobs((JobState.WAITING, JobState.RUNNING))] == [
        ids[3],
        ids[2],
        ids[1],
    ]
    assert [row.id for row in store.jobs((JobState.DONE,))] == [ids[0]]


def test_interrupt_unfinished_jobs(store: Store) -> None:
    waiting = store.add_job("a", "!a", "x", "@u:test", "!r:test", "$1")
    running = store.add_job("b", "!b", "y", "@u:test", "!r:test", "$2")
    done = store.add_job("c", "!c", None, "@u:test", "!r:test", "$3")
    store.set_job_state(running, JobState.RUNNING)
    store.set_job_state(done, JobState.DONE, "ok")

    interrupted = store.interrupt_unfinished_jobs()

    assert sorted(job.id for job in interrupted) == [waiting, running]
    for job_id in (waiting, running):
        row = store.job(job_id)
        assert row is not None
        assert row.state == "interrupted"
        assert row.result == "the bot stopped while this job was open"
    row = store.job(done)
    assert row is not None
    assert row.state == "done"
    assert store.interrupt_unfinished_jobs() == []


def test_audit_log_filters_by_app_newest_first(store: Store) -> None:
    store.audit("@a:test", "command", "!status")
    store.audit("@a:test", "job.done", "#1 deploy", app="cloud.test", room_id="!r", event_id="$1")
    store.audit("@b:test", "job.failed", "#2 deploy", app="wiki.test")
    store.audit("@b:test", "cancel", "#3", app="cloud.test")

    assert [row.action for row in store.audit_log()] == [
        "cancel",
        "job.failed",
        "job.done",
        "command",
    ]
    cloud = store.audit_log("cloud.test")
    assert [(row.actor, row.action) for row in cloud] == [
        ("@b:test", "cancel"),
        ("@a:test", "job.done"),
    ]
    assert (cloud[1].room_id, cloud[1].event_id, cloud[1].detail) == ("!r", "$1", "#1 deploy")
    assert [row.action for row in store.audit_log(limit=1)] == ["cancel"]
    assert store.audit_log("nothing.test") == []


def test_deploy_history(store: Store) -> None:
    first = store.add_deploy("cloud.test", "1.0.0+1", "@u:test", "ok", server="s1")
    second = store.add_deploy(
        "cloud.test", "1.1.0+2", "@u:test", "failed", previous_version="1.0.0+1", chaos=True
    )
    store.add_deploy("wiki.test", "3.0.0", "@u:test", "ok")
    rows = store.deploys("cloud.test")
    assert [row["id"] for row in rows] == [second, first]
    assert (rows[0]["chaos"], rows[0]["previous_version"], rows[0]["result"]) == (
        1,
        "1.0.0+1",
        "failed",
    )


def test_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "coopbot.sqlite"
    store = Store(path)
    store.put("sync_token", "s42")
    store.mark_seen("$e", "!r:test")
    job_id = store.add_job("c", "!c", None, "@u:test", "!r:test", "$e")
    store.audit("@u:test", "command", "!c")
    store.close()

    again = Store(path)
    assert again.schema_version == len(MIGRATIONS)
    assert again.get("sync_token") == "s42"
    assert again.mark_seen("$e", "!r:test") is False
    assert [row.id for row in again.jobs()] == [job_id]
    assert [row.detail for row in again.audit_log()] == ["!c"]
    assert again.add_job("d", "!d", None, "@u:test", "!r:test", "$f") == job_id + 1
    again.close()


def test_a_database_from_a_newer_coopbot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "coopbot.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this coopbot") as caught:
        Store(path)
    assert "upgrade coopbot" in str(caught.value)
    # ...and nothing was changed by trying.
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1


def test_migrations_run_from_an_older_version(tmp_path: Path) -> None:
    # A database at version 0 that already has unrelated data gets every migration.
    path = tmp_path / "coopbot.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE unrelated (x)")
        db.execute("INSERT INTO unrelated VALUES (1)")
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    assert "unrelated" in tables(path)


def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "coopbot.sqlite"
    Store(path).close()
    broken = "CREATE TABLE half_done (x); CREATE TABL oops (y)"
    monkeypatch.setattr("bot.core.store.MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(sqlite3.OperationalError):
        Store(path)
    assert "half_done" not in tables(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
