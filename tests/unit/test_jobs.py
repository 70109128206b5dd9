"""bot/core/jobs.py and commands/jobs.py: locks, cancel, timeouts, !jobs, progress messages."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

from bot.app import Bot
from bot.core.context import Arg, CommandContext, positive_int
from bot.core.jobs import Job
from bot.core.progress import Progress
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.errors import UserError
from tests.fakes import Edit, FakeChat
from tests.unit.helpers import (
    ADMIN,
    OPERATOR,
    ROOM,
    VIEWER,
    BotFactory,
    chat_of,
    drain,
    message,
    until,
)


@dataclass
class Work:
    """Test commands. `!work APP TAG` holds APP's lock until gates[TAG] is set."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    gates: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )
    group: CommandGroup = field(default_factory=lambda: CommandGroup("work"))

    def __post_init__(self) -> None:
        command = self.group.command

        @command("work", help="Work on an app.", args=(Arg("app"), Arg("tag")),
                 role=Role.OPERATOR, lock_arg="app")  # fmt: skip
        async def work(ctx: CommandContext) -> None:
            tag = ctx.args["tag"]
            self.calls.append(("start", tag))
            await self.gates[tag].wait()
            self.calls.append(("end", tag))
            await ctx.reply(f"{tag} done")

        @command("guard", help="Admin work.", args=(Arg("tag"),), role=Role.ADMIN)
        async def guard(ctx: CommandContext) -> None:
            await self.gates[ctx.args["tag"]].wait()

        @command("noop", help="Finish at once.")
        async def noop(ctx: CommandContext) -> None:
            await ctx.reply("noop done")

        @command("refusejob", help="Fail with a reason.")
        async def refusejob(ctx: CommandContext) -> None:
            raise UserError("not today")

        @command("sleepy", help="Never finish.", timeout=0.05)
        async def sleepy(ctx: CommandContext) -> None:
            await asyncio.Event().wait()

        @command("forever", help="Never finish (default timeout).")
        async def forever(ctx: CommandContext) -> None:
            await asyncio.Event().wait()

        @command("steps", help="Report progress.", args=(Arg("n", type=positive_int),))
        async def steps(ctx: CommandContext) -> None:
            for step in range(ctx.args["n"]):
                await ctx.progress.update(f"step {step}")
                await asyncio.sleep(0.001)
            await ctx.progress.finish(f"all {ctx.args['n']} steps done")

        @command("quicksteps", help="Report progress, last word in update().",
                 args=(Arg("n", type=positive_int),))  # fmt: skip
        async def quicksteps(ctx: CommandContext) -> None:
            for step in range(ctx.args["n"]):
                await ctx.progress.update(f"step {step}")

        @command("stepfail", help="Fail after some progress.")
        async def stepfail(ctx: CommandContext) -> None:
            await ctx.progress.update("working")
            await ctx.progress.detail("a detail for the thread")
            raise UserError("the app did not converge")

        @command("slowcall", help="A call inside the handler times out on its own.")
        async def slowcall(ctx: CommandContext) -> None:
            raise TimeoutError("the registry did not answer")


@pytest.fixture
def work() -> Work:
    return Work()


def first_id(chat: FakeChat) -> str:
    return chat.sent[0].event_id if chat.sent else ""


def replies(bot: Bot, msg_event_id: str) -> list[str]:
    return chat_of(bot).replies_to(msg_event_id)


# -- per-app locks ------------------------------------------------------------------


async def test_two_jobs_on_one_app_run_one_after_the_other(
    make_bot: BotFactory, work: Work
) -> None:
    bot = make_bot(work.group)
    first = message("!work cloud.test a", OPERATOR)
    await bot.dispatcher.handle(first)
    await until(lambda: work.calls == [("start", "a")])

    second = message("!work cloud.test b", ADMIN)
    await bot.dispatcher.handle(second)
    await until(lambda: replies(bot, second.event_id))
    assert replies(bot, second.event_id) == [
        "⏳ Job #2 waits: job #1 (`!work cloud.test a`) is working on cloud.test."
    ]
    assert [(j.id, j.state, j.app) for j in bot.services.jobs.active()] == [
        (1, "running", "cloud.test"),
        (2, "waiting", "cloud.test"),
    ]
    assert work.calls == [("start", "a")]

    work.gates["a"].set()
    await until(lambda: ("start", "b") in work.calls)
    work.gates["b"].set()
    await drain(bot)
    assert work.calls == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b")]
    assert replies(bot, second.event_id)[-1] == "b done"


async def test_jobs_on_different_apps_run_at_the_same_time(
    make_bot: BotFactory, work: Work
) -> None:
    bot = make_bot(work.group)
    await bot.dispatcher.handle(message("!work cloud.test a", OPERATOR))
    await bot.dispatcher.handle(message("!work wiki.test b", OPERATOR))
    await until(lambda: sorted(work.calls) == [("start", "a"), ("start", "b")])
    assert not any("waits" in text for text in chat_of(bot).texts())
    work.gates["b"].set()
    await until(lambda: ("end", "b") in work.calls)
    assert ("end", "a") not in work.calls
    work.gates["a"].set()
    await drain(bot)


async def test_a_failed_job_releases_the_lock(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group, jobs={"timeout": 0.05})
    await bot.dispatcher.handle(message("!work cloud.test stuck", OPERATOR))
    await drain(bot)  # times out holding the lock
    work.gates["next"].set()
    await bot.dispatcher.handle(message("!work cloud.test next", OPERATOR))
    await drain(bot)
    assert ("end", "next") in work.calls
    assert [row.state for row in bot.store.jobs()] == ["done", "timeout"]


async def test_giving_up_on_the_lock(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group, jobs={"lock_wait": 0.05})
    await bot.dispatcher.handle(message("!work cloud.test a", OPERATOR))
    await until(lambda: work.calls == [("start", "a")])
    second = message("!work cloud.test b", OPERATOR)
    await bot.dispatcher.handle(second)
    await until(lambda: len(replies(bot, second.event_id)) == 2)
    waits, gave_up = replies(bot, second.event_id)
    assert waits.startswith("⏳ Job #2 waits")
    assert re.fullmatch(
        r"❌ Gave up after waiting \d+s for cloud.test to be free; nothing was done.", gave_up
    )
    work.gates["a"].set()
    await drain(bot)
    assert ("start", "b") not in work.calls
    job = bot.store.job(2)
    assert job is not None
    assert job.state == "failed"


# -- cancel --------------------------------------------------------------------------


async def test_cancel_a_running_and_a_waiting_job(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group)
    running = message("!work cloud.test a", OPERATOR)
    waiting = message("!work cloud.test b", OPERATOR)
    await bot.dispatcher.handle(running)
    await until(lambda: work.calls == [("start", "a")])
    await bot.dispatcher.handle(waiting)
    await until(lambda: replies(bot, waiting.event_id))

    cancel_waiting = message("!cancel 2", ADMIN)
    await bot.dispatcher.handle(cancel_waiting)
    assert replies(bot, cancel_waiting.event_id) == ["Cancelling job #2 (`!work cloud.test b`)."]
    await until(lambda: bot.services.jobs.get(2) is None)
    assert replies(bot, waiting.event_id)[-1] == f"🛑 Job #2 cancelled by {ADMIN}."

    cancel_running = message("!cancel 1", OPERATOR)
    await bot.dispatcher.handle(cancel_running)
    await drain(bot)
    assert replies(bot, cancel_running.event_id) == ["Cancelling job #1 (`!work cloud.test a`)."]
    assert replies(bot, running.event_id) == [f"🛑 Job #1 cancelled by {OPERATOR}."]
    assert work.calls == [("start", "a")]

    one, two = bot.store.job(1), bot.store.job(2)
    assert one is not None
    assert (one.state, one.result) == ("cancelled", f"cancelled by {OPERATOR}")
    assert two is not None
    assert (two.state, two.result) == ("cancelled", f"cancelled by {ADMIN}")
    actions = [(row.actor, row.action) for row in reversed(bot.store.audit_log("cloud.test"))]
    assert actions == [
        (ADMIN, "cancel"),
        (OPERATOR, "job.cancelled"),
        (OPERATOR, "cancel"),
        (OPERATOR, "job.cancelled"),
    ]

    # The lock was released: the next job on the app runs at once.
    work.gates["c"].set()
    await bot.dispatcher.handle(message("!work cloud.test c", OPERATOR))
    await drain(bot)
    assert work.calls[-1] == ("end", "c")


async def test_cancel_unknown_job(make_bot: BotFactory) -> None:
    bot = make_bot()
    msg = message("!cancel 99", OPERATOR)
    await bot.dispatcher.handle(msg)
    assert replies(bot, msg.event_id) == ["No running or waiting job #99. `!jobs` lists them."]


async def test_cancel_needs_the_role_of_the_job(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group)
    await bot.dispatcher.handle(message("!guard g", ADMIN))
    await until(lambda: bot.services.jobs.get(1) is not None)
    by_operator = message("!cancel 1", OPERATOR)
    by_viewer = message("!cancel 1", VIEWER)
    await bot.dispatcher.handle(by_operator)
    await bot.dispatcher.handle(by_viewer)
    assert replies(bot, by_operator.event_id) == ["Job #1 needs the admin role to cancel."]
    assert replies(bot, by_viewer.event_id)[0].startswith("🔒 `!cancel` needs the operator role")
    job = bot.services.jobs.get(1)
    assert isinstance(job, Job)  # the manager's own, with its task
    assert job.task is not None
    assert not job.task.done()
    work.gates["g"].set()
    await drain(bot)


async def test_shutdown_cancels_jobs_without_a_report(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group)
    msg = message("!work cloud.test a", OPERATOR)
    await bot.dispatcher.handle(msg)
    await until(lambda: work.calls == [("start", "a")])
    await bot.dispatcher.shutdown()
    assert replies(bot, msg.event_id) == []
    job = bot.store.job(1)
    assert job is not None
    assert (job.state, job.result) == ("cancelled", "cancelled by shutdown")
    assert bot.metrics.registry.get_sample_value("coopbot_jobs_active") == 0


# -- timeouts -------------------------------------------------------------------------


async def test_timeout_from_the_command_spec(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group)
    msg = message("!sleepy", VIEWER)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    (reply,) = replies(bot, msg.event_id)
    assert re.fullmatch(r"⌛ Job #1 timed out after \d+s\.", reply)
    job = bot.store.job(1)
    assert job is not None
    assert job.state == "timeout"
    assert job.result is not None
    assert job.result.startswith("timed out after")


async def test_timeout_from_the_config(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group, jobs={"timeout": "50ms"})
    msg = message("!forever", VIEWER)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    (reply,) = replies(bot, msg.event_id)
    assert reply.startswith("⌛ Job #1 timed out after")
    assert bot.store.audit_log(limit=1)[0].action == "job.timeout"


async def test_a_timeout_inside_the_handler_is_not_the_job_timing_out(
    make_bot: BotFactory, work: Work
) -> None:
    # The handler's own TimeoutError (an HTTP client, docker) has nothing to do
    # with jobs.timeout: it is an unexpected failure, logged with its traceback.
    bot = make_bot(work.group, jobs={"timeout": "30m"})
    msg = message("!slowcall", VIEWER)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    (reply,) = replies(bot, msg.event_id)
    assert "timed out after 1800s" not in reply
    assert "incident" in reply
    job = bot.store.job(1)
    assert job is not None
    assert job.state == "failed"


# -- !jobs ----------------------------------------------------------------------------


async def test_jobs_lists_running_waiting_and_finished(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group)
    await bot.dispatcher.handle(message("!noop", VIEWER))
    await bot.dispatcher.handle(message("!refusejob", VIEWER))
    await drain(bot)
    await bot.dispatcher.handle(message("!work cloud.test a", OPERATOR))
    await until(lambda: work.calls == [("start", "a")])
    second = message("!work cloud.test b", ADMIN)
    await bot.dispatcher.handle(second)
    await until(lambda: replies(bot, second.event_id))

    ask = message("!jobs", VIEWER)
    await bot.dispatcher.handle(ask)
    (listing,) = replies(bot, ask.event_id)
    lines = [re.sub(r"\d+s ago", "Ns ago", line) for line in listing.splitlines()]
    assert lines == [
        f"- #3 **running** on cloud.test: `!work cloud.test a` by {OPERATOR}, Ns ago",
        f"- #4 **waiting** on cloud.test: `!work cloud.test b` by {ADMIN}, Ns ago",
        "",
        "Finished:",
        f"- #2 failed: `!refusejob` by {VIEWER}, Ns ago (not today)",
        f"- #1 done: `!noop` by {VIEWER}, Ns ago",
    ]
    work.gates["a"].set()
    work.gates["b"].set()
    await drain(bot)


async def test_jobs_when_idle_and_keep_finished(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group, jobs={"keep_finished": 2})
    ask = message("!jobs", VIEWER)
    await bot.dispatcher.handle(ask)
    assert replies(bot, ask.event_id) == ["No job is running or waiting."]
    for _ in range(3):
        await bot.dispatcher.handle(message("!noop", VIEWER))
    await drain(bot)
    ask = message("!jobs", VIEWER)
    await bot.dispatcher.handle(ask)
    (listing,) = replies(bot, ask.event_id)
    assert "- #3 done" in listing
    assert "- #2 done" in listing
    assert "#1" not in listing


# -- progress messages ------------------------------------------------------------------


async def test_progress_edits_one_message_and_throttles(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group, jobs={"progress_interval": "50ms"})
    chat = chat_of(bot)
    msg = message("!steps 100", OPERATOR)
    await bot.dispatcher.handle(msg)
    await drain(bot)

    (progress,) = [sent for sent in chat.sent if sent.reply_to == msg.event_id]
    assert progress.markdown == "step 0"
    assert progress.thread_root is None
    edits = chat.edits_of(progress.event_id)
    assert 1 <= len(edits) < 99
    assert edits[-1] == "all 100 steps done"
    assert chat.log[-1] == chat.edits[-1]  # nothing was shown after the final text
    # Edits only ever move forward: a throttled flush never shows stale text.
    numbers = [int(text.split()[1]) for text in edits[:-1]]
    assert numbers == sorted(set(numbers))


async def test_a_failure_ends_the_progress_message(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group)
    chat = chat_of(bot)
    msg = message("!stepfail", OPERATOR)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    (progress,) = chat.sent[:1]
    assert progress.reply_to == msg.event_id
    assert chat.shown(progress.event_id) == "❌ the app did not converge"
    (detail,) = chat.sent[1:]
    assert (detail.markdown, detail.thread_root) == ("a detail for the thread", progress.event_id)


async def test_the_last_progress_update_is_shown_when_the_job_ends(
    make_bot: BotFactory, work: Work
) -> None:
    # Progress promises "the newest text always lands"; a job whose last word is
    # an update() (throttled, so pending) must not lose it when the job ends.
    bot = make_bot(work.group, jobs={"progress_interval": "10s"})
    chat = chat_of(bot)
    msg = message("!quicksteps 20", OPERATOR)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    (progress,) = chat.sent
    assert chat.shown(progress.event_id) == "step 19"


async def test_progress_flushes_a_throttled_update_later() -> None:
    chat = FakeChat()
    progress = Progress(chat, ROOM, "$cmd", "$thread", interval=0.05)
    updates = 60
    for step in range(updates):
        await progress.update(f"step {step}")
        await asyncio.sleep(0.001)
    await until(
        lambda: chat.log and chat.log[-1] == Edit(ROOM, first_id(chat), f"step {updates - 1}")
    )

    (first,) = chat.sent
    assert (first.markdown, first.reply_to, first.thread_root) == ("step 0", "$cmd", "$thread")
    assert progress.event_id == first.event_id
    assert len(chat.edits) < updates - 1
    numbers = [int(edit.markdown.split()[1]) for edit in chat.edits]
    assert numbers == sorted(set(numbers))
    progress.close()


async def test_progress_finish_shows_the_final_text_at_once() -> None:
    chat = FakeChat()
    progress = Progress(chat, ROOM, "$cmd", None, interval=3600)
    await progress.update("starting")
    await progress.update("half way")  # throttled
    await progress.finish("finished")
    (sent,) = chat.sent
    assert sent.markdown == "starting"
    assert chat.log == [sent, Edit(ROOM, sent.event_id, "finished")]
    await progress.finish("finished")  # same text again: no edit
    assert len(chat.edits) == 1


async def test_a_long_job_ends_with_a_reply_that_pings_the_requester(
    make_bot: BotFactory, work: Work
) -> None:
    bot = make_bot(work.group, jobs={"notify_after": 0})  # every job counts as long
    chat = chat_of(bot)
    await bot.dispatcher.handle(message("!steps 3", OPERATOR))
    await bot.dispatcher.handle(message("!stepfail", OPERATOR))
    await drain(bot)
    ends = sorted((s for s in chat.sent if s.notify), key=lambda s: s.markdown.split("#")[1])
    assert [s.markdown.split(" (")[0] for s in ends] == ["✅ Job #1", "❌ Job #2"]
    assert all(s.mentions == (OPERATOR,) for s in ends)
    assert "failed: the app did not converge" in ends[1].markdown
    progress = [s for s in chat.sent if s.reply_to is not None and not s.notify]
    assert {s.thread_root for s in ends} <= {p.event_id for p in progress}


async def test_a_quick_job_ends_without_a_ping(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group)  # notify_after: 30s by default
    await bot.dispatcher.handle(message("!steps 3", OPERATOR))
    await drain(bot)
    assert not any(s.notify for s in chat_of(bot).sent)


async def test_past_max_active_a_job_is_refused_at_once(make_bot: BotFactory, work: Work) -> None:
    bot = make_bot(work.group, jobs={"max_active": 2})
    for app in ("a", "b"):
        work.gates[app] = asyncio.Event()
        await bot.dispatcher.handle(message(f"!work {app} {app}", OPERATOR))
    third = message("!noop", OPERATOR)
    await bot.dispatcher.handle(third)
    (answer,) = replies(bot, third.event_id)
    assert answer.startswith("🐢 The bot is busy: 2 jobs are running or queued")
    for gate in work.gates.values():
        gate.set()
    await drain(bot)
    assert [len(bot.store.jobs())] == [2]  # the refused one left no job behind


async def test_a_member_past_the_rate_is_told_once_then_dropped(
    make_bot: BotFactory, work: Work
) -> None:
    bot = make_bot(work.group, jobs={"member_rate": 3})
    asked = [message("!noop", OPERATOR) for _ in range(6)]
    for msg in asked:
        await bot.dispatcher.handle(msg)
    await drain(bot)
    answers = [replies(bot, msg.event_id) for msg in asked]
    assert answers[:3] == [["noop done"]] * 3
    assert answers[3][0].startswith("🐢 Slow down: more than 3 commands in a minute")
    assert answers[4:] == [[], []]
    other = message("!noop", "@admin:test")  # others are not held back
    await bot.dispatcher.handle(other)
    await drain(bot)
    assert replies(bot, other.event_id) == ["noop done"]
