"""Backups that hold data, on the real swarm volume with real restic in a real room: an
emptied volume makes the next backup a ⚠ (suspect) and retention keeps the snapshot
before it; `!backup accept` takes the new size as normal and retention resumes.

Uses the stack and the `site` fixture of test_backups_swarm (one busybox service with
data/config/cache volumes; bob is an operator)."""

from __future__ import annotations

import shutil

from tests.integration.test_backups_swarm import DOMAIN, Site, site, stack  # noqa: F401


async def test_an_emptied_volume_is_suspect_and_holds_retention(site: Site) -> None:  # noqa: F811
    coop = site.coop
    first = await site.run(coop.bob, f"!backup {DOMAIN}", "snapshot `")
    assert first.startswith("✅"), first
    (good,) = await site.repo.snapshots()

    # The data volume loses everything (the pre-hook then writes its one line again).
    data = site.volume("data")
    for path in data.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    second = await site.run(coop.bob, f"!backup {DOMAIN}", "snapshot `")
    assert second.startswith("⚠️"), second
    assert "**Suspect**" in second, second
    assert "its size dropped by" in second, second
    assert "before," in second, second
    assert "now" in second, second
    assert len(await site.repo.snapshots()) == 2

    # Retention (daily 7: one snapshot a day) would drop the good one of today: not now.
    kept = await site.run(coop.bob, "!backup prune", "Retention (")
    assert f"⏸ Kept every snapshot of {DOMAIN}" in kept, kept
    assert good.id in [s.id for s in await site.repo.snapshots()]
    table = await coop.ask(coop.carol, "!backups", DOMAIN)
    assert "⏸ retention paused" in table, table
    assert "holds no files" in table or "dropped by" in table, table
    assert "KiB" in table.splitlines()[2].split("|")[5], table  # the repository size

    # A viewer may not accept; an operator does, and retention resumes.
    refused = await coop.ask(coop.carol, f"!backup accept {DOMAIN}", "operator")
    assert "Retention resumed" not in refused
    accepted = await site.run(coop.bob, f"!backup accept {DOMAIN}", "Retention resumed")
    assert DOMAIN in accepted
    pruned = await site.run(coop.bob, "!backup prune", "Retention (")
    assert "⏸" not in pruned, pruned
    remaining = [s.id for s in await site.repo.snapshots()]
    assert good.id not in remaining
    assert len(remaining) == 1
