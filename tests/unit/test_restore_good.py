# ruff: noqa: F811  (the site fixture is imported from test_backups and used by name)
"""`!restore <app>` without a snapshot id takes the app's newest GOOD snapshot
(bot/features/backups/repository.py pick_snapshot): newer suspect (empty or shrunk,
health.py) or incomplete ones are skipped and the plan names them and how to pick one;
a named snapshot is taken as asked; with no good one at all nothing is guessed."""

from __future__ import annotations

import pytest

from bot.errors import UserError
from bot.features.backups import health
from tests.unit.helpers import OPERATOR
from tests.unit.test_backups import Site, full_id, restorable, site  # noqa: F401 (site: fixture)

SKIPPED = (
    "⚠ Newer snapshots were skipped, as not good: `a1111111` (2024-01-01 03:30 UTC, {why}). "
    "To restore one of them anyway, name it: `!restore a.test a1111111`."
)


@pytest.mark.parametrize(
    ("result", "why"), [(health.SUSPECT, "suspect"), ("partial", "incomplete")]
)
async def test_the_newest_good_one_and_the_plan_says_what_it_skipped(
    site: Site, result: str, why: str
) -> None:
    env = restorable(site)  # a0000000, then a1111111 (the newest)
    site.store.add_backup("a.test", OPERATOR, "ok", snapshot_id="a0000000")
    site.store.add_backup("a.test", OPERATOR, result, snapshot_id=full_id("a1111111"))
    assert (await site.backups.find_snapshot(env, None)).short_id == "a0000000"
    found, _, text = await site.backups.restore_plan(env, None, None)
    assert found.short_id == "a0000000"
    assert text.splitlines()[0].startswith("Restore **a.test** from snapshot `a0000000`")
    assert text.splitlines()[-1] == SKIPPED.format(why=why)
    # Named, the suspect one is restored as asked, and nothing is said to be skipped.
    found, _, text = await site.backups.restore_plan(env, "a111", None)
    assert found.short_id == "a1111111"
    assert "skipped" not in text


async def test_without_suspect_runs_the_newest_and_no_note(site: Site) -> None:
    env = restorable(site)
    site.store.add_backup("a.test", OPERATOR, "ok", snapshot_id=full_id("a1111111"))
    found, _, text = await site.backups.restore_plan(env, None, None)
    assert found.short_id == "a1111111"
    assert "skipped" not in text


async def test_accepted_suspect_runs_count_as_good_again(site: Site) -> None:
    env = restorable(site)
    site.store.add_backup(
        "a.test", OPERATOR, health.SUSPECT, snapshot_id=full_id("a1111111"), total_bytes=0
    )
    assert (await site.backups.find_snapshot(env, None)).short_id == "a0000000"
    health.accept(site.store, "a.test", OPERATOR)
    assert (await site.backups.find_snapshot(env, None)).short_id == "a1111111"


async def test_no_good_snapshot_at_all_is_refused_with_the_way_out(site: Site) -> None:
    env = restorable(site)
    site.store.add_backup("a.test", OPERATOR, "partial", snapshot_id="a0000000")
    site.store.add_backup("a.test", OPERATOR, health.SUSPECT, snapshot_id="a1111111")
    with pytest.raises(UserError) as caught:
        await site.backups.restore_plan(env, None, None)
    assert str(caught.value) == (
        "a.test has no good snapshot: each one is suspect (empty or shrunk) or incomplete. "
        "Name the one to restore: `!snapshots a.test` lists them."
    )
