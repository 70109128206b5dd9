"""commands/help.py and commands/audit.py as members use them."""

from __future__ import annotations

from bot import __version__
from bot.app import Bot
from tests.unit.helpers import ADMIN, OPERATOR, VIEWER, BotFactory, chat_of, message


async def ask(bot: Bot, body: str, sender: str = OPERATOR) -> list[str]:
    msg = message(body, sender)
    await bot.dispatcher.handle(msg)
    return chat_of(bot).replies_to(msg.event_id)


async def test_ping(make_bot: BotFactory) -> None:
    assert await ask(make_bot(), "!ping", VIEWER) == [f"pong (coopbot {__version__})"]


async def test_audit_filters_by_app_and_counts(make_bot: BotFactory) -> None:
    bot = make_bot()
    for n in range(5):
        bot.store.audit(ADMIN, "job.done", f"#{n} deploy", app="cloud.test")
    bot.store.audit(ADMIN, "job.done", "#9 deploy", app="wiki.test")

    (text,) = await ask(bot, "!audit cloud.test 2")
    lines = text.splitlines()
    assert lines[:2] == ["Audit log for cloud.test, newest first:", ""]
    assert len(lines) == 4
    assert lines[2].endswith(f"{ADMIN} **job.done** [cloud.test] #4 deploy")
    assert lines[3].endswith("#3 deploy")

    (text,) = await ask(bot, "!audit 3")  # a number alone is a count
    lines = text.splitlines()
    assert lines[0] == "Audit log, newest first:"
    assert len(lines) == 2 + 3
    assert lines[2].endswith(f"{OPERATOR} **command** !audit 3")  # the command itself


async def test_audit_of_an_app_with_no_entries(make_bot: BotFactory) -> None:
    assert await ask(make_bot(), "!audit quiet.test") == ["The audit log is empty for quiet.test."]


async def test_audit_needs_operator(make_bot: BotFactory) -> None:
    (reply,) = await ask(make_bot(), "!audit", VIEWER)
    assert reply.startswith("🔒 `!audit` needs the operator role")


async def test_audit_count_must_be_a_number(make_bot: BotFactory) -> None:
    (reply,) = await ask(make_bot(), "!audit cloud.test many")
    assert reply == "<n>: 'many' is not a whole number\nUsage: `!audit [app] [n]`"


async def test_help_for_a_family_lists_its_subcommands_and_examples(make_bot: BotFactory) -> None:
    (text,) = await ask(make_bot(), "!help backup", OPERATOR)
    assert text.startswith("**`!backup <target>`**")
    assert "Subcommands:" in text
    for usage in ("!backup all", "!backup check", "!backup drill", "!backup prune"):
        assert f"- `{usage}`: " in text
    assert "Example: `!backup cloud.example.coop`, `!backup check`" in text
    assert text.endswith("Needs: operator")


async def test_help_for_one_command_shows_its_example(make_bot: BotFactory) -> None:
    (text,) = await ask(make_bot(), "!help deploy", OPERATOR)
    assert "Example: `!deploy cloud.example.coop 2.1.0+1.0`" in text


async def test_help_list_shows_subcommands_under_their_family(make_bot: BotFactory) -> None:
    (text,) = await ask(make_bot(), "!help", OPERATOR)
    lines = text.splitlines()
    family = lines.index(next(line for line in lines if line.startswith("- `!backup <target>`")))
    assert lines[family + 1].startswith("  - `!backup check`: ")
