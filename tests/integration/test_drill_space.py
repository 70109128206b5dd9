"""The restore drill with real restic on a real small file system: a 1 MiB tmpfs as
`backups.drill_dir` is refused for a 3 MiB snapshot before restic writes a byte; a
roomy place restores, matches, and keeps no folder afterwards."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import build_restic
from bot.core.store import Store
from bot.features.backups import Backups
from tests.fakes import FakeApps, FakeSwarm
from tests.unit.test_backups import Sink, backups_config

RESTIC = "/usr/bin/restic" if os.path.exists("/usr/bin/restic") else shutil.which("restic")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (the tests run as root, as the bot's container does)."""
    place = tmp_path / "small"
    place.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(place)], check=True)
    try:
        yield place
    finally:
        subprocess.run(["umount", str(place)], check=True)


async def test_drill_refuses_a_small_place_and_cleans_a_roomy_one(
    tmp_path: Path, small_fs: Path
) -> None:
    if RESTIC is None:
        pytest.fail("restic is not installed: run scripts/install-system-deps")
    data = tmp_path / "volumes" / "a_test_data" / "_data"
    data.mkdir(parents=True)
    (data / "blob").write_bytes(os.urandom(3 * 1024 * 1024))
    repo = tmp_path / "repo"
    config = backups_config(tmp_path, repository=str(repo), restic=RESTIC, drill_dir=str(small_fs))
    restic = build_restic(config, tmp_path)
    await restic.init()
    env = {"PATH": os.environ["PATH"], "RESTIC_REPOSITORY": str(repo)}
    env["RESTIC_PASSWORD_FILE"] = str(config.password_file)
    tags = "coopbot,app=a.test,stack=a_test"
    backup = [RESTIC, "backup", "--tag", tags, str(data)]
    await asyncio.to_thread(subprocess.run, backup, env=env, check=True)
    store = Store(tmp_path / "store.sqlite")
    apps = FakeApps({"default": FakeSwarm()})
    try:
        short = Backups(config, apps, store, restic, data_dir=tmp_path / "data")  # type: ignore[arg-type]
        ok, report = await short.drill(Sink())
        assert not ok
        assert (
            f"not enough room for the drill in `{small_fs}`: the snapshot restores 3.0 MiB"
            in report
        )
        assert os.listdir(small_fs) == []

        roomy = tmp_path / "roomy"
        config = backups_config(tmp_path, repository=str(repo), restic=RESTIC, drill_dir=str(roomy))
        ok, report = await Backups(config, apps, store, restic, data_dir=tmp_path / "data").drill(  # type: ignore[arg-type]
            Sink()
        )
        assert ok, report
        assert "1 files, 3.0 MiB restored and matching" in report
        assert os.listdir(roomy) == []
    finally:
        store.close()
