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

from tests.harness.coop import Coop, make_coop
from tests.harness.member import Member, MemberFactory
from tests.harness.synapse import Synapse
from tests.integration.test_undecrypted_matrix import free_port, healthz


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


async def test_a_full_data_disk_with_e2ee_on_keeps_decrypting_answering_and_says_so(
    synapse: Synapse, make_member: MemberFactory, small_disk: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """nio's key store (data_dir/e2ee) is on the same full disk. A member's client starts
    a new Megolm session, so nio must write an Olm session and a room key inside the
    sync: that write failing ended the receive loop, and the bot, before
    bot/ops/matrix_store.py. Now the keys stay in memory, the bot answers, and /healthz
    names the disk until space is freed."""
    coop = dataclasses.replace(
        await make_coop(synapse, make_member, tmp_path, encrypted=True),
        data_dir=small_disk / "data",
    )
    port = free_port()
    runner = coop.runner({"web": {"listen": f"127.0.0.1:{port}"}}, encryption=True)
    await runner.start()
    try:
        alice = coop.alice
        await _answered(coop, alice, attempts=3)  # the first may race the key upload
        filler = fill(small_disk)
        alice.client.invalidate_outbound_session(coop.room)  # new keys to store
        await _answered(coop, alice)
        await _answered(coop, alice)  # and the sync loop goes on after it
        status, body = await healthz(port)
        assert status == 503, body
        assert "the disk of the bot's data folder is full" in body, body
        filler.unlink()
        await _answered(coop, alice)
        assert await healthz(port) == (200, "ok\n")
    finally:
        await runner.stop()


async def _answered(coop: Coop, member: Member, attempts: int = 1) -> None:
    for _ in range(attempts):
        await member.send(coop.room, "!ping")
        try:
            await member.wait_for_reply(coop.room, coop.bot_id, "pong", 30)
            return
        except TimeoutError:
            continue
    raise AssertionError("the bot did not answer !ping in the encrypted room")
