"""The bot's own app (bot/features/self_app.py): found from the config or its container,
never undeployed by the bot, its upgrade announced before the restart and reported after
it in the same thread, and that job not told as "interrupted"."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, cast

import pytest

from bot.app import Bot
from bot.config import parse_config
from bot.core.records import JobState
from bot.core.store import Store
from bot.errors import UserError
from bot.features.apps import Apps
from bot.features.self_app import SelfApp, own_container_refs
from bot.ops.abra import AppEnv
from bot.ops.recipes import Recipes
from bot.ops.swarm import Convergence, SwarmError
from commands import GROUPS
from tests.fakes import FakeApps, FakeChat, FakeSwarm, swap_services
from tests.unit.helpers import ADMIN, OPERATOR, ROOM, VIEWER, BotFactory, chat_of, message, until
from tests.unit.test_upgrades import service

SELF = AppEnv(
    "bot.test", "default", Path("/abra/servers/default/bot.test.env"), "coopbot", None, {}
)
OTHER = AppEnv(
    "cloud.test", "default", Path("/abra/servers/default/cloud.test.env"), "demo", None, {}
)


async def _always() -> bool:
    return True


def _self_app(tmp_path: Path, configured: str | None = None) -> tuple[SelfApp, Store, FakeChat]:
    store, chat = Store(tmp_path / "s.sqlite"), FakeChat()
    return SelfApp(store, chat, configured), store, chat


async def test_the_own_app_is_the_configured_one_else_the_container_s_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACK_NAME", raising=False)

    async def stack() -> str | None:
        return "bot_test"

    configured, _, _ = _self_app(tmp_path, "other.test")
    assert await configured.detect([SELF, OTHER], stack) == "other.test"
    found, _, _ = _self_app(tmp_path)
    assert await found.detect([OTHER, SELF], stack) == "bot.test"
    assert found.is_self("bot.test")
    assert not found.is_self("cloud.test")

    async def never() -> str | None:
        raise AssertionError("STACK_NAME is asked first")

    monkeypatch.setenv("STACK_NAME", "cloud_test")
    from_env, _, _ = _self_app(tmp_path)
    assert await from_env.detect([SELF, OTHER], never) == "cloud.test"


def test_the_own_container_is_named_by_the_id_in_its_mounts_then_its_hostname(
    tmp_path: Path,
) -> None:
    cid = "0123456789abcdef" * 4
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "1 0 0:1 / / rw - overlay overlay rw\n"
        f"2 1 8:1 /srv/docker/containers/{cid}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
    )
    assert own_container_refs(mountinfo) == [cid, socket.gethostname()]
    mountinfo.write_text("1 0 0:1 / / rw - ext4 /dev/sda1 rw\n")  # no container
    assert own_container_refs(mountinfo) == [socket.gethostname()]
    assert own_container_refs(tmp_path / "absent") == [socket.gethostname()]


async def test_no_own_app_outside_docker_or_when_docker_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACK_NAME", raising=False)

    async def none() -> str | None:
        return None

    async def unknown() -> str | None:
        return "stray_stack"

    async def broken() -> str | None:
        raise SwarmError("server unreachable")

    for stack in (none, unknown, broken):
        self_app, _, _ = _self_app(tmp_path)
        assert await self_app.detect([SELF, OTHER], stack) is None
        self_app.refuse_undeploy("bot.test")  # nothing is refused


async def test_undeploy_of_the_own_app_is_refused_at_request_time(make_bot: BotFactory) -> None:
    bot = make_bot()
    swarm = FakeSwarm()
    swarm.stacks_of["bot_test"] = [service("bot_test", "1.0.0+0.1.0")]
    swarm.stacks_of["cloud_test"] = [service("cloud_test", "1.0.0+1.0")]
    fake = FakeApps({"default": swarm}, envs=[SELF, OTHER])
    fake.self_app = SelfApp(bot.store, bot.chat, "bot.test")
    swap_services(bot.services, apps=fake)
    chat_of(bot).running = True
    await bot.dispatcher.submit(message("!undeploy bot.test", ADMIN))
    await until(lambda: chat_of(bot).sent, "an answer")
    (answer,) = chat_of(bot).sent
    assert "bot.test is the app I run as: I will not undeploy myself" in answer.markdown
    assert bot.store.proposals() == []  # no vote was even opened
    await bot.dispatcher.submit(message("!undeploy cloud.test", ADMIN))
    await until(lambda: len(chat_of(bot).sent) > 1, "a second answer")
    assert "not undeploy myself" not in chat_of(bot).sent[1].markdown


async def test_undeploy_of_the_own_app_is_refused_again_when_it_runs(tmp_path: Path) -> None:
    config = parse_config({"data_dir": str(tmp_path)}, tmp_path)
    store = Store(tmp_path / "s.sqlite")
    swarm = FakeSwarm()
    apps = Apps(config, store, cast(Any, {"default": swarm}), Recipes(tmp_path / "recipes"))
    apps.self_app = SelfApp(store, FakeChat(), "bot.test")
    with pytest.raises(UserError, match="will not undeploy myself"):
        await apps.undeploy(SELF, cast(Any, None), OPERATOR)
    assert store.audit_log() == []  # nothing was removed or recorded


async def test_an_upgrade_of_itself_is_announced_in_the_job_s_thread(tmp_path: Path) -> None:
    self_app, store, chat = _self_app(tmp_path, "bot.test")
    job = store.add_job("deploy", "!deploy bot.test 1.1.0+0.2.0", "bot.test", ADMIN, ROOM, "$ask")
    await self_app.before_deploy(OTHER, "2.0.0+1.0", "1.0.0+1.0", ADMIN, None)
    assert chat.sent == []
    assert store.pending_self_upgrade() is None
    await self_app.before_deploy(SELF, "1.1.0+0.2.0", "1.0.0+0.1.0", ADMIN, job)
    (said,) = chat.sent
    assert said.markdown.startswith("♻ Upgrading myself to **1.1.0+0.2.0**")
    assert "I will report in this thread when I'm back" in said.markdown
    assert (said.room, said.thread_root, said.reply_to) == (ROOM, "$ask", "$ask")
    pending = store.pending_self_upgrade()
    assert pending is not None
    assert (pending["job_id"], pending["target"], pending["previous"]) == (
        job,
        "1.1.0+0.2.0",
        "1.0.0+0.1.0",
    )


async def test_a_self_upgrade_the_old_bot_finished_itself_is_not_reported(
    tmp_path: Path,
) -> None:
    self_app, store, _ = _self_app(tmp_path, "bot.test")
    job = store.add_job("deploy", "!deploy bot.test", "bot.test", ADMIN, ROOM, "$ask")
    await self_app.before_deploy(SELF, "1.0.1+0.1.0", "1.0.0+0.1.0", ADMIN, job)
    store.set_job_state(job, JobState.DONE, "ok")  # the deploy did not restart it
    assert self_app.coming_back() is None
    assert store.pending_self_upgrade() is None


class _ChatUntilReported(FakeChat):
    """Runs (is alive) until the bot said it is back, like a Matrix sync loop would."""

    async def run(self, on_event: Any) -> None:
        self.running = True
        try:
            await until(lambda: any("I'm back" in s.markdown for s in self.sent), "the report")
        finally:
            self.running = False


def _bot_after_restart(tmp_path: Path, swarm: FakeSwarm) -> Bot:
    config = parse_config({"data_dir": str(tmp_path / "data"), "self_app": "bot.test"}, tmp_path)
    chat = _ChatUntilReported({ADMIN: (True, 100), VIEWER: (True, 0)})
    bot = Bot(config, chat=chat, groups=GROUPS, swarms={})
    env_file = tmp_path / "bot.test.env"
    env_file.write_text("TYPE=coopbot:1.0.0+0.1.0\nDOMAIN=bot.test\n")
    own = AppEnv("bot.test", "default", env_file, "coopbot", "1.0.0+0.1.0", {})
    swap_services(bot.services, apps=FakeApps({"default": swarm}, envs=[own, OTHER]))
    return bot


async def _before_restart(tmp_path: Path) -> tuple[int, int]:
    """What the old bot left: the self-upgrade announced, its job cut short, and
    another deploy job interrupted too."""
    store = Store(tmp_path / "data" / "coopbot.sqlite")
    job = store.add_job("deploy", "!deploy bot.test 1.0.1+0.1.0", "bot.test", ADMIN, ROOM, "$up")
    store.set_job_state(job, JobState.RUNNING)
    other = store.add_job("deploy", "!deploy cloud.test", "cloud.test", ADMIN, ROOM, "$other")
    store.set_job_state(other, JobState.RUNNING)
    await SelfApp(store, FakeChat(), "bot.test").before_deploy(
        SELF, "1.0.1+0.1.0", "1.0.0+0.1.0", ADMIN, job
    )
    store.close()
    return job, other


async def test_after_the_restart_the_upgrade_is_reported_in_its_thread(tmp_path: Path) -> None:
    job, other = await _before_restart(tmp_path)
    swarm = FakeSwarm()
    swarm.stacks_of["bot_test"] = [service("bot_test", "1.0.1+0.1.0")]
    swarm.stacks_of["cloud_test"] = [service("cloud_test", "1.0.0+1.0")]
    bot = _bot_after_restart(tmp_path, swarm)
    await bot.run()
    sent = cast(FakeChat, bot.chat).sent
    (back,) = [s for s in sent if "I'm back" in s.markdown]
    assert back.markdown == (f"✅ I'm back: bot.test runs **1.0.1+0.1.0**, converged (job #{job}).")
    assert (back.room, back.thread_root, back.reply_to) == (ROOM, "$up", "$up")
    # Recovery tells the other job, and says nothing of the self-upgrade.
    told = [s for s in sent if "was interrupted" in s.markdown]
    assert [s.reply_to for s in told] == ["$other"]
    store = Store(tmp_path / "data" / "coopbot.sqlite")
    row = store.job(job)
    assert row is not None
    assert row.state == JobState.DONE
    other_row = store.job(other)
    assert other_row is not None
    assert other_row.state == JobState.INTERRUPTED
    assert store.pending_self_upgrade() is None
    # What the old bot's deploy would have recorded: the history and the pinned version.
    (deploy,) = store.deploys("bot.test")
    assert (deploy["version"], deploy["previous_version"], deploy["result"]) == (
        "1.0.1+0.1.0",
        "1.0.0+0.1.0",
        "ok",
    )
    assert (tmp_path / "bot.test.env").read_text().startswith("TYPE=coopbot:1.0.1+0.1.0\n")
    store.close()


async def test_after_a_rolled_back_self_upgrade_the_report_says_so(tmp_path: Path) -> None:
    job, _ = await _before_restart(tmp_path)
    swarm = FakeSwarm()
    old = [service("bot_test", "1.0.0+0.1.0")]
    swarm.stacks_of["bot_test"] = old
    swarm.stacks_of["cloud_test"] = [service("cloud_test", "1.0.0+1.0")]
    swarm.converged = Convergence(False, True, ["app: task failed: exit 1"], old)
    bot = _bot_after_restart(tmp_path, swarm)
    await bot.run()
    (back,) = [s for s in cast(FakeChat, bot.chat).sent if "I'm back" in s.markdown]
    assert back.markdown == (
        "⚠ I'm back, but bot.test runs **1.0.0+0.1.0**, not the target **1.0.1+0.1.0** "
        f"(job #{job}): `swarm rolled it back`."
    )
    assert back.notify
    assert back.mentions == (ADMIN,)
    store = Store(tmp_path / "data" / "coopbot.sqlite")
    row = store.job(job)
    assert row is not None
    assert row.state == JobState.FAILED
    assert [d["result"] for d in store.deploys("bot.test")] == ["failed"]
    # still pinned to what runs
    assert (tmp_path / "bot.test.env").read_text().startswith("TYPE=coopbot:1.0.0+0.1.0\n")
    store.close()


async def test_at_start_the_bot_asks_its_local_daemons_which_stack_it_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACK_NAME", raising=False)
    asked: list[tuple[object, str]] = []

    async def stack_of_container(swarm: object, ref: str) -> str | None:
        asked.append((swarm, ref))
        return "bot_test" if ref == "cid" else None

    monkeypatch.setattr("bot.app.stack_of_container", stack_of_container)
    monkeypatch.setattr("bot.app.own_container_refs", lambda: ["cid", "host"])
    servers = {
        "default": {"docker_host": "unix:///var/run/docker.sock"},
        "far": {"docker_host": "ssh://root@far.example.coop"},
    }
    config = parse_config({"data_dir": str(tmp_path / "data"), "servers": servers}, tmp_path)
    local, far = FakeSwarm(), FakeSwarm()
    bot = Bot(
        config, chat=FakeChat(), groups=GROUPS, swarms=cast(Any, {"default": local, "far": far})
    )
    swap_services(bot.services, apps=FakeApps({"default": local}, envs=[OTHER, SELF]))
    await bot._detect_self()
    assert bot.self_app.domain == "bot.test"
    assert asked == [(local, "cid")]  # never over ssh: its own container is on its own host
    bot.store.close()
