"""Votes by reaction on a real Synapse, with real members clicking.

alice created the room (v12 creator: admin), bob and dave have power 50
(operators), carol is a viewer. bob asks `!risky <app>`, which needs the
default policy: 2 approvals from operators or above, one 👎 vetoes.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nio
import pytest

from tests.harness.bot import APP_STATE, PLAN_FAILURES, BotRunner
from tests.harness.coop import Coop, make_coop
from tests.harness.member import Member, MemberFactory
from tests.harness.synapse import Synapse


@dataclass
class Voting:
    coop: Coop
    dave: Member
    clock: list[float]
    runner: BotRunner

    @property
    def room(self) -> str:
        return self.coop.room

    async def propose(self, member: Member, command: str) -> tuple[str, str]:
        """Ask for a risky command; returns (proposal message event id, proposal id)."""
        body = await self.coop.ask(member, command, "Proposal `")
        match = re.search(r"Proposal `(\w+)`", body)
        assert match, body
        assert self.runner.bot is not None
        row = self.runner.bot.store.proposal(match.group(1))
        assert row is not None
        assert row.message_id is not None
        return row.message_id, row.id

    async def shown(
        self,
        member: Member,
        message_id: str,
        contains: str,
        timeout: float = 30,  # noqa: ASYNC109
    ) -> str:
        """Wait until the proposal message is edited to contain `contains`."""

        def edit(room: str, event: nio.Event) -> bool:
            content = event.source.get("content", {})
            return (
                room == self.room
                and event.sender == self.coop.bot_id
                and content.get("m.relates_to", {}).get("event_id") == message_id
                and content.get("m.relates_to", {}).get("rel_type") == "m.replace"
                and contains in content.get("m.new_content", {}).get("body", "")
            )

        event = await member.wait_for(edit, timeout)
        return str(event.source["content"]["m.new_content"]["body"])

    async def ran(self, member: Member, app: str, message_id: str) -> None:
        """The approved action ran, and reported in the proposal's thread."""
        reply = await member.wait_for_reply(self.room, self.coop.bot_id, f"risky ran on {app}")
        relation = reply.source["content"]["m.relates_to"]
        assert relation["rel_type"] == "m.thread"
        assert relation["event_id"] == message_id

    async def did_not_run(self, member: Member, app: str) -> None:
        await self.coop.ask(member, "!ping", "pong")  # everything before it was handled
        bodies = [
            e.source["content"].get("body", "")
            for room, e in await member.drain()
            if room == self.room and e.sender == self.coop.bot_id
        ]
        assert not any(f"risky ran on {app}" in body for body in bodies), bodies


async def make_voting(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path
) -> Voting:
    coop = await make_coop(synapse, make_member, tmp_path)
    dave = await make_member()
    await coop.alice.invite(coop.room, dave.user_id)
    await dave.join(coop.room)
    await coop.alice.set_power_levels(coop.room, {dave.user_id: 50})
    clock = [1_800_000_000.0]
    runner = coop.runner(bot_options={"clock": lambda: clock[0], "sweep_interval": 0.3})
    return Voting(coop, dave, clock, runner)


@pytest.fixture
async def voting(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path
) -> AsyncIterator[Voting]:
    voting = await make_voting(synapse, make_member, tmp_path)
    await voting.runner.start()
    try:
        yield voting
    finally:
        await voting.runner.stop()


async def test_approval_by_the_quorum_runs_the_action(voting: Voting) -> None:
    coop, dave = voting.coop, voting.dave
    message_id, proposal_id = await voting.propose(coop.bob, "!risky app1")
    proposal = await coop.alice.wait_for(
        lambda room, e: getattr(e, "event_id", None) == message_id, timeout=10
    )
    content = proposal.source["content"]
    # Eligible voters are pinged: not the requester, not the viewer, not the bot.
    assert sorted(content["m.mentions"]["user_ids"]) == sorted([coop.alice.user_id, dave.user_id])
    assert "Remove **app1** (now at v1)" in content["body"]
    assert "Needs **2**" in content["body"]
    await coop.alice.react(voting.room, message_id, "👍")
    assert "Still needed: 1" in await voting.shown(
        coop.alice, message_id, "Approved by: " + coop.alice.user_id
    )
    await dave.react(voting.room, message_id, "👍")
    shown = await voting.shown(coop.alice, message_id, "**Approved**")
    assert coop.alice.user_id in shown
    assert dave.user_id in shown
    await voting.ran(coop.alice, "app1", message_id)
    audit = await coop.ask(coop.alice, "!audit app1", "approved")
    assert proposal_id in audit
    assert dave.user_id in audit


async def test_self_votes_viewers_and_the_bots_seed_reactions_do_not_count(voting: Voting) -> None:
    coop = voting.coop
    message_id, _ = await voting.propose(coop.bob, "!risky app2")
    await coop.bob.react(voting.room, message_id, "👍")  # the requester
    await coop.carol.react(voting.room, message_id, "👍")  # a viewer
    await coop.alice.react(voting.room, message_id, "👍")
    # The bot's own 👍 seed is on the message too, and still only alice counts.
    shown = await voting.shown(coop.alice, message_id, "Still needed: 1")
    while f"{coop.carol.user_id} (not operator)" not in shown:  # votes may land in any order
        shown = await voting.shown(coop.alice, message_id, "Not counted")
    assert "Still needed: 1" in shown
    assert f"{coop.bob.user_id} (asked for it)" in shown
    await voting.did_not_run(coop.alice, "app2")


async def test_variation_selector_and_skin_tones_count(voting: Voting) -> None:
    coop = voting.coop
    message_id, _ = await voting.propose(coop.bob, "!risky app3")
    await coop.alice.react(voting.room, message_id, "👍\ufe0f")
    await voting.dave.react(voting.room, message_id, "👍🏽")
    await voting.ran(coop.alice, "app3", message_id)


async def test_a_veto_rejects(voting: Voting) -> None:
    coop = voting.coop
    message_id, _ = await voting.propose(coop.bob, "!risky app4")
    await coop.alice.react(voting.room, message_id, "👍")
    await voting.dave.react(voting.room, message_id, "👎")
    shown = await voting.shown(coop.alice, message_id, "**Rejected**")
    assert voting.dave.user_id in shown
    await coop.alice.send(voting.room, "!approve x")  # keeps the room busy; nothing runs
    await voting.did_not_run(coop.alice, "app4")


async def test_a_redaction_withdraws_a_vote(voting: Voting) -> None:
    coop = voting.coop
    message_id, _ = await voting.propose(coop.bob, "!risky app5")
    reaction = await coop.alice.react(voting.room, message_id, "👍")
    await voting.shown(coop.alice, message_id, "Still needed: 1")
    await coop.alice.redact(voting.room, reaction)
    await voting.shown(coop.alice, message_id, "Still needed: 2")
    await voting.dave.react(voting.room, message_id, "👍")
    shown = await voting.shown(coop.alice, message_id, "Still needed: 1")
    assert coop.alice.user_id not in shown.split("Approved by:")[1]
    await voting.did_not_run(coop.alice, "app5")


async def test_proposals_expire(voting: Voting) -> None:
    coop = voting.coop
    message_id, _ = await voting.propose(coop.bob, "!risky app6")
    await coop.alice.react(voting.room, message_id, "👍")
    await voting.shown(coop.alice, message_id, "Still needed: 1")
    voting.clock[0] += 2 * 3600  # past the default 1h timeout
    shown = await voting.shown(coop.alice, message_id, "**Expired**")
    assert "1 of 2 approvals" in shown
    await voting.dave.react(voting.room, message_id, "👍")  # too late
    await voting.did_not_run(coop.alice, "app6")


async def test_text_approve_and_reject(voting: Voting) -> None:
    coop = voting.coop
    message_id, proposal_id = await voting.propose(coop.bob, "!risky app7")
    listed = await coop.ask(coop.carol, "!proposals", proposal_id)
    assert "!risky app7" in listed
    assert "Counted" in await coop.ask(coop.alice, f"!approve {proposal_id}", "Counted")
    answer = await coop.ask(coop.carol, f"!approve {proposal_id}", "does not count")
    assert "not operator" in answer
    await coop.ask(voting.dave, f"!reject {proposal_id}", "Counted")
    await voting.shown(coop.alice, message_id, "**Rejected**")
    await coop.ask(coop.alice, f"!approve {proposal_id}", "already closed")
    await voting.did_not_run(coop.alice, "app7")


async def test_a_stale_plan_does_not_run(voting: Voting) -> None:
    coop = voting.coop
    message_id, _ = await voting.propose(coop.bob, "!risky app8")
    await coop.alice.react(voting.room, message_id, "👍")
    await voting.shown(coop.alice, message_id, "Still needed: 1")
    APP_STATE["app8"] = "v2"  # someone deployed something else meanwhile
    try:
        await voting.dave.react(voting.room, message_id, "👍")
        await voting.shown(coop.alice, message_id, "**Stale**")
        await voting.did_not_run(coop.alice, "app8")
    finally:
        APP_STATE.pop("app8")


async def test_two_proposals_at_once_on_different_apps(voting: Voting) -> None:
    coop, dave = voting.coop, voting.dave
    first, first_id = await voting.propose(coop.bob, "!risky app9")
    second, _ = await voting.propose(coop.bob, "!risky app10")
    await coop.alice.react(voting.room, second, "👍")
    await dave.react(voting.room, second, "👍")
    await voting.ran(coop.alice, "app10", second)
    assert voting.runner.bot is not None
    untouched = voting.runner.bot.store.proposal(first_id)
    assert untouched is not None
    assert untouched.state == "open"
    assert voting.runner.bot.store.votes(first_id) == []
    await coop.alice.react(voting.room, first, "👍")
    await dave.react(voting.room, first, "👍")
    await voting.ran(coop.alice, "app9", first)


async def test_votes_cast_while_the_bot_was_down_count(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path
) -> None:
    voting = await make_voting(synapse, make_member, tmp_path)
    coop = voting.coop
    await voting.runner.start()
    try:
        message_id, _ = await voting.propose(coop.bob, "!risky app11")
        withdrawn = await coop.carol.react(voting.room, message_id, "👍")  # a viewer
        await voting.shown(coop.alice, message_id, "not operator")
        await voting.runner.stop()
        await coop.alice.react(voting.room, message_id, "👍")
        await coop.carol.redact(voting.room, withdrawn)
        await voting.dave.react(voting.room, message_id, "👍")
        await voting.runner.start()
        await voting.ran(coop.alice, "app11", message_id)
        shown = await voting.shown(coop.alice, message_id, "**Approved**")
        assert coop.carol.user_id not in shown  # the redaction made while down was respected
    finally:
        await voting.runner.stop()


async def test_a_transient_error_at_the_deciding_vote_is_retried(voting: Voting) -> None:
    coop = voting.coop
    message_id, _ = await voting.propose(coop.bob, "!risky app20")
    await coop.alice.react(voting.room, message_id, "👍")
    await voting.shown(coop.alice, message_id, "Still needed: 1")
    PLAN_FAILURES["app20"] = 1  # the swarm is unreachable once, at the deciding vote
    try:
        await voting.dave.react(voting.room, message_id, "👍")
        await voting.ran(coop.alice, "app20", message_id)
    finally:
        PLAN_FAILURES.pop("app20", None)


async def test_a_start_that_keeps_failing_is_closed_and_never_runs(voting: Voting) -> None:
    coop = voting.coop
    message_id, proposal_id = await voting.propose(coop.bob, "!risky app21")
    await coop.alice.react(voting.room, message_id, "👍")
    await voting.shown(coop.alice, message_id, "Still needed: 1")
    PLAN_FAILURES["app21"] = 99
    try:
        await voting.dave.react(voting.room, message_id, "👍")
        shown = await voting.shown(coop.alice, message_id, "could not be started")
        assert "it will not run later" in shown
    finally:
        PLAN_FAILURES.pop("app21", None)
    voting.clock[0] += 3 * 86400  # days later, nothing brings it back
    await coop.ask(coop.carol, f"!approve {proposal_id}", "already closed")
    await voting.did_not_run(coop.alice, "app21")


async def test_a_reason_a_comment_and_a_reminder_on_a_real_homeserver(voting: Voting) -> None:
    coop, dave = voting.coop, voting.dave
    message_id, _ = await voting.propose(coop.bob, "!risky app22 -- moving to the new server")
    proposal = await coop.alice.wait_for(
        lambda room, e: getattr(e, "event_id", None) == message_id, timeout=10
    )
    content = proposal.source["content"]
    assert content["msgtype"] == "m.text"  # a notice would notify nobody
    assert "Reason: `moving to the new server`" in content["body"]
    await coop.alice.send_event(
        voting.room,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "I checked the backups first",
            "m.relates_to": {"rel_type": "m.thread", "event_id": message_id},
        },
    )
    await coop.alice.react(voting.room, message_id, "👍")
    await voting.shown(coop.alice, message_id, "Still needed: 1")
    voting.clock[0] += 1900  # past half of the hour

    def reminder(room: str, event: nio.Event) -> bool:
        body = str(event.source.get("content", {}).get("body", ""))
        return room == voting.room and event.sender == coop.bot_id and body.startswith("⏰")

    reminded = (await dave.wait_for(reminder, timeout=30)).source["content"]
    assert reminded["msgtype"] == "m.text"
    assert reminded["m.mentions"]["user_ids"] == [dave.user_id]  # alice voted already
    assert reminded["m.relates_to"]["event_id"] == message_id
    audit = await coop.ask(coop.alice, "!audit app22", "comment")
    assert "I checked the backups first" in audit
    assert "moving to the new server" in audit
