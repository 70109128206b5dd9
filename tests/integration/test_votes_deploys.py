"""Votes mean what was voted (issue 11), for deploys: a real swarm, real recipe repos
and a real room. The races of the issue, each reproduced and shown to do no harm:

- a tag arriving during a deploy vote does not change what runs;
- a major step asked with `!deploy` needs the major_upgrade quorum and backs up first;
- behind an approved upgrade, a queued "no-vote redeploy" of the old version is
  refused (it now needs a vote) and a voted rollback goes stale: nothing runs.

bob (operator) asks; alice (admin) approves; major steps need 2 approvals (carol, a
viewer, may vote on those). The fixtures are the upgrade tests' own.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Callable

from bot.app import Bot
from tests.harness.dockerd import Dockerd
from tests.harness.recipes import commit_files, git, make_app_env, make_recipe
from tests.integration.test_upgrades_swarm import (  # noqa: F401 (fixtures)
    BACKUP_LABELS,
    DEMO,
    Site,
    backups_section,
    compose,
    images,
    make_site,
    stack,
)

IMAGE = "local/busybox:1.0"  # imported by the `images` fixture


def release(tag: str) -> tuple[str, dict[str, str]]:
    return tag, {"compose.yml": compose(IMAGE, tag, BACKUP_LABELS), f"release/{tag}": f"{tag}\n"}


async def jobs_waiting(bot: Bot, count: int) -> None:
    for _ in range(300):
        if len(bot.jobs.active()) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not {count} jobs: {[j.text for j in bot.jobs.active()]}")


def add_release(recipe: pathlib.Path, tag: str) -> None:
    """A new tag upstream, as a fetch (any viewer's `!upgrades`) brings it."""
    _, files = release(tag)
    commit_files(recipe, files, f"release {tag}")
    git(recipe, "tag", tag)


async def test_a_tag_during_the_vote_changes_nothing_and_a_major_deploy_backs_up_first(
    make_site: Callable[..., Awaitable[Site]],  # noqa: F811 (the imported fixture)
    images: str,  # noqa: F811
    dockerd: Dockerd,
    tmp_path: pathlib.Path,
) -> None:
    recipe = pathlib.Path()

    def setup(abra: pathlib.Path) -> list[str]:
        nonlocal recipe
        recipe = make_recipe(abra / "recipes", "demo", [release("1.0.0+1.0"), release("1.1.0+1.1")])
        make_app_env(abra, "default", DEMO, "demo")
        return [DEMO]

    site = await make_site(setup, backups=backups_section(dockerd, tmp_path))
    coop = site.coop
    await coop.bob.send(site.room, f"!deploy {DEMO} 1.0.0+1.0")  # a first deploy: no vote
    await site.said(coop.bob, "runs 1.0.0+1.0")
    make_app_env(site.abra, "default", DEMO, "demo")  # unpinned again: "the newest"

    proposal, body = await site.propose(f"!deploy {DEMO}", "1.0.0+1.0 → **1.1.0+1.1**")
    add_release(recipe, "1.2.0+1.2")  # arrives while members vote
    await site.approve(coop.alice, proposal)
    report = await site.said(coop.bob, "runs 1.1.0+1.1")
    assert "1.2.0" not in report, report
    assert site.version(DEMO) == "1.1.0+1.1"

    # A major step through !deploy: the major_upgrade quorum, and a backup first.
    add_release(recipe, "2.0.0+2.0")
    proposal, body = await site.propose(f"!deploy {DEMO} 2.0.0+2.0", "A **major** step")
    assert "Needs **2** approvals" in body, body
    assert "Back up the app's data first" in body, body
    await site.approve(coop.alice, proposal)
    assert site.version(DEMO) == "1.1.0+1.1"  # one approval is not enough
    await site.approve(coop.carol, proposal)
    report = await site.said(coop.bob, "runs 2.0.0+2.0", timeout=240)
    assert "✅ Backed up first: snapshot `" in report, report
    assert site.version(DEMO) == "2.0.0+2.0"
    bot = site.runner.bot
    assert bot is not None
    (row,) = [r for r in bot.store.proposals("done") if r.id == proposal]
    assert row.policy == "major_upgrade"


async def test_a_redeploy_and_a_rollback_queued_behind_an_upgrade_do_not_run(
    make_site: Callable[..., Awaitable[Site]],  # noqa: F811 (the imported fixture)
    images: str,  # noqa: F811
) -> None:
    def setup(abra: pathlib.Path) -> list[str]:
        tags = ["1.0.0+1.0", "1.1.0+1.1", "1.2.0+1.2"]
        make_recipe(abra / "recipes", "demo", [release(t) for t in tags])
        make_app_env(abra, "default", DEMO, "demo")
        return [DEMO]

    site = await make_site(setup)
    coop = site.coop
    await coop.bob.send(site.room, f"!deploy {DEMO} 1.1.0+1.1")
    await site.said(coop.bob, "runs 1.1.0+1.1")
    bot = site.runner.bot
    assert bot is not None

    upgrade, _ = await site.propose(f"!upgrade {DEMO} 1.2.0+1.2", "a minor step")
    rollback, _ = await site.propose(f"!rollback {DEMO} 1.0.0+1.0", "1.1.0+1.1 → **1.0.0+1.0**")
    # Everything queues behind the upgrade, in the order asked: the lock is held here
    # only so that the order does not depend on how fast the swarm converges.
    await bot.jobs.locks.acquire(DEMO)
    try:
        await site.approve(coop.alice, upgrade)
        await coop.bob.send(site.room, f"!deploy {DEMO} 1.1.0+1.1")  # "a redeploy": no vote
        await jobs_waiting(bot, 2)
        await site.approve(coop.alice, rollback)
        await jobs_waiting(bot, 3)
    finally:
        bot.jobs.locks.release(DEMO)
    await site.said(coop.bob, "runs 1.2.0+1.2")
    refused = await site.said(coop.bob, "it now needs a vote")
    assert "1.2.0+1.2 → **1.1.0+1.1**" in refused, refused
    stale = await site.said(coop.bob, f"since the vote on `{rollback}`")
    assert "Nothing was changed" in stale, stale
    await bot.dispatcher.drain()
    assert site.version(DEMO) == "1.2.0+1.2"
    assert [r["version"] for r in bot.store.deploys(DEMO, limit=10)] == ["1.2.0+1.2", "1.1.0+1.1"]
    assert [r.id for r in bot.store.proposals("stale")] == [rollback]
