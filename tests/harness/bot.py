"""Run a real Bot (bot.app.Bot with the real Matrix adapter) inside the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

import yaml

from bot.app import Bot
from bot.config import Config, parse_config
from bot.core.context import Arg, positive_int
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from commands import GROUPS
from tests.harness.dockerd import free_port

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


def raw_bot_config(
    homeserver: str,
    user_id: str,
    password: str,
    rooms: list[str],
    data_dir: pathlib.Path,
    sections: dict[str, Any] | None = None,
    **matrix: Any,
) -> dict[str, Any]:
    """The config as a YAML file holds it (for a bot in its own process)."""
    return {
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


def bot_config(
    homeserver: str,
    user_id: str,
    password: str,
    rooms: list[str],
    data_dir: pathlib.Path,
    sections: dict[str, Any] | None = None,
    **matrix: Any,
) -> Config:
    raw = raw_bot_config(homeserver, user_id, password, rooms, data_dir, sections, **matrix)
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


class BotProcess:
    """The bot as `python -m bot run` in a process of its own: what a SIGKILL (a fault
    point, tests/faults) can hit. `env`: extra environment (COOPBOT_FAULT=...), given
    to every start, and `start(env=)` adds some for one start only. The config gets a
    /healthz listener on a free port: started means /healthz answers 200."""

    def __init__(
        self, raw: dict[str, Any], workdir: pathlib.Path, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.raw = {**raw, "web": {**raw.get("web", {}), "listen": f"127.0.0.1:{self.port}"}}
        self.env = dict(env or {})
        self.log_path = workdir / "bot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def spawn(self, env: dict[str, str] | None = None) -> None:
        """Start the process; does not wait for it (see `start`)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yaml"
        config.write_text(yaml.safe_dump(self.raw))
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "run", "--config", str(config)],
                cwd=str(self.workdir),
                env={**os.environ, **self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # pytest's Ctrl-C must not reach it directly
            )

    async def start(self, env: dict[str, str] | None = None, timeout: float = 60) -> None:  # noqa: ASYNC109
        self.spawn(env)
        await self.healthy(timeout)

    async def healthy(self, timeout: float = 60) -> None:  # noqa: ASYNC109
        """Wait until /healthz says 200 (syncing); raise with the log if it died."""
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self._healthz):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the bot exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot was not healthy in {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.2)

    def _healthz(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def died(self, timeout: float = 120) -> int:  # noqa: ASYNC109
        """Wait for the process to end by itself (a fault point); its return code."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot still runs after {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)
        return code

    def stop(self, timeout: float = 30) -> None:
        """SIGINT (a clean stop), then SIGKILL if it hangs; idempotent."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
