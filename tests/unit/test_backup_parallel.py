"""`!backup all` runs up to backups.parallel apps of one node at once (issue 16, the
50-apps figure): still one snapshot per app, tagged per app, each under its own lock,
one app's failure reported for it alone."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from bot.config import BackupsConfig
from bot.ops.restic import BackupSummary
from tests.unit.helpers import BotFactory
from tests.unit.test_backups import ask, wire

APPS = [f"app{i}.test" for i in range(5)]


@pytest.mark.parametrize("parallel", [1, 2, 3])
async def test_apps_of_one_node_run_up_to_parallel_at_once(
    make_bot: BotFactory, tmp_path: Path, parallel: int
) -> None:
    bot = make_bot()
    site = wire(bot, tmp_path, parallel=parallel)
    for domain in APPS:
        site.add(domain)
    running, most = 0, 0
    backup = site.restic.backup

    async def counted(*args: object, **kwargs: object) -> BackupSummary:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.01)  # long enough for the others to start
            return await backup(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            running -= 1

    site.restic.backup = counted  # type: ignore[method-assign]
    (text,) = await ask(bot, "!backup all")
    assert most == parallel
    assert text.startswith("💾 Backups: 5 of 5 app(s) backed up.")
    # The report keeps the apps' order, whichever finished first.
    assert [line.split("**")[1] for line in text.splitlines() if line.startswith("✅")] == APPS
    # One snapshot per app, tagged with its app.
    tags = [tags for _, tags in site.restic.backed_up]
    assert sorted(t for ts in tags for t in ts if t.startswith("app=")) == [
        f"app={d}" for d in APPS
    ]


async def test_one_app_failing_among_parallel_ones_fails_alone(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot()
    site = wire(bot, tmp_path, parallel=2)
    for domain in APPS:
        site.add(domain)
    (service,) = site.swarm.stacks_of["app2_test"]
    site.swarm.stacks_of["app2_test"] = [dataclasses.replace(service, update_state="paused")]
    (text,) = await ask(bot, "!backup all")
    assert text.startswith("💾 Backups: 4 of 5 app(s) backed up; **1 failed**.")
    assert "❌ **app2.test**: app2.test is not backed up: the update of app is paused." in text


def test_parallel_is_a_checked_config_key(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("x\n")
    base = {"repository": "/srv/restic", "password_file": str(password)}
    assert BackupsConfig.model_validate(base).parallel == 2
    with pytest.raises(ValueError, match="parallel"):
        BackupsConfig.model_validate({**base, "parallel": 0})
