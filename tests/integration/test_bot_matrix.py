"""The bot core end to end: a real Synapse, real nio members, the real Matrix adapter."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import nio
import pytest

from tests.harness.coop import Coop, bot_messages, make_coop
from tests.harness.member import MemberFactory
from tests.harness.synapse import Synapse


@pytest.fixture
async def coop(synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path) -> Coop:
    return await make_coop(synapse, make_member, tmp_path)


@pytest.fixture
async def running(coop: Coop) -> AsyncIterator[Coop]:
    runner = coop.runner()
    await runner.start()
    try:
        yield coop
    finally:
        await runner.stop()


async def test_help_lists_only_what_the_member_may_run(running: Coop) -> None:
    admin_help = await running.ask(running.alice, "!help", "Commands you (admin)")
    assert "!cancel <id>" in admin_help
    assert "!audit" in admin_help
    viewer_help = await running.ask(running.carol, "!help", "Commands you (viewer)")
    assert "!ping" in viewer_help
    assert "!cancel" not in viewer_help
    assert "!audit" not in viewer_help
    detail = await running.ask(running.bob, "!help cancel", "!cancel <id>")
    assert "Needs: operator" in detail


async def test_replies_are_html_notices_replying_to_the_command(running: Coop) -> None:
    event_id = await running.alice.send(running.room, "!ping")
    reply = await running.alice.wait_for_reply(running.room, running.bot_id, "pong")
    content = reply.source["content"]
    assert content["msgtype"] == "m.notice"
    assert content["format"] == "org.matrix.custom.html"
    assert content["formatted_body"]
    assert content["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id


async def test_unknown_command_names_what_was_typed_and_suggests(running: Coop) -> None:
    answer = await running.ask(running.carol, "!pnig", "Unknown command")
    assert "`!pnig`" in answer
    assert "Did you mean `!ping`" in answer


async def test_unauthorised_member_is_told_the_role_needed(running: Coop) -> None:
    answer = await running.ask(running.carol, "!slow 1", "needs the operator role")
    assert "viewer" in answer
    assert "Nothing was done" in answer
    # The operator (power 50) may run it; nothing of carol's ran.
    await running.bob.send(running.room, "!slow 1")
    await running.bob.wait_for_reply(running.room, running.bot_id, "slow 1 done")
    started = [m for m in bot_messages(running, await running.carol.drain()) if "working" in m]
    assert len(started) == 1, started  # only bob's job ran


async def test_a_long_job_does_not_block_other_commands(running: Coop) -> None:
    await running.bob.send(running.room, "!slow 30 app1")
    await running.bob.wait_for_reply(running.room, running.bot_id, "working")
    # While the job works, the bot still answers at once.
    await running.ask(running.alice, "!ping", "pong", timeout=10)
    jobs = await running.ask(running.alice, "!jobs", "running")
    assert "!slow 30 app1" in jobs
    assert "on app1" in jobs
    job_id = jobs.split("#", 1)[1].split(" ", 1)[0]
    await running.ask(running.bob, f"!cancel {job_id}", f"Cancelling job #{job_id}")
    await running.bob.wait_for_reply(running.room, running.bot_id, "cancelled by")
    pending = bot_messages(running, await running.bob.drain())
    assert not any("slow 30 done" in m for m in pending)


async def test_progress_is_one_edited_message_with_details_in_its_thread(running: Coop) -> None:
    bob, room = running.bob, running.room
    await bob.send(room, "!slow 3")
    progress = await bob.wait_for_reply(room, running.bot_id, "working 1/3")
    detail = await bob.wait_for_reply(room, running.bot_id, "detail of the first step")
    relation = detail.source["content"]["m.relates_to"]
    assert relation["rel_type"] == "m.thread"
    assert relation["event_id"] == progress.event_id
    final = await bob.wait_for_reply(room, running.bot_id, "slow 3 done")
    edit = final.source["content"]
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": progress.event_id}
    assert edit["m.new_content"]["body"] == "slow 3 done"
    assert edit["m.mentions"] == {}  # an edit never pings again
    ping = await bob.wait_for_reply(room, running.bot_id, "your slow job is done")
    assert ping.source["content"]["m.mentions"] == {"user_ids": [bob.user_id]}


async def test_two_jobs_on_one_app_run_one_after_the_other(running: Coop) -> None:
    await running.bob.send(running.room, "!slow 3 app2")
    await running.bob.wait_for_reply(running.room, running.bot_id, "working")
    waits = await running.ask(running.alice, "!slow 1 app2", "waits")
    assert "!slow 3 app2" in waits
    await running.alice.wait_for_reply(running.room, running.bot_id, "slow 3 done")
    await running.alice.wait_for_reply(running.room, running.bot_id, "slow 1 done")


async def test_an_edited_command_does_not_run_again(running: Coop) -> None:
    first = await running.alice.send(running.room, "!echo one")
    await running.alice.wait_for_reply(running.room, running.bot_id, "echo: one")
    await running.alice.edit(running.room, first, "!echo edited")
    # A later command is answered, and nothing answered the edit before it.
    await running.ask(running.alice, "!echo marker", "echo: marker")
    seen = bot_messages(running, await running.alice.drain())
    assert not any("edited" in message for message in seen), seen


async def test_notices_from_other_bots_are_ignored(running: Coop) -> None:
    await running.carol.send(running.room, "!echo from-a-notice", msgtype="m.notice")
    await running.ask(running.carol, "!echo marker", "echo: marker")
    seen = bot_messages(running, await running.carol.drain())
    assert not any("from-a-notice" in message for message in seen), seen


async def test_the_bot_survives_bad_input(running: Coop) -> None:
    alice = running.alice
    too_long = await running.ask(alice, "!echo " + "x" * 10_000, "too long")
    assert "10006 characters" in too_long
    assert "no closing quotation" in await running.ask(alice, '!help "ping', "cannot read")
    assert "Usage" in await running.ask(alice, "!cancel ''", "Usage")
    odd = "!echo \u202eevil\u200b 🙂 \x00 ǅ 🏳️‍🌈"
    assert "🙂" in await running.ask(alice, odd, "echo:")
    assert "Unknown command" in await running.ask(alice, "!\u202e", "Unknown command")
    assert "Usage" in await running.ask(alice, "!slow", "missing <seconds>")
    await running.ask(alice, "!ping", "pong")


async def test_restart_neither_replays_nor_loses_commands(coop: Coop) -> None:
    runner = coop.runner()
    bot = await runner.start()
    device = bot.chat.client.device_id  # type: ignore[attr-defined]
    await coop.ask(coop.alice, "!echo before-restart", "echo: before-restart")
    await runner.stop()
    # Sent while the bot is down: must run once it is back.
    await coop.alice.send(coop.room, "!echo while-down")
    bot = await runner.start()
    assert bot.chat.client.device_id == device  # type: ignore[attr-defined]  # no new device
    await coop.alice.wait_for_reply(coop.room, coop.bot_id, "echo: while-down")
    await coop.ask(coop.alice, "!echo marker", "echo: marker")
    seen = bot_messages(coop, await coop.alice.drain())
    assert not any("before-restart" in m or "while-down" in m for m in seen), seen
    await runner.stop()


async def test_a_backlog_longer_than_one_sync_is_worked_through(coop: Coop) -> None:
    runner = coop.runner()
    await runner.start()
    await runner.stop()
    # More than the 50 timeline events of one sync: the gap is filled from /messages.
    for number in range(120):
        body = f"!echo backlog-{number}" if number % 30 == 0 else f"chatter {number}"
        await coop.bob.send(coop.room, body)
        if number % 40 == 39:
            await coop.alice.drain()  # the bot is down: nothing of its to lose here
    await runner.start()
    for number in range(0, 120, 30):
        await coop.alice.wait_for_reply(coop.room, coop.bot_id, f"echo: backlog-{number}")
    await runner.stop()


async def test_commands_too_old_to_run_late_are_answered_not_run(coop: Coop) -> None:
    runner = coop.runner(catchup_max_age="2s")
    await runner.start()
    await runner.stop()
    await coop.alice.send(coop.room, "!echo stale")
    await asyncio.sleep(3)
    await runner.start()
    answer = await coop.alice.wait_for_reply(coop.room, coop.bot_id, "Not run")
    assert "Send it again" in answer.source["content"]["body"]
    await coop.ask(coop.alice, "!echo marker", "echo: marker")
    assert not any("echo: stale" in m for m in bot_messages(coop, await coop.alice.drain()))
    await runner.stop()


async def test_history_from_before_the_bot_joined_is_never_run(coop: Coop) -> None:
    await coop.alice.send(coop.room, "!echo ancient-history")
    runner = coop.runner()
    await runner.start()
    await coop.ask(coop.alice, "!echo marker", "echo: marker")
    assert not any("ancient" in m for m in bot_messages(coop, await coop.alice.drain()))
    await runner.stop()


async def test_invites_only_to_configured_rooms_are_accepted(running: Coop) -> None:
    other = await running.carol.create_room(name="elsewhere", invite=[running.bot_id])

    def bot_left(room: str, event: nio.Event) -> bool:
        return (
            room == other
            and isinstance(event, nio.RoomMemberEvent)
            and event.state_key == running.bot_id
            and event.membership == "leave"
        )

    await running.carol.wait_for(bot_left, timeout=30)


async def test_encrypted_room(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path
) -> None:
    coop = await make_coop(synapse, make_member, tmp_path, encrypted=True)
    runner = coop.runner(encryption=True)
    await runner.start()
    try:
        # The first message may race the bot's key upload: members retry once.
        event = None
        for _ in range(3):
            await coop.alice.send(coop.room, "!ping")
            try:
                event = await coop.alice.wait_for_reply(coop.room, coop.bot_id, "pong", 15)
                break
            except TimeoutError:
                continue
        assert event is not None, "the bot never answered in the encrypted room"
        assert isinstance(event, nio.RoomMessageNotice)
        assert event.decrypted  # it came encrypted and was decrypted by the member
        reply = await coop.ask(coop.bob, "!echo secret-ops", "echo: secret-ops")
        assert reply == "echo: secret-ops"
    finally:
        await runner.stop()
