"""Backups that hold data (bot/features/backups/health.py): the pure assessment, the
baseline and pause in the store, a suspect run through Backups over fakes, retention
kept while paused, `!backup accept`, the repository size and growth, the metrics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.core.metrics import Metrics
from bot.core.store import Store
from bot.features.backups import Backups, health
from bot.features.backups.health import Sizes, assess
from bot.ops.restic import BackupSummary, ResticError, parse_stats
from tests.fakes import SUMMARY
from tests.unit.helpers import OPERATOR, BotFactory
from tests.unit.test_backups import (
    ADMINS,
    LABELLED,
    MEMBERS,
    Sink,
    make_site,
    scheduled,
    snap,
    wire,
)

MiB = 1024 * 1024


def sample(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"app": "a.test"})


# ================================================================ pure


def test_assess_a_normal_run_is_fine() -> None:
    assert assess(Sizes(10, 100 * MiB, 5000), Sizes(11, 60 * MiB, 4000), 0.5) == []


def test_assess_without_baseline_only_an_empty_snapshot_is_suspect() -> None:
    assert assess(None, Sizes(3, 10, None), 0.5) == []
    assert assess(None, Sizes(0, 0, None), 0.5) == ["the snapshot holds no files"]


def test_assess_no_files_names_the_numbers_before() -> None:
    (why,) = assess(Sizes(6, 2 * MiB, None), Sizes(0, 0, None), 0.5)
    assert why == "the snapshot holds no files (accepted before: 6 files, 2.0 MiB)"


@pytest.mark.parametrize(("now", "suspect"), [(50 * MiB, False), (49 * MiB, True)])
def test_assess_a_drop_beyond_the_share(now: int, suspect: bool) -> None:
    reasons = assess(Sizes(10, 100 * MiB), Sizes(10, now), 0.5)
    assert bool(reasons) is suspect
    if suspect:
        assert reasons == [
            "its size dropped by 51%: 10 files, 100.0 MiB before, 10 files, 49.0 MiB now "
            "(a drop beyond 50% is a ⚠)"
        ]


def test_assess_a_silent_dump_hook() -> None:
    (why,) = assess(Sizes(2, MiB, 4096), Sizes(2, MiB, 0), 0.5)
    assert "pre-hook printed nothing, where it printed 4096 B before" in why
    # A hook that never printed, or no hook now (label removed): nothing to compare.
    assert assess(Sizes(2, MiB, 0), Sizes(2, MiB, 0), 0.5) == []
    assert assess(Sizes(2, MiB, 4096), Sizes(2, MiB, None), 0.5) == []


def test_parse_stats() -> None:
    text = '{"total_size":100542,"total_file_count":0,"total_blob_count":3,"snapshots_count":1}'
    assert parse_stats(text) == 100542
    assert parse_stats('{"total_size":0,"total_file_count":0,"snapshots_count":0}') == 0
    with pytest.raises(ResticError):
        parse_stats("Fatal: nope")


# ================================================================ store


def test_the_migration_adds_the_columns_and_the_table(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    run = store.add_backup("a.test", OPERATOR, "ok", hook_bytes=12, snapshot_id="x")
    store.set_backup_repo_bytes(run, 99)
    (row,) = store.backups("a.test")
    assert (row["hook_bytes"], row["repo_bytes"]) == (12, 99)
    assert store.backup_health("a.test") is None
    store.set_backup_health("a.test", files=1, bytes=2, hook_bytes=None)
    store.set_backup_health("a.test", paused="why")
    row2 = store.backup_health("a.test")
    assert row2 is not None
    assert (row2["files"], row2["bytes"], row2["paused"]) == (1, 2, "why")
    with pytest.raises(ValueError, match="unknown"):
        store.set_backup_health("a.test", at=1.0)
    store.close()
    again = Store(tmp_path / "s.sqlite")  # reopening migrates nothing twice
    assert again.backup_health("a.test") is not None
    again.close()


# ================================================================ through Backups


def shrunk(files: int, total: int) -> BackupSummary:
    return dataclasses.replace(
        SUMMARY, files_new=0, files_changed=0, files_unmodified=files, total_bytes_processed=total
    )


async def test_an_emptied_app_is_a_suspect_run_and_pauses_its_retention(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.backups._metrics = metrics = Metrics()
    env = site.add(labels=LABELLED, volumes={"data": {"f": b"x"}})
    site.restic.stats_bytes = {"app=a.test": 3 * MiB}
    first = await site.backups.backup(env, Sink(), OPERATOR)
    assert first.report.startswith("✅")
    assert health.baseline(site.store, "a.test") == Sizes(6, 2 * MiB, None)

    site.restic.summary = shrunk(0, 0)
    second = await site.backups.backup(env, Sink(), OPERATOR)
    assert second.report.startswith("⚠️")
    assert "**Suspect**" in second.report
    assert "the snapshot holds no files (accepted before: 6 files, 2.0 MiB)" in second.report
    rows = site.store.backups("a.test")
    assert [r["result"] for r in rows] == ["suspect", "ok"]
    # The baseline stays the accepted one; retention of the app is paused.
    assert health.baseline(site.store, "a.test") == Sizes(6, 2 * MiB, None)
    assert "data went missing" in (site.backups.retention_paused("a.test") or "")
    assert sample(metrics, "coopbot_backup_retention_paused") == 1
    assert sample(metrics, "coopbot_backup_repository_bytes") == 3 * MiB
    assert metrics.registry.get_sample_value("coopbot_backups_total", {"result": "suspect"}) == 1

    site.restic.snaps = [snap("a1111111"), snap("a2222222")]
    report = await site.backups.retention(Sink())
    assert site.restic.forgotten == []
    assert "⏸ Kept every snapshot of a.test (its backups look like data went missing" in report

    # A normal run while paused: ✅, but the pause stays until a person accepts.
    site.restic.summary = SUMMARY
    third = await site.backups.backup(env, Sink(), OPERATOR)
    assert third.report.startswith("✅")
    assert "stays paused" in third.report
    assert site.backups.retention_paused("a.test") is not None

    site.restic.summary = shrunk(1, 10)
    await site.backups.backup(env, Sink(), OPERATOR)
    text = site.backups.accept("a.test", OPERATOR)
    assert text == "▶️ Retention resumed for **a.test**; its normal size is now 1 files, 10 B."
    assert site.backups.retention_paused("a.test") is None
    assert health.baseline(site.store, "a.test") == Sizes(1, 10, None)
    assert sample(metrics, "coopbot_backup_retention_paused") == 0
    # Accepted: the suspect runs count as good ones from now on.
    assert "suspect" not in [r["result"] for r in site.store.backups("a.test")]
    (audit,) = [a for a in site.store.audit_log("a.test") if a.action == "backup.accept"]
    assert "was: a suspect backup" in audit.detail
    await site.backups.retention(Sink())
    assert site.restic.forgotten == [["app=a.test", "7/4/6", "group_by=''"]]
    site.store.close()


async def test_a_silent_dump_hook_is_suspect(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    hook = {**LABELLED, "backupbot.backup.pre-hook": "pg_dumpall"}
    env = site.add(labels=hook, volumes={"data": {"f": b"x"}})
    site.swarm.hooks["pg_dumpall"] = (0, "x" * 4000)
    assert (await site.backups.backup(env, Sink(), OPERATOR)).report.startswith("✅")
    assert site.store.backups("a.test")[0]["hook_bytes"] == 4000
    site.swarm.hooks["pg_dumpall"] = (0, "")
    outcome = await site.backups.backup(env, Sink(), OPERATOR)
    assert "pre-hook printed nothing, where it printed 4000 B before" in outcome.report
    assert site.store.backups("a.test")[0]["result"] == "suspect"
    site.store.close()


async def test_a_failing_restic_stats_does_not_fail_the_backup(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = site.add(labels=LABELLED, volumes={"data": {"f": b"x"}})
    site.restic.stats_error = ResticError("boom")
    outcome = await site.backups.backup(env, Sink(), OPERATOR)
    assert outcome.report.startswith("✅")
    assert site.store.backups("a.test")[0]["repo_bytes"] is None
    site.store.close()


async def test_accept_without_any_run_is_refused(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    with pytest.raises(Exception, match="no recorded backup"):
        site.backups.accept("a.test", OPERATOR)
    site.store.close()


def test_growth_over_the_window(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.sqlite")
    assert health.growth(store, "a.test") == (None, None, None)
    day = 86400.0
    for at, size in ((0, 100), (2 * day, 150), (9 * day, 400), (10 * day, 500)):
        run = store.add_backup("a.test", OPERATOR, "ok", started_at=at, snapshot_id="s")
        store.set_backup_repo_bytes(run, size)
    # From the newest (day 10) back to the first run at least 7 days older (day 2).
    assert health.growth(store, "a.test", now=10 * day) == (500, 350, 8 * day)
    assert health.growth_text(500, 350, 8 * day).startswith("500 B (+350 B in ")
    assert health.growth_text(500, None, None) == "500 B"
    assert health.growth_text(None, None, None) == "?"
    store.close()


async def test_backups_table_shows_the_repository_and_the_pause(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = site.add(labels=LABELLED, volumes={"data": {"f": b"x"}})
    site.restic.stats_bytes = {"app=a.test": 5 * MiB}
    await site.backups.backup(env, Sink(), OPERATOR)
    site.restic.summary = dataclasses.replace(shrunk(0, 0), snapshot_id="bbbb2222")
    await site.backups.backup(env, Sink(), OPERATOR)
    site.restic.snaps = [snap("abcd1234"), snap("bbbb2222")]
    states, _ = await site.backups.states()
    (state,) = states
    assert state.repository.startswith("5.0 MiB")
    assert state.paused is not None
    assert "holds no files" in state.paused
    # The suspect (empty) snapshot is not the newest good one: not for the age, the
    # drill or an upgrade's restore hint.
    assert state.newest is not None
    assert state.newest.short_id == "abcd1234"
    assert await site.backups.newest_snapshot(env) == snap("abcd1234").id
    site.store.close()


async def test_the_gauges_are_known_again_after_a_restart(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = site.add(labels=LABELLED, volumes={"data": {"f": b"x"}})
    site.restic.stats_bytes = {"app=a.test": 7 * MiB}
    await site.backups.backup(env, Sink(), OPERATOR)
    site.restic.summary = shrunk(0, 0)
    await site.backups.backup(env, Sink(), OPERATOR)
    assert site.store.backup_gauges() == [("a.test", True, 7 * MiB)]
    metrics = Metrics()
    Backups(site.config, site.apps, site.store, site.restic, metrics=metrics)  # type: ignore[arg-type]
    assert sample(metrics, "coopbot_backup_retention_paused") == 1
    assert sample(metrics, "coopbot_backup_repository_bytes") == 7 * MiB
    site.store.close()


async def test_a_suspect_app_in_the_nightly_run_pings_the_admins(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot(members=MEMBERS)
    site = wire(bot, tmp_path)
    site.add("a.test")
    ((_, mentions),) = await scheduled(bot, "backup all")
    assert mentions == ()
    site.restic.snaps = [snap("a1111111"), snap("abcd1234")]
    site.restic.summary = shrunk(0, 0)
    (report, ping) = await scheduled(bot, "backup all")
    assert "**Suspect**" in report[0]
    assert "⏸ Kept every snapshot of a.test" in report[0]
    assert "⏸ Suspect, retention paused until accepted: a.test" in report[0]
    assert ping[1] == ADMINS
    assert site.restic.forgotten == []
