"""bot/core/dispatcher.py through the real Bot: parse → authorise → run → report."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

import pytest

from bot.app import Bot
from bot.core.chat import Membership
from bot.core.context import Arg, CommandContext
from bot.core.dispatcher import MAX_COMMAND_LENGTH
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.errors import UserError
from tests.unit.helpers import (
    ADMIN,
    OPERATOR,
    ROOM,
    STRANGER,
    VIEWER,
    BotFactory,
    chat_of,
    drain,
    message,
    until,
)

SECRET_DETAIL = "db password is hunter2"
REFUSAL = "App **cloud.test** is not deployed; `!apps` lists them."


@dataclass
class Probe:
    """Test-only commands that record who ran what; `work` waits for `gate`."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    group: CommandGroup = field(default_factory=lambda: CommandGroup("probe"))

    def __post_init__(self) -> None:
        command = self.group.command

        @command("look", help="Look around.", args=(Arg("what", required=False, rest=True),),
                 quick=True)  # fmt: skip
        async def look(ctx: CommandContext) -> None:
            self.calls.append(("look", ctx.sender))
            await ctx.reply("you see a room")

        @command("poke", help="Poke an app.", args=(Arg("app"),), role=Role.OPERATOR, quick=True)
        async def poke(ctx: CommandContext) -> None:
            self.calls.append(("poke", ctx.sender))
            await ctx.reply(f"poked {ctx.args['app']}")

        @command("wipe", help="Wipe the cache.", role=Role.ADMIN, quick=True)
        async def wipe(ctx: CommandContext) -> None:
            self.calls.append(("wipe", ctx.sender))
            await ctx.reply("wiped")

        @command("nuke", help="Destroy everything.", role=Role.ADMIN, vote_policy="destroy")
        async def nuke(ctx: CommandContext) -> None:
            self.calls.append(("nuke", ctx.sender))

        @command("work", help="Work on an app.", args=(Arg("app"),), role=Role.OPERATOR,
                 lock_arg="app")  # fmt: skip
        async def work(ctx: CommandContext) -> None:
            self.calls.append(("work", ctx.sender))
            await self.gate.wait()
            await ctx.reply(f"worked on {ctx.args['app']}")

        @command("crash", help="Fail unexpectedly.", quick=True)
        async def crash(ctx: CommandContext) -> None:
            raise RuntimeError(SECRET_DETAIL)

        @command("crashjob", help="Fail unexpectedly in a job.")
        async def crashjob(ctx: CommandContext) -> None:
            raise RuntimeError(SECRET_DETAIL)

        @command("refuse", help="Refuse politely.", quick=True)
        async def refuse(ctx: CommandContext) -> None:
            raise UserError(REFUSAL)

        @command("refusejob", help="Refuse politely in a job.")
        async def refusejob(ctx: CommandContext) -> None:
            raise UserError(REFUSAL)


@pytest.fixture
def probe() -> Probe:
    return Probe()


async def ask(
    bot: Bot, body: str, sender: str = ADMIN, thread_root: str | None = None
) -> list[str]:
    """Handle one message, let its job finish, and return the replies to it."""
    msg = message(body, sender, thread_root=thread_root)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    return chat_of(bot).replies_to(msg.event_id)


# -- help ------------------------------------------------------------------------


async def test_help_lists_only_what_the_role_may_run(make_bot: BotFactory, probe: Probe) -> None:
    bot = make_bot(probe.group)
    (viewer_help,) = await ask(bot, "!help", VIEWER)
    assert viewer_help.startswith("Commands you (viewer) may run here:")
    for shown in ("`!look [what...]`: Look around.", "`!help [command]`", "`!ping`", "`!jobs`"):
        assert shown in viewer_help
    for hidden in ("!poke", "!wipe", "!nuke", "!work", "!cancel", "!audit"):
        assert hidden not in viewer_help

    (operator_help,) = await ask(bot, "!help", OPERATOR)
    assert "`!poke <app>`: Poke an app." in operator_help
    assert "`!cancel <id>`" in operator_help
    assert "!wipe" not in operator_help
    assert "!nuke" not in operator_help


async def test_help_marks_commands_that_need_a_vote(make_bot: BotFactory, probe: Probe) -> None:
    bot = make_bot(probe.group)
    (admin_help,) = await ask(bot, "!help", ADMIN)
    lines = {line.split("`")[1]: line for line in admin_help.splitlines() if line.startswith("- ")}
    assert lines["!nuke"].endswith("🗳 *needs a vote*")
    assert "vote" not in lines["!wipe"]
    assert "vote" not in lines["!look [what...]"]


async def test_help_for_one_command(make_bot: BotFactory, probe: Probe) -> None:
    bot = make_bot(probe.group)
    (text,) = await ask(bot, "!help nuke", ADMIN)
    assert text.startswith("**`!nuke`**")
    assert "Destroy everything." in text
    assert text.endswith("Needs: admin, and a vote")
    (text,) = await ask(bot, "!h !poke", OPERATOR)  # alias, and the prefix is tolerated
    assert "- `<app>`" not in text  # poke's argument has no help text
    assert text.endswith("Needs: operator")


@pytest.mark.parametrize("word", ["wipe", "nuke", "doesnotexist"])
async def test_help_for_a_command_above_your_role_says_there_is_none(
    make_bot: BotFactory, probe: Probe, word: str
) -> None:
    bot = make_bot(probe.group)
    assert await ask(bot, f"!help {word}", VIEWER) == [
        f"No command `!{word}` that you may run. Try `!help`."
    ]


# -- unknown commands -------------------------------------------------------------


async def test_unknown_command_with_suggestions(make_bot: BotFactory, probe: Probe) -> None:
    bot = make_bot(probe.group)
    assert await ask(bot, "!lok around", VIEWER) == [
        "Unknown command `!lok`. Did you mean `!look`? `!help` lists what you can run."
    ]
    assert probe.calls == []


async def test_unknown_command_without_suggestions(make_bot: BotFactory, probe: Probe) -> None:
    bot = make_bot(probe.group)
    assert await ask(bot, "!xyzzy", VIEWER) == [
        "Unknown command `!xyzzy`. `!help` lists what you can run."
    ]


async def test_unknown_long_word_is_shortened(make_bot: BotFactory) -> None:
    bot = make_bot()
    (reply,) = await ask(bot, "!" + "q" * 300)
    assert reply.startswith("Unknown command `!" + "q" * 39 + "…`.")


# -- authorisation ---------------------------------------------------------------------


async def test_unauthorised_member_is_told_the_needed_role(
    make_bot: BotFactory, probe: Probe
) -> None:
    bot = make_bot(probe.group)
    assert await ask(bot, "!poke cloud.test", VIEWER) == [
        f"🔒 `!poke` needs the operator role; {VIEWER} is viewer. Nothing was done."
    ]
    assert await ask(bot, "!wipe", OPERATOR) == [
        f"🔒 `!wipe` needs the admin role; {OPERATOR} is operator. Nothing was done."
    ]
    assert probe.calls == []


async def test_permission_is_checked_before_arguments(make_bot: BotFactory, probe: Probe) -> None:
    bot = make_bot(probe.group)
    (reply,) = await ask(bot, "!poke", VIEWER)  # missing <app>, but the role comes first
    assert reply.startswith("🔒 `!poke` needs the operator role")


async def test_non_member_is_refused_even_for_viewer_commands(
    make_bot: BotFactory, probe: Probe
) -> None:
    bot = make_bot(probe.group)
    assert await ask(bot, "!look", STRANGER) == [
        f"🔒 `!look` needs the viewer role; {STRANGER} is not a member of this room. "
        "Nothing was done."
    ]
    assert probe.calls == []


async def test_role_is_checked_again_when_the_job_starts(
    make_bot: BotFactory, probe: Probe
) -> None:
    bot = make_bot(probe.group)
    chat = chat_of(bot)
    await bot.dispatcher.handle(message("!work cloud.test", ADMIN))
    await until(lambda: probe.calls == [("work", ADMIN)])
    second = message("!work cloud.test", OPERATOR)
    await bot.dispatcher.handle(second)
    await until(lambda: any("waits" in text for text in chat.replies_to(second.event_id)))

    chat.set_member(OPERATOR, 0)  # demoted while the job waits for the app's lock
    probe.gate.set()
    await drain(bot)

    assert probe.calls == [("work", ADMIN)]
    assert chat.replies_to(second.event_id)[-1] == (
        f"❌ 🔒 `!work` needs the operator role; {OPERATOR} is viewer. Nothing was done."
    )
    job = bot.store.job(2)
    assert job is not None
    assert job.sender == OPERATOR
    assert job.state == "failed"


async def test_config_lists_override_power_levels(make_bot: BotFactory, probe: Probe) -> None:
    alice, bob = "@alice:test", "@bob:test"
    bot = make_bot(
        probe.group,
        members={alice: (True, 0), bob: (True, 100)},
        access={"admins": [alice], "operators": [bob]},
    )
    assert await ask(bot, "!wipe", alice) == ["wiped"]
    assert await ask(bot, "!wipe", bob) == [
        f"🔒 `!wipe` needs the admin role; {bob} is operator. Nothing was done."
    ]
    assert await ask(bot, "!poke x", bob) == ["poked x"]


async def test_power_level_thresholds_come_from_the_config(
    make_bot: BotFactory, probe: Probe
) -> None:
    carol = "@carol:test"
    bot = make_bot(
        probe.group,
        members={carol: (True, 10)},
        access={"operator_power": 10, "admin_power": 20},
    )
    assert await ask(bot, "!poke x", carol) == ["poked x"]
    (reply,) = await ask(bot, "!wipe", carol)
    assert reply.startswith("🔒")


async def test_room_creator_is_admin_whatever_the_power_level(
    make_bot: BotFactory, probe: Probe
) -> None:
    creator = "@creator:test"
    bot = make_bot(probe.group, members={creator: Membership(True, 0, creator=True)})
    assert await ask(bot, "!wipe", creator) == ["wiped"]


# -- what is and is not a command ----------------------------------------------------------


@pytest.mark.parametrize("body", ["hello", "ping", "", "!", " !ping", "?help"])
async def test_messages_without_the_prefix_are_ignored(
    make_bot: BotFactory, probe: Probe, body: str
) -> None:
    bot = make_bot(probe.group)
    await bot.dispatcher.submit(message(body, ADMIN))
    await drain(bot)
    assert chat_of(bot).sent == []
    assert bot.store.audit_log() == []


async def test_submit_handles_commands(make_bot: BotFactory) -> None:
    bot = make_bot()
    msg = message("!ping", VIEWER)
    await bot.dispatcher.submit(msg)
    await drain(bot)
    (reply,) = chat_of(bot).replies_to(msg.event_id)
    assert reply.startswith("pong (coopbot ")


async def test_a_custom_prefix(make_bot: BotFactory) -> None:
    bot = make_bot(
        matrix={
            "homeserver": "https://hs.test",
            "user_id": "@bot:hs.test",
            "rooms": [ROOM],
            "password": "pw",
            "prefix": "cb:",
        }
    )
    ignored = message("!ping", VIEWER)
    await bot.dispatcher.submit(ignored)
    assert (await ask(bot, "cb:ping", VIEWER))[0].startswith("pong")
    (reply,) = await ask(bot, "cb:pnig", VIEWER)
    assert "Did you mean `cb:ping`?" in reply
    assert chat_of(bot).replies_to(ignored.event_id) == []


async def test_over_long_message_is_refused(make_bot: BotFactory, probe: Probe) -> None:
    bot = make_bot(probe.group)
    at_limit = "!look " + "x" * (MAX_COMMAND_LENGTH - len("!look "))
    assert await ask(bot, at_limit) == ["you see a room"]
    too_long = at_limit + "x"
    assert await ask(bot, too_long) == [
        f"That message is too long for a command ({MAX_COMMAND_LENGTH + 1} characters)."
    ]
    assert probe.calls == [("look", ADMIN)]


async def test_usage_error_shows_the_usage_line(make_bot: BotFactory, probe: Probe) -> None:
    bot = make_bot(probe.group)
    assert await ask(bot, "!poke", OPERATOR) == ["missing <app>\nUsage: `!poke <app>`"]
    assert await ask(bot, "!POKE a b", OPERATOR) == [
        "unexpected argument `b`\nUsage: `!poke <app>`"
    ]


async def test_replies_stay_in_the_thread_of_the_command(make_bot: BotFactory) -> None:
    bot = make_bot()
    msg = message("!ping", VIEWER, thread_root="$thread")
    await bot.dispatcher.handle(msg)
    (sent,) = chat_of(bot).sent
    assert (sent.room, sent.reply_to, sent.thread_root) == (ROOM, msg.event_id, "$thread")


async def test_command_needing_a_vote_becomes_a_proposal(
    make_bot: BotFactory, probe: Probe
) -> None:
    bot = make_bot(probe.group)
    (proposal,) = await ask(bot, "!nuke", ADMIN)
    assert "Proposal" in proposal
    assert "Needs **2** approvals" in proposal
    assert probe.calls == []
    assert bot.store.jobs() == []


# -- errors ------------------------------------------------------------------------------


INCIDENT = re.compile(r"incident `([0-9a-f]{8})`")


LOG_HINT = "the bot's log has the details."


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("!crash", f"💥 Something went wrong (incident `{{}}`); {LOG_HINT}"),
        ("!crashjob", f"💥 Job #1 failed unexpectedly (incident `{{}}`); {LOG_HINT}"),
    ],
)
async def test_unexpected_exception_gives_an_incident_id_and_no_traceback(
    make_bot: BotFactory, probe: Probe, caplog: pytest.LogCaptureFixture, body: str, expected: str
) -> None:
    bot = make_bot(probe.group)
    with caplog.at_level(logging.ERROR):
        (reply,) = await ask(bot, body, VIEWER)
    match = INCIDENT.search(reply)
    assert match is not None, reply
    incident = match.group(1)
    assert reply == expected.format(incident)
    for text in chat_of(bot).texts():
        assert "Traceback" not in text
        assert "RuntimeError" not in text
        assert SECRET_DETAIL not in text
    # The log has what the room does not: the incident id with the traceback.
    (record,) = [r for r in caplog.records if incident in r.getMessage()]
    assert record.exc_info is not None
    assert SECRET_DETAIL in str(record.exc_info[1])
    assert bot.metrics.registry.get_sample_value("coopbot_failures_total") == 1


async def test_user_error_is_shown_verbatim(make_bot: BotFactory, probe: Probe) -> None:
    bot = make_bot(probe.group)
    assert await ask(bot, "!refuse", VIEWER) == [REFUSAL]
    assert await ask(bot, "!refusejob", VIEWER) == [f"❌ {REFUSAL}"]
    job = bot.store.job(1)
    assert job is not None
    assert (job.state, job.result) == ("failed", REFUSAL)


# -- audit -------------------------------------------------------------------------------


async def test_audit_log_records_commands_denials_and_job_results(
    make_bot: BotFactory, probe: Probe
) -> None:
    bot = make_bot(probe.group)
    probe.gate.set()
    await ask(bot, "!look", VIEWER)
    await ask(bot, "!poke cloud.test", VIEWER)
    await ask(bot, "!work cloud.test", OPERATOR)
    await ask(bot, "!nosuchcommand", VIEWER)  # unknown: nothing to audit

    rows = list(reversed(bot.store.audit_log()))
    assert [(r.actor, r.action, r.detail, r.app) for r in rows] == [
        (VIEWER, "command", "!look", None),
        (VIEWER, "command", "!poke cloud.test", None),
        (VIEWER, "denied", "poke needs operator", None),
        (OPERATOR, "command", "!work cloud.test", None),
        (OPERATOR, "job.done", "#1 !work cloud.test → ok", "cloud.test"),
    ]
    assert all(r.room_id == ROOM and r.event_id for r in rows)
    assert [r.action for r in bot.store.audit_log("cloud.test")] == ["job.done"]


async def test_a_command_keeping_few_words_records_no_more_of_its_line(
    make_bot: BotFactory,
) -> None:
    group = CommandGroup("probe")

    @group.command("call", help="Call with secrets.", args=(Arg("app"), Arg("rest", rest=True)),
                   role=Role.OPERATOR, lock_arg="app", recorded_words=1)  # fmt: skip
    async def call(ctx: CommandContext) -> None:
        await ctx.reply("called")

    bot = make_bot(group)
    replies = await ask(bot, "!call cloud.test set_pass alice hunter2", OPERATOR)
    assert replies == ["called"]
    kept = "!call cloud.test … (3 more words not recorded)"
    assert [r.detail for r in bot.store.audit_log() if r.action == "command"] == [kept]
    assert [row.text for row in bot.store.jobs()] == [kept]
    assert not any("hunter2" in r.detail for r in bot.store.audit_log())


async def test_quick_commands_leave_no_job_record(make_bot: BotFactory) -> None:
    bot = make_bot()
    await ask(bot, "!ping")
    assert bot.store.jobs() == []


async def test_bot_run_hears_every_message_then_finishes_the_work(
    make_bot: BotFactory, probe: Probe
) -> None:
    bot = make_bot(probe.group)
    chat = chat_of(bot)
    probe.gate.set()
    chat.incoming = [
        message("!work cloud.test", OPERATOR),
        message("not for the bot", VIEWER),
        message("!look", VIEWER),
    ]
    async with asyncio.timeout(5):
        await bot.run()
    assert sorted(probe.calls) == [("look", VIEWER), ("work", OPERATOR)]
    assert sorted(chat.texts()) == ["worked on cloud.test", "you see a room"]
