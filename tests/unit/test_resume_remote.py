"""After a crash in a restore on another node (bot/features/backups/resume.py): the app
is scaled back through the manager, and the copies left are asked on the node that
holds them, never looked for on the bot's own disk."""

from __future__ import annotations

from pathlib import Path

from bot.features.backups.resume import resume_restore, save_checkpoint
from bot.ops.swarm import SwarmError
from bot.ops.swarm.oneoff import OneOffResult
from tests.unit.test_backups_remote import STACK, Remote


def checkpoint(remote: Remote, *, node: bool = True) -> tuple[str, str]:
    """A restore of a.test on w1 cut short after its swap; (staging, aside) paths."""
    folder = remote.config.volumes_root / f"{STACK}_data"
    staging, aside = str(folder / "coopbot-restore-c0ffee"), str(folder / "coopbot-aside-c0ffee")
    state = {
        "step": "1 of 1 path(s) swapped in",
        "server": "default",
        "stack": STACK,
        "snapshot": "feedbeef",
        "replicas": {"app": 1},
        "scope": [f"{STACK}_data/_data"],
        "replaced": [f"{STACK}_data/_data"],
        "aside": [aside],
        "staging": [staging],
    }
    if node:
        state["node"] = {"id": "id-w1", "hostname": "w1"}
    save_checkpoint(remote.store, "a.test", state)
    return staging, aside


async def test_the_copies_are_asked_on_the_node(tmp_path: Path) -> None:
    remote = Remote(tmp_path, hooks=True)  # w1 has an endpoint
    staging, aside = checkpoint(remote)
    Path(staging).mkdir(parents=True)  # noqa: ASYNC240 - the same path on the bot's node
    remote.worker.volume_dirs = {f"{STACK}_data": f"/srv/w1/volumes/{STACK}_data"}
    remote.swarm.oneoff_results = [OneOffResult(0, [aside], [])]
    text = await resume_restore(remote.backups, remote.store, "a.test", "!")
    assert text is not None
    assert remote.swarm.scaled == [{"app": 1}]  # through the manager
    assert text.splitlines()[0] == (
        "The restore (of its data on w1) had got to: 1 of 1 path(s) swapped in."
    )
    assert "the data of snapshot `feedbeef`" in text
    assert f"- the data it replaced is kept at `{aside}` on w1" in text
    assert staging not in text  # not on w1, whatever the bot's own disk holds
    (call,) = remote.swarm.oneoffs
    assert call["node_id"] == "id-w1"
    assert call["image"] == "img"
    (mount,) = call["mounts"]
    assert (mount.source, mount.target, mount.read_only, mount.bind) == (
        f"/srv/w1/volumes/{STACK}_data",
        str(remote.config.volumes_root / f"{STACK}_data"),
        True,
        True,
    )
    assert not call["secrets"]  # listing needs no repository
    assert call["timeout"] == 120  # a listing, not a restore's budget
    assert remote.store.get_json("restore.checkpoint.a.test") is None  # done once
    assert await resume_restore(remote.backups, remote.store, "a.test", "!") is None
    remote.store.close()


async def test_a_node_that_cannot_be_asked_names_the_copies_as_maybe_there(
    tmp_path: Path,
) -> None:
    remote = Remote(tmp_path / "dead", hooks=True)
    staging, aside = checkpoint(remote)
    remote.worker.volume_dirs = {f"{STACK}_data": "/srv/w1"}
    remote.swarm.oneoff_results = [SwarmError("node w1 is down")]
    text = await resume_restore(remote.backups, remote.store, "a.test", "!")
    assert text is not None
    assert remote.swarm.scaled == [{"app": 1}]
    assert f"`{staging}` on w1 (maybe: it could not be asked)" in text
    assert f"`{aside}` on w1 (maybe: it could not be asked)" in text
    assert text.endswith("⚠ The copies on w1 could not be listed: node w1 is down")
    remote.store.close()

    remote = Remote(tmp_path / "none")  # no endpoint for w1: nothing is run
    checkpoint(remote)
    text = await resume_restore(remote.backups, remote.store, "a.test", "!")
    assert text is not None
    assert "servers.default.nodes names no docker endpoint for it" in text
    assert remote.swarm.oneoffs == []
    remote.store.close()


async def test_a_restore_on_the_bots_own_node_looks_at_its_own_disk(tmp_path: Path) -> None:
    remote = Remote(tmp_path, hooks=True)
    staging, aside = checkpoint(remote, node=False)
    Path(aside).mkdir(parents=True)  # noqa: ASYNC240 - a test's setup
    text = await resume_restore(remote.backups, remote.store, "a.test", "!")
    assert text is not None
    assert text.startswith("The restore had got to:")
    assert f"- the data it replaced is kept at `{aside}`" in text
    assert staging not in text
    assert remote.swarm.oneoffs == []
    remote.store.close()
