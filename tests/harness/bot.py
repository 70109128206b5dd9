"""Run a real Bot (bot.app.Bot with the real Matrix adapter) inside the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import Iterable
from typing import Any

from bot.app import Bot
from bot.config import Config, parse_config
from bot.core.context import Arg, positive_int
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from commands import GROUPS

# Commands that exist only in tests: a long job and an echo with a marker.
test_commands = CommandGroup("test")


@test_commands.command(
    "slow",
    help="Work for a while, showing progress.",
    args=(Arg("seconds", type=positive_int), Arg("app", required=False)),
    role=Role.OPERATOR,
    lock_arg="app",
)
async def _slow(ctx: Any) -> None:
    seconds = ctx.args["seconds"]
    for second in range(seconds):
        await ctx.progress.update(f"working {second + 1}/{seconds}")
        if second == 0:
            await ctx.progress.detail("detail of the first step")
        await asyncio.sleep(1)
    await ctx.progress.finish(f"slow {seconds} done")
    await ctx.reply(f"{ctx.sender}: your slow job is done", mentions=[ctx.sender])


@test_commands.command("echo", help="Repeat the text.", args=(Arg("text", rest=True),), quick=True)
async def _echo(ctx: Any) -> None:
    await ctx.reply(f"echo: {ctx.args['text']}")


# What the risky test command's plan depends on: change it to make a proposal stale.
APP_STATE: dict[str, str] = {}
# How many more times the plan of an app fails as an unreachable server would.
PLAN_FAILURES: dict[str, int] = {}


async def _risky_plan(ctx: Any) -> Any:
    from bot.core.approvals import Plan

    app = ctx.args["app"]
    if PLAN_FAILURES.get(app, 0) > 0:
        PLAN_FAILURES[app] -= 1
        raise ConnectionError("server unreachable (injected by the test)")
    version = APP_STATE.get(app, "v1")
    return Plan(summary=f"Remove **{app}** (now at {version}).", fingerprint=version)


@test_commands.command(
    "risky",
    help="A risky action that needs a vote.",
    args=(Arg("app"),),
    role=Role.OPERATOR,
    vote_policy="undeploy",
    lock_arg="app",
    plan=_risky_plan,
)
async def _risky(ctx: Any) -> None:
    await ctx.reply(f"risky ran on {ctx.args['app']}")


def bot_config(
    homeserver: str,
    user_id: str,
    password: str,
    rooms: list[str],
    data_dir: pathlib.Path,
    sections: dict[str, Any] | None = None,
    **matrix: Any,
) -> Config:
    raw: dict[str, Any] = {
        "matrix": {
            "homeserver": homeserver,
            "user_id": user_id,
            "password": password,
            "rooms": rooms,
            "sync_timeout": "5s",
            **matrix,
        },
        "data_dir": str(data_dir),
        **(sections or {}),
    }
    return parse_config(raw, data_dir.parent)


class BotRunner:
    """Starts and stops a Bot; a restart keeps its data_dir (store, E2EE keys)."""

    def __init__(
        self,
        config: Config,
        groups: Iterable[CommandGroup] = (*GROUPS, test_commands),
        **bot_options: Any,  # clock=, sweep_interval= for the approval gate
    ):
        self.config = config
        self.groups = list(groups)
        self.bot_options = bot_options
        self.bot: Bot | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30) -> Bot:  # noqa: ASYNC109
        self.bot = Bot(self.config, groups=self.groups, **self.bot_options)
        self._task = asyncio.create_task(self.bot.run(), name="bot")
        async with asyncio.timeout(timeout):
            while not self.bot.chat.alive():
                if self._task.done():
                    self._task.result()  # raises what stopped it
                await asyncio.sleep(0.05)
        return self.bot

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
