"""After a crash: one bot per data folder, and the jobs the last run left open are told
to their rooms with what the bot finds now (bot/core/recovery.py, bot/app.py)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from bot.app import hold_data_dir
from bot.core.records import JobState, job_thread_key
from bot.core.recovery import tell_interrupted
from bot.core.store import SEEN_RETENTION_S, Store
from bot.errors import AlreadyRunning
from bot.features.backups.resume import mark_started
from bot.features.deploy_record import DeployCheckpoint, load_checkpoint, save_checkpoint
from bot.ops.abra import AppEnv
from bot.ops.restic import Snapshot
from bot.ops.swarm import Convergence
from tests.fakes import FakeApps, FakeRestic, FakeSwarm, swap_services
from tests.unit.helpers import OPERATOR, ROOM, BotFactory, chat_of, drain, message, until
from tests.unit.test_backups import snap
from tests.unit.test_jobs import Work
from tests.unit.test_upgrades import service


def _hold_in_child(data_dir: Path, ready: Any, done: Any) -> None:
    handle = hold_data_dir(data_dir)
    ready.set()
    done.wait(10)
    handle.close()


def test_a_second_bot_on_one_data_folder_is_refused_naming_the_pid(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_in_child, args=(tmp_path, ready, done))
    child.start()
    try:
        assert ready.wait(10)
        with pytest.raises(AlreadyRunning, match=f"pid {child.pid}"):
            hold_data_dir(tmp_path)
    finally:
        done.set()
        child.join(10)
    hold_data_dir(tmp_path).close()  # free again once the first one is gone


async def _always() -> bool:
    return True


async def test_an_interrupted_job_is_told_with_the_app_as_it_is_now(
    make_bot: BotFactory,
) -> None:
    bot = make_bot()
    swarm = FakeSwarm()
    swarm.stacks_of["cloud_test"] = [service("cloud_test", "1.1.0+1.0")]
    env = AppEnv(
        "cloud.test", "default", Path("/abra/servers/default/cloud.test.env"), "demo", None, {}
    )
    swap_services(bot.services, apps=FakeApps({"default": swarm}, envs=[env]))
    job_id = bot.store.add_job(
        "deploy", "!deploy cloud.test 1.1.0+1.0", "cloud.test", OPERATOR, ROOM, "$ask"
    )
    bot.store.add_job("ping", "!ping", None, OPERATOR, ROOM, "$ping")
    jobs = bot.store.interrupt_unfinished_jobs()
    await tell_interrupted(jobs, bot.services, _always)
    told = {s.reply_to: s for s in chat_of(bot).sent}
    deploy = told["$ask"]
    assert deploy.markdown.startswith(
        f"⚠ Job #{job_id} (`!deploy cloud.test 1.1.0+1.0`) was interrupted"
    )
    assert "Now: cloud.test runs 1.1.0+1.0 (app 1/1)." in deploy.markdown
    assert "`!status cloud.test`" in deploy.markdown
    assert deploy.notify
    assert deploy.mentions == (OPERATOR,)
    assert "send `!ping` again" in told["$ping"].markdown


class _SlowSwarm(FakeSwarm):
    """Convergence the test lets happen: the recovery's wait lasts until `release`."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = False

    async def wait_converged(self, stack: str, timeout: float) -> Convergence:  # noqa: ASYNC109
        self.waiting = True
        await self.release.wait()
        return await super().wait_converged(stack, timeout)


async def test_recovery_holds_the_app_lock_while_it_finishes_a_deploy(
    make_bot: BotFactory,
) -> None:
    work = Work()
    bot = make_bot(work.group)
    swarm = _SlowSwarm()
    swarm.stacks_of["cloud_test"] = [service("cloud_test", "1.1.0+1.0")]
    env = AppEnv(
        "cloud.test", "default", Path("/abra/servers/default/cloud.test.env"), "demo", None, {}
    )
    swap_services(bot.services, apps=FakeApps({"default": swarm}, envs=[env]))
    job_id = bot.store.add_job(
        "deploy", "!deploy cloud.test 1.1.0+1.0", "cloud.test", OPERATOR, ROOM, "$ask"
    )
    bot.store.set_job_state(job_id, JobState.RUNNING)  # killed while it converged
    jobs = bot.store.interrupt_unfinished_jobs()
    chat_ready = asyncio.Event()

    async def ready() -> bool:
        return chat_ready.is_set()

    recovery = asyncio.create_task(tell_interrupted(jobs, bot.services, ready))
    await asyncio.sleep(0.01)
    # A command that arrives before the room was told already waits for the recovery.
    member = message("!work cloud.test b", OPERATOR)
    await bot.dispatcher.handle(member)
    await until(lambda: chat_of(bot).replies_to(member.event_id))
    assert chat_of(bot).replies_to(member.event_id) == [
        f"⏳ Job #{job_id + 1} waits: the bot finishing interrupted job #{job_id} "
        "(`!deploy cloud.test 1.1.0+1.0`) is working on cloud.test."
    ]
    chat_ready.set()
    await until(lambda: swarm.waiting)
    await asyncio.sleep(0.01)
    assert work.calls == []  # not interleaved with the wait for convergence
    swarm.release.set()
    await recovery
    await until(lambda: ("start", "b") in work.calls)
    (told,) = [s for s in chat_of(bot).sent if s.reply_to == "$ask"]
    assert "converged and runs 1.1.0+1.0" in chat_of(bot).shown(told.event_id)
    work.gates["b"].set()
    await drain(bot)
    assert work.calls == [("start", "b"), ("end", "b")]
    assert not bot.services.jobs.active()


@pytest.mark.parametrize(
    ("runs", "recorded"),
    [
        ("1.1.0+1.0", True),  # killed after `docker stack deploy`: swarm carried it on
        ("1.0.0+1.0", False),  # killed just before the CLI ran: nothing was deployed
    ],
)
async def test_a_resumed_deploy_that_converged_writes_the_history_and_the_pin(
    make_bot: BotFactory, tmp_path: Path, runs: str, recorded: bool
) -> None:
    bot = make_bot()
    path = tmp_path / "cloud.test.env"
    path.write_text("TYPE=demo:1.0.0+1.0\nDOMAIN=cloud.test\n")
    env = AppEnv("cloud.test", "default", path, "demo", "1.0.0+1.0", {})
    swarm = FakeSwarm()
    swarm.stacks_of["cloud_test"] = [service("cloud_test", runs)]
    swap_services(bot.services, apps=FakeApps({"default": swarm}, envs=[env]))
    job_id = bot.store.add_job(
        "upgrade", "!upgrade cloud.test", "cloud.test", OPERATOR, ROOM, "$ask"
    )
    bot.store.set_job_state(job_id, JobState.RUNNING)
    save_checkpoint(bot.store, job_id, DeployCheckpoint("1.1.0+1.0", "1.0.0+1.0", OPERATOR))
    await tell_interrupted(bot.store.interrupt_unfinished_jobs(), bot.services, _always)

    (told,) = [s for s in chat_of(bot).sent if s.reply_to == "$ask"]
    shown = chat_of(bot).shown(told.event_id)
    history = bot.store.deploys("cloud.test")
    if recorded:
        assert "cloud.test's .env pins 1.1.0+1.0" in shown, shown
        (row,) = history
        assert (row["version"], row["previous_version"], row["result"], row["job_id"]) == (
            "1.1.0+1.0",
            "1.0.0+1.0",
            "ok",
            job_id,
        )
        assert row["actor"] == OPERATOR
        assert path.read_text().splitlines()[0] == "TYPE=demo:1.1.0+1.0"
    else:
        assert "deploy history" not in shown, shown
        assert history == []
        assert path.read_text().splitlines()[0] == "TYPE=demo:1.0.0+1.0"


def test_housekeeping_prunes_the_job_keys_of_jobs_finished_long_ago(
    make_bot: BotFactory,
) -> None:
    store = make_bot().store
    done = store.add_job("deploy", "!deploy a.test", "a.test", OPERATOR, ROOM, "$a")
    store_open = store.add_job("deploy", "!deploy b.test", "b.test", OPERATOR, ROOM, "$b")
    store.set_job_state(done, JobState.DONE, "ok")
    store.set_job_state(store_open, JobState.RUNNING)
    for job_id in (done, store_open):
        store.put(job_thread_key(job_id), f"$thread{job_id}")
        save_checkpoint(store, job_id, DeployCheckpoint("1.1.0", "1.0.0", OPERATOR))
    store.put("jobs.other", "kept")  # not a job's key

    assert store.forget_old_job_keys() == 0  # finished just now: still kept
    later = time.time() + SEEN_RETENTION_S + 60
    assert store.forget_old_job_keys(now=later) == 2
    assert store.get(job_thread_key(done)) is None
    assert load_checkpoint(store, done) is None
    # A job still open keeps what a crash recovery reads.
    assert store.get(job_thread_key(store_open)) == f"$thread{store_open}"
    assert load_checkpoint(store, store_open) is not None
    assert store.get("jobs.other") == "kept"


class _Repository:
    """What the report after a cut-short `!backup all` reads: the labelled apps, the
    repository's snapshots and locks (FakeRestic), the store."""

    def __init__(self, store: Store, envs: list[AppEnv], restic: FakeRestic) -> None:
        self.store, self.envs, self.restic = store, envs, restic

    async def labelled_apps(self) -> tuple[list[AppEnv], list[str]]:
        return self.envs, []

    async def _snapshots(self, tag: str) -> list[Snapshot]:
        return await self.restic.snapshots(tags=[tag])


async def test_an_interrupted_backup_all_reports_per_app_what_it_reached(
    make_bot: BotFactory,
) -> None:
    bot = make_bot()
    envs = [
        AppEnv(f"{name}.test", "default", Path(f"/abra/{name}.test.env"), "demo", None, {})
        for name in ("a", "b", "c", "d")
    ]
    job_id = bot.store.add_job("backup", "!backup all", "all", OPERATOR, ROOM, "$all")
    bot.store.set_job_state(job_id, JobState.RUNNING)
    started = time.time()
    after = datetime.fromtimestamp(started + 1, UTC)
    restic = FakeRestic()
    restic.snaps = [snap("aaaa1111", "a.test", after), snap("bbbb2222", "b.test", after)]
    restic.held_locks = [{"id": "cccc3333" * 8, "pid": 7, "hostname": "elsewhere", "time": after}]
    # a finished and was recorded; b's restic finished, the kill came before the row;
    # c was running restic; d had not started.
    bot.store.add_backup("a.test", OPERATOR, "ok", started_at=started + 1, snapshot_id="aaaa1111")
    for domain in ("a.test", "b.test", "c.test"):
        mark_started(bot.store, domain, started + 1)
    mark_started(bot.store, "d.test", started - 86400)  # last night's run
    repository = cast(Any, _Repository(bot.store, envs, restic))
    swap_services(bot.services, backups=repository)

    await tell_interrupted(bot.store.interrupt_unfinished_jobs(), bot.services, _always)

    (told,) = [s for s in chat_of(bot).sent if s.reply_to == "$all"]
    shown = chat_of(bot).shown(told.event_id)
    assert "- a.test: finished before the stop, recorded as ok (snapshot `aaaa1111`)" in shown
    assert "- b.test: snapshot `bbbb2222` made (restic finished; the job did not record it)" in (
        shown
    )
    assert "- c.test: cut short while backing up, no snapshot made" in shown
    assert "Not started: d.test" in shown
    assert "restic lock `cccc3333`" in shown
    assert "If b.test, c.test has a backup pre-hook" in shown
    assert "no snapshot of all" not in shown  # not an app named "all"
    assert "status all" not in shown
    assert "send `!backup all` again" in shown
