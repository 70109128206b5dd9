"""The restore drill checks the free space of its place against the snapshot's size
before it restores anything, and restores into `backups.drill_dir` when set."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from bot.features.backups import space
from tests.unit.test_backups import THREE_DAYS_AGO, Sink, full_id, make_site, snap

Usage = namedtuple("Usage", "total used free")
GiB = 1024**3


def test_the_margin_is_64_mib_or_5_percent() -> None:
    assert space.needed(0) == 64 * 1024 * 1024
    assert space.needed(10 * GiB) == 10 * GiB + GiB // 2


async def test_the_drill_refuses_when_its_place_is_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    place = tmp_path / "scratch"
    site = make_site(tmp_path, drill_dir=str(place))
    root = str(site.root / "a_test_data/_data")
    site.restic.snaps = [snap("a1111111", "a.test", THREE_DAYS_AGO)]
    site.restic.listings = {full_id("a1111111"): [(root + "/big", "file", 3 * GiB)]}
    seen: list[Path] = []

    def disk_usage(path: Path) -> Usage:
        seen.append(Path(path))
        return Usage(100 * GiB, 98 * GiB, 2 * GiB)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    ok, report = await site.backups.drill(Sink())
    site.store.close()
    assert not ok
    assert report == (
        "❌ Restore drill found problems:\n"
        f"- ❌ a.test (a1111111): not enough room for the drill in `{place}`: the snapshot "
        "restores 3.0 GiB, 2.0 GiB is free there (with a margin of 153.6 MiB); free some "
        "space or set `backups.drill_dir` to a larger place"
    )
    assert seen == [place]
    assert site.restic.restored == []  # refused before restic wrote anything
    assert list(place.iterdir()) == []


async def test_the_drill_restores_into_drill_dir_and_removes_its_folder(tmp_path: Path) -> None:
    place = tmp_path / "scratch"
    site = make_site(tmp_path, drill_dir=str(place))
    root = str(site.root / "a_test_data/_data")
    site.restic.snaps = [snap("a1111111", "a.test", THREE_DAYS_AGO)]
    site.restic.listings = {full_id("a1111111"): [(root + "/f", "file", 2)]}
    site.restic.files = {full_id("a1111111"): {root + "/f": b"ab"}}
    assert shutil.disk_usage(tmp_path).free > space.needed(2)  # the real statvfs
    ok, report = await site.backups.drill(Sink())
    site.store.close()
    assert ok, report
    assert [r[1].parent for r in site.restic.restored] == [place]
    assert list(place.iterdir()) == []
