"""bot/core/console.py: the local room on stdin/stdout, run through Bot.run()."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from bot.app import Bot
from bot.config import parse_config
from bot.core.console import CONSOLE_ROOM, CONSOLE_USER, ConsoleChat
from bot.core.context import CommandContext
from bot.core.registry import CommandGroup
from bot.core.store import Store
from commands import GROUPS

slow = CommandGroup("slow")


@slow.command("slow", help="Finish a little later.")
async def _slow(ctx: CommandContext) -> None:
    await asyncio.sleep(0.02)
    await ctx.progress.update("half way")
    await ctx.progress.finish("slow done")


async def run_console(
    tmp_path: Path, text: str, sender: str = CONSOLE_USER, **sections: object
) -> list[str]:
    config = parse_config({"data_dir": str(tmp_path / "data"), **sections}, tmp_path)
    stdout = io.StringIO()
    chat = ConsoleChat("!", sender, stdin=io.StringIO(text), stdout=stdout)
    bot = Bot(config, chat=chat, groups=[*GROUPS, slow])
    async with asyncio.timeout(5):
        await bot.run()
    assert not chat.alive()
    return stdout.getvalue().splitlines()


async def test_ping_and_help_with_the_prefix_added(tmp_path: Path) -> None:
    lines = await run_console(tmp_path, "ping\n\n   \n!help\n")
    assert lines[0] == f"coopbot console: you are {CONSOLE_USER}. Try !help; Ctrl-D quits."
    assert any(line.startswith("coopbot> pong (coopbot ") for line in lines)
    # The person at the terminal is an admin: help shows the operator commands too.
    assert "coopbot> Commands you (admin) may run here:" in lines
    assert any(line.startswith("- `!audit") for line in lines)
    assert any(line.startswith("- `!ping`: Check that the bot hears you.") for line in lines)


async def test_exits_at_end_of_input_after_jobs_finish(tmp_path: Path) -> None:
    lines = await run_console(tmp_path, "slow\n")
    assert lines[1:] == ["coopbot> half way", "coopbot (update)> slow done"]
    # The job was recorded as done before the store was closed.
    store = Store(tmp_path / "data" / "coopbot.sqlite")
    (job,) = store.jobs()
    assert (job.text, job.state) == ("!slow", "done")
    store.close()


async def test_acting_as_another_member(tmp_path: Path) -> None:
    lines = await run_console(
        tmp_path, "audit\n", sender="@bob:test", access={"operators": ["@bob:test"]}
    )
    assert "coopbot> Audit log, newest first:" in lines
    lines = await run_console(tmp_path, "audit\n", sender="@eve:test")
    assert (
        "coopbot> 🔒 `!audit` needs the operator role; @eve:test is viewer. Nothing was done."
        in lines
    )


async def test_console_chat_formats_threads_mentions_and_reactions() -> None:
    stdout = io.StringIO()
    chat = ConsoleChat("!", stdout=stdout)
    first = await chat.send(CONSOLE_ROOM, "hello", mentions=["@a:test", "@b:test"])
    second = await chat.send(CONSOLE_ROOM, "detail", thread_root=first)
    await chat.react(CONSOLE_ROOM, first, "👍")
    assert first != second
    assert stdout.getvalue().splitlines() == [
        "coopbot> [to @a:test, @b:test] hello",
        "  ↳ coopbot> detail",
        "coopbot reacts 👍",
    ]
    assert (await chat.membership(CONSOLE_ROOM, CONSOLE_USER)).power_level == 100
    assert (await chat.membership(CONSOLE_ROOM, "@other:test")).power_level == 0


async def test_jobs_left_open_by_the_last_run_are_marked_interrupted(tmp_path: Path) -> None:
    store = Store(tmp_path / "data" / "coopbot.sqlite")
    job_id = store.add_job("slow", "!slow", "cloud.test", "@bob:test", "!r:test", "$old")
    store.close()

    await run_console(tmp_path, "")

    store = Store(tmp_path / "data" / "coopbot.sqlite")
    job = store.job(job_id)
    assert job is not None
    assert job.state == "interrupted"
    (entry,) = store.audit_log("cloud.test")
    assert (entry.actor, entry.action, entry.detail) == ("@bob:test", "job.interrupted", "#1 !slow")
    store.close()
