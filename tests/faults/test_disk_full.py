"""The bot's data disk fills up while it runs (a real 16 MiB tmpfs holds data_dir,
then a file takes the rest): a job cannot be recorded and the member is told so;
read commands go on answering; once space is freed, jobs run again."""

from __future__ import annotations

import dataclasses
import errno
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from tests.harness.coop import make_coop
from tests.harness.member import MemberFactory
from tests.harness.synapse import Synapse


@pytest.fixture
def small_disk(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: pathlib.Path) -> pathlib.Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: nothing left to flush at close
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError as exc:
            full = exc.errno
    assert full == errno.ENOSPC
    return filler


async def test_a_full_data_disk_refuses_jobs_and_keeps_answering_reads(
    synapse: Synapse, make_member: MemberFactory, small_disk: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    coop = dataclasses.replace(
        await make_coop(synapse, make_member, tmp_path), data_dir=small_disk / "data"
    )
    # Without E2EE: nio's own key store (data_dir/e2ee) is not this test's subject.
    runner = coop.runner(
        {"jobs": {"progress_interval": "0.5s", "notify_after": "1h"}}, encryption=False
    )
    await runner.start()
    try:
        await coop.ask(coop.bob, "!ping", "pong")
        filler = fill(small_disk)
        told = await coop.ask(coop.bob, "!slow 1", "cannot record this")
        assert "the disk of its data folder is full" in told, told
        assert "Nothing was started" in told, told
        assert "pong" in await coop.ask(coop.bob, "!ping", "pong")  # reads go on
        await coop.ask(coop.bob, "!help", "ping")
        filler.unlink()  # space again: jobs are recorded and run
        await coop.bob.send(coop.room, "!slow 1")
        await coop.bob.wait_for_reply(coop.room, coop.bot_id, "slow 1 done", 60)
    finally:
        await runner.stop()
