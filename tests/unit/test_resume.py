"""Finishing what a crash cut short (bot/features/*/resume.py): a restore's checkpoint
scales the app back and says on which data it runs and where the rest is kept."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from bot.core.store import Store
from bot.features.backups.resume import resume_restore, save_checkpoint
from tests.fakes import FakeApps, FakeSwarm
from tests.unit.test_upgrades import service


def checkpoint(tmp: Path, replaced: list[str]) -> dict[str, Any]:
    (tmp / "previous").mkdir()
    return {
        "step": "1 of 2 path(s) swapped in",
        "server": "default",
        "stack": "cloud_test",
        "snapshot": "abcd1234",
        "replicas": {"app": 2, "db": 1},
        "scope": ["cloud_test_data", "cloud_test_db"],
        "replaced": replaced,
        "aside": [str(tmp / "previous"), str(tmp / "gone")],
        "staging": [str(tmp / "staging")],
    }


async def test_a_restore_cut_short_is_scaled_back_and_its_data_named(tmp_path: Path) -> None:
    swarm = FakeSwarm()
    swarm.stacks_of["cloud_test"] = [service("cloud_test"), service("cloud_test", short="db")]
    owner = cast(Any, SimpleNamespace(apps=FakeApps({"default": swarm})))
    store = Store(":memory:")
    save_checkpoint(store, "cloud.test", checkpoint(tmp_path, ["cloud_test_data"]))

    told = await resume_restore(owner, store, "cloud.test", "!")

    assert told is not None
    assert swarm.scaled == [{"app": 2, "db": 1}]
    assert "The restore had got to: 1 of 2 path(s) swapped in." in told
    assert "The bot scaled cloud.test back to app=2, db=1: it runs again" in told
    assert "mixed data: `cloud_test_data` restored from `abcd1234`, `cloud_test_db` its own" in told
    assert "`!restore cloud.test abcd1234` puts the whole snapshot in place" in told
    assert f"the data it replaced is kept at `{tmp_path / 'previous'}`" in told
    assert "gone" not in told  # only what exists is named
    assert "staging" not in told
    # Told once: the checkpoint is gone, so a second start says nothing more.
    assert await resume_restore(owner, store, "cloud.test", "!") is None
    assert swarm.scaled == [{"app": 2, "db": 1}]


async def test_no_checkpoint_means_no_restore_was_touching_the_app() -> None:
    owner = cast(Any, SimpleNamespace(apps=FakeApps({"default": FakeSwarm()})))
    assert await resume_restore(owner, Store(":memory:"), "cloud.test", "!") is None
