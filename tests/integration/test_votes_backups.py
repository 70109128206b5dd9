"""Votes mean what was voted (issue 11), for restores: real restic, a real swarm volume
and a real room. The races of the issue, each reproduced and shown to do no harm:

- a restore voted for "the newest" snapshot restores that one, though a backup of the
  damaged data lands while members vote;
- the nightly `backup all` with its retention, run during the vote, keeps the voted
  snapshot; run during the restore, it waits for it (the app's lock);
- a restore that fails, or is cancelled, scales the app back and says where things are.

The stack and fixtures are the backup tests' own (bob asks, alice approves).
"""

from __future__ import annotations

import asyncio
import re

from bot.app import Bot
from bot.ops.swarm import Swarm
from tests.integration.test_backups_swarm import (  # noqa: F401 (fixtures)
    DOMAIN,
    STACK,
    Site,
    sha,
    site,
    stack,
)


async def propose(at: Site, command: str) -> str:
    body = await at.coop.ask(at.coop.bob, command, "Proposal `")
    found = re.search(r"Proposal `(\w+)`", body)
    assert found, body
    return found.group(1)


async def approve(at: Site, proposal: str) -> None:
    await at.coop.ask(at.coop.alice, f"!approve {proposal}", "Counted")


def running_bot(at: Site) -> Bot:
    bot = at.runner.bot
    assert bot is not None
    return bot


async def jobs_waiting(bot: Bot, count: int) -> None:
    for _ in range(300):
        if len(bot.jobs.active()) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not {count} jobs: {[j.text for j in bot.jobs.active()]}")


async def replicas_running(at: Site) -> list[int]:
    swarm = Swarm(at.dockerd.host)
    try:
        await swarm.wait_converged(STACK, timeout=60, monitor=0)
        return [s.replicas_running for s in await swarm.services(STACK)]
    finally:
        await swarm.close()


async def test_the_voted_snapshot_is_restored_and_held_through_backups_and_retention(
    site: Site,  # noqa: F811 (the imported fixture)
) -> None:
    coop, bot = site.coop, running_bot(site)
    data = site.volume("data")
    await site.run(coop.bob, f"!backup {DOMAIN}", "snapshot `")
    (good,) = await site.repo.snapshots()
    before = sha(data)
    (data / "a.txt").write_text("damaged\n")

    # Voted for "the newest": that is `good`, and stays so whatever comes next.
    proposal = await propose(site, f"!restore {DOMAIN}")
    await site.run(coop.bob, f"!backup {DOMAIN}", "snapshot `")  # of the damaged data
    # The nightly run during the vote: a backup, then retention (keep-daily keeps one
    # snapshot a day, so `good` would go), which leaves this app alone.
    await bot.dispatcher.run_scheduled("backup all")
    summary = await site.said("Backups: 1 of 1 app(s) backed up")
    assert f"Kept every snapshot of {DOMAIN} (a restore of it is being voted on)" in summary
    assert good.id in [s.id for s in await site.repo.snapshots()]

    # The restore runs; the next nightly run waits for it (the app's lock), so restic
    # never reads the app half restored and retention never forgets what it restores.
    await bot.jobs.locks.acquire(DOMAIN)  # only so the order is certain
    try:
        await approve(site, proposal)
        await jobs_waiting(bot, 1)
        await bot.dispatcher.run_scheduled("backup all")
        await jobs_waiting(bot, 2)
    finally:
        bot.jobs.locks.release(DOMAIN)
    report = await site.said(f"restored from `{good.short_id}`", timeout=180)
    assert "running again" in report, report
    await site.said("Backups: 1 of 1 app(s) backed up", timeout=180)
    await bot.dispatcher.drain()
    assert sha(data)["a.txt"] == before["a.txt"]
    newest = (await site.repo.snapshots())[-1]
    listed = await site.repo.ls(newest.id)
    (size,) = [n for p, _, n in listed if p == str(data / "a.txt")]
    assert size == len("alpha\n")  # backed up after the restore, not of the stopped app
    assert await replicas_running(site) == [1]


async def test_a_failed_and_a_cancelled_restore_scale_the_app_back(
    site: Site,  # noqa: F811 (the imported fixture)
) -> None:
    coop = site.coop
    fail, hang = site.tmp / "restore-fails", site.tmp / "restore-hangs"
    entered = site.tmp / "restore-entered"  # restic restore is hanging now
    wrapper = site.tmp / "restic-flaky"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do\n'
        '  if [ "$a" = restore ]; then\n'
        f'    [ -f {fail} ] && {{ echo "Fatal: simulated disk error" >&2; exit 1; }}\n'
        f"    [ -f {hang} ] && {{ touch {entered}; exec sleep 600; }}\n"
        "  fi\n"
        "done\n"
        'exec restic "$@"\n'
    )
    wrapper.chmod(0o755)
    await site.runner.stop()
    assert site.runner.config.backups is not None
    site.runner.config = site.runner.config.model_copy(
        update={"backups": site.runner.config.backups.model_copy(update={"restic": str(wrapper)})}
    )
    await site.runner.start()
    bot = running_bot(site)
    await site.run(coop.bob, f"!backup {DOMAIN}", "snapshot `")
    before = sha(site.volume("data"))

    fail.touch()
    report = await site.voted(f"!restore {DOMAIN}", "simulated disk error", timeout=180)
    assert "✅ scaled to 0 (was app=1)" in report, report
    assert "↩ scaled back to app=1" in report, report
    assert f"Replaced: nothing; not replaced: `{STACK}_config/keep`, `{STACK}_data`." in report
    assert "**State of files.coop.test:** scaled back to app=1, on its own data" in report
    assert await replicas_running(site) == [1]
    assert sha(site.volume("data")) == before
    fail.unlink()

    hang.touch()
    proposal = await propose(site, f"!restore {DOMAIN}")
    await approve(site, proposal)
    for _ in range(1200):  # the app is stopped and restic is restoring
        if entered.exists():
            break
        await asyncio.sleep(0.1)
    assert entered.exists()
    (job,) = bot.jobs.active()
    await coop.bob.send(site.room, f"!cancel {job.id}")
    told = await site.said("the restore was cancelled", timeout=120)
    assert "scaled back to app=1" in told, told
    assert "Replaced: nothing" in told, told
    assert await replicas_running(site) == [1]
    assert sha(site.volume("data")) == before
    staging = [p.name for p in (site.volumes / f"{STACK}_data").iterdir()]
    assert staging == ["_data"], staging
