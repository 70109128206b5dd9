"""Fixtures of the fault suite: the demo recipe on the one test swarm, and a site (a
room, the bot as a process, a restic repository of its own) per test."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator

import pytest

from bot.ops.restic import Restic
from tests.faults.site import IMAGE, FaultSite, make_abra, site_config, stack_of
from tests.harness.bot import BotProcess
from tests.harness.coop import make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import MemberFactory
from tests.harness.synapse import Synapse


@pytest.fixture(scope="module")
def abra(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    dockerd.import_image(IMAGE)
    root = tmp_path_factory.mktemp("abra")
    make_abra(root)
    yield root
    for env in (root / "servers" / "default").glob("*.env"):  # every app a test made
        dockerd.cli("stack", "rm", stack_of(env.name.removesuffix(".env")), check=False)


@pytest.fixture
async def site(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    abra: pathlib.Path,
    tmp_path: pathlib.Path,
) -> AsyncIterator[FaultSite]:
    coop = await make_coop(synapse, make_member, tmp_path)
    fault_file = tmp_path / "fault"
    fault_file.write_text("")
    bot = BotProcess(
        site_config(coop, abra, dockerd, tmp_path),
        tmp_path / "bot",
        env={"COOPBOT_FAULT_FILE": str(fault_file)},
    )
    repo = Restic(str(tmp_path / "repo"), tmp_path / "restic-password", cache_dir=tmp_path / "rc")
    s = FaultSite(coop, bot, dockerd, abra, repo, fault_file, tmp_path)
    try:
        yield s
    finally:
        bot.stop()
