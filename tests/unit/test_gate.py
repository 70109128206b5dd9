"""bot/core/gate.py through the real Bot: proposals, votes by reaction, redaction and
text, recount after a restart, expiry and stale plans. FakeChat, fake clock."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.app import Bot
from bot.core.approvals import Plan
from bot.core.chat import Message, Reaction, Redaction
from bot.core.context import Arg, CommandContext
from bot.core.records import ProposalRow
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from tests.fakes import FakeChat, Sent
from tests.unit.helpers import (
    ADMIN,
    OPERATOR,
    ROOM,
    STRANGER,
    VIEWER,
    BotFactory,
    chat_of,
    drain,
    until,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
TIMEOUT = 3600.0  # approvals.timeout by default
EXPIRY = "2023-11-14 23:13 UTC"
OTHER_ROOM = "!other:test"
APP = "cloud.test"

REQUESTER = "@requester:test"  # an operator asking for the risky command
OP1 = OPERATOR
OP2 = "@operator2:test"
ELIGIBLE = (ADMIN, OP2, OP1)  # sorted: who the proposal pings
ROSTER: dict[str, Any] = {
    REQUESTER: (True, 50),
    OP1: (True, 50),
    OP2: (True, 50),
    ADMIN: (True, 100),
    VIEWER: (True, 0),
}

_ids = itertools.count(1)


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Call:
    app: str
    sender: str
    event_id: str
    thread_root: str | None


@dataclass
class Risky:
    """A test-only risky command. `deployed` is what its plan's fingerprint reads;
    `policies` makes the plan ask for another policy for an app."""

    calls: list[Call] = field(default_factory=list)
    deployed: dict[str, str] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    group: CommandGroup = field(default_factory=lambda: CommandGroup("risky"))

    def __post_init__(self) -> None:
        async def plan(ctx: CommandContext) -> Plan:
            app = ctx.args["app"]
            version = self.deployed.setdefault(app, "1.0.0")
            return Plan(
                summary=f"Remove **{app}** (version {version}) and its volumes.",
                fingerprint=version,
                policy=self.policies.get(app),
            )

        @self.group.command(
            "nuke",
            help="Remove an app and its data.",
            args=(Arg("app"),),
            role=Role.OPERATOR,
            vote_policy="undeploy",
            lock_arg="app",
            plan=plan,
        )
        async def nuke(ctx: CommandContext) -> None:
            message = ctx.message
            self.calls.append(
                Call(ctx.args["app"], message.sender, message.event_id, message.thread_root)
            )
            await ctx.reply(f"nuked {ctx.args['app']}")


@dataclass(frozen=True)
class Proposal:
    id: str
    message_id: str  # the proposal message: react to it
    asked: Message  # the command that asked for it


class Room:
    """A bot with the risky command, a fake clock and helpers to vote."""

    def __init__(self, bot: Bot, clock: Clock) -> None:
        self.bot = bot
        self.clock = clock

    @property
    def chat(self) -> FakeChat:
        return chat_of(self.bot)

    def message(
        self, body: str, sender: str, room: str = ROOM, thread_root: str | None = None
    ) -> Message:
        return Message(
            room,
            f"$msg-{next(_ids)}",
            sender,
            body,
            int(self.clock.now * 1000),
            thread_root=thread_root,
        )

    async def say(
        self, body: str, sender: str = REQUESTER, room: str = ROOM, thread_root: str | None = None
    ) -> list[str]:
        """Send a message through the dispatcher; the replies to it."""
        msg = self.message(body, sender, room, thread_root)
        await self.bot.dispatcher.submit(msg)
        await drain(self.bot)
        return self.chat.replies_to(msg.event_id)

    async def propose(
        self, app: str = APP, sender: str = REQUESTER, thread_root: str | None = None
    ) -> Proposal:
        msg = self.message(f"!nuke {app}", sender, thread_root=thread_root)
        await self.bot.dispatcher.submit(msg)
        await drain(self.bot)
        sent = [s for s in self.chat.sent if s.reply_to == msg.event_id]
        assert len(sent) == 1, self.chat.texts()
        row = self.bot.store.proposal_for_message(sent[0].event_id)
        assert row is not None
        return Proposal(row.id, sent[0].event_id, msg)

    def reaction(self, target: str, sender: str, key: str = "👍", room: str = ROOM) -> Reaction:
        return Reaction(
            room, f"$react-{next(_ids)}", sender, target, key, int(self.clock.now * 1000)
        )

    async def react(self, target: str, sender: str, key: str = "👍", room: str = ROOM) -> str:
        reaction = self.reaction(target, sender, key, room)
        await self.bot.dispatcher.submit(reaction)
        await drain(self.bot)
        return reaction.event_id

    async def redact(self, reaction_id: str, sender: str, room: str = ROOM) -> None:
        await self.bot.dispatcher.submit(
            Redaction(room, f"$redact-{next(_ids)}", sender, reaction_id)
        )
        await drain(self.bot)

    def shown(self, proposal: Proposal) -> str:
        return self.chat.shown(proposal.message_id)

    def row(self, proposal: Proposal) -> ProposalRow:
        row = self.bot.store.proposal(proposal.id)
        assert row is not None
        return row

    def audit(self, action: str) -> list[str]:
        return [
            r.detail for r in reversed(self.bot.store.audit_log(limit=100)) if r.action == action
        ]


@pytest.fixture
def risky() -> Risky:
    return Risky()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_room(make_bot: BotFactory, risky: Risky, clock: Clock) -> Any:
    def factory(**sections: Any) -> Room:
        bot = make_bot(risky.group, members=dict(ROSTER), clock=clock, **sections)
        return Room(bot, clock)

    return factory


@pytest.fixture
def room(make_room: Any) -> Room:
    made: Room = make_room()
    return made


def the_job_reply(room: Room, proposal: Proposal) -> Sent:
    (sent,) = [s for s in room.chat.sent if s.markdown == f"nuked {APP}"]
    assert sent.reply_to == proposal.message_id
    return sent


# -- asking ----------------------------------------------------------------------------


async def test_a_risky_command_becomes_a_proposal_and_nothing_runs(
    room: Room, risky: Risky
) -> None:
    proposal = await room.propose()
    (sent,) = room.chat.sent
    assert sent.reply_to == proposal.asked.event_id
    assert sent.thread_root is None
    assert sent.mentions == ELIGIBLE  # not the requester, the bot or the viewer
    assert sent.markdown == "\n".join(
        [
            f"🗳 **Proposal `{proposal.id}`**: `!nuke {APP}`, asked by {REQUESTER}",
            "",
            f"Remove **{APP}** (version 1.0.0) and its volumes.",
            "",
            f"Needs **2** approvals from operators or above, not {REQUESTER}, by {EXPIRY}. "
            "React 👍 to approve or 👎 to reject (one 👎 rejects), or type "
            f"`!approve {proposal.id}` / `!reject {proposal.id}`.",
            f"Voters: {', '.join(ELIGIBLE)}",
            "",
            "Approved by: nobody · Rejected by: nobody · Still needed: 2",
        ]
    )
    assert [(r.room, r.event_id, r.key) for r in room.chat.sent_reactions] == [
        (ROOM, proposal.message_id, "👍"),
        (ROOM, proposal.message_id, "👎"),
    ]
    assert risky.calls == []
    assert room.bot.store.jobs() == []
    row = room.row(proposal)
    assert (row.state, row.policy, row.app, row.requester) == ("open", "undeploy", APP, REQUESTER)
    assert (row.created_at, row.expires_at) == (T0, T0 + TIMEOUT)
    assert room.audit("proposed") == [f"{proposal.id}: !nuke {APP} (undeploy)"]


async def test_the_proposal_stays_in_the_thread_it_was_asked_in(room: Room) -> None:
    proposal = await room.propose(thread_root="$thread")
    (sent,) = room.chat.sent
    assert (sent.reply_to, sent.thread_root) == (proposal.asked.event_id, "$thread")


async def test_proposal_ids_are_distinct_and_unambiguous(room: Room) -> None:
    ids = {(await room.propose(f"app{n}.test")).id for n in range(20)}
    assert len(ids) == 20
    for proposal_id in ids:
        assert len(proposal_id) == 5
        assert not set(proposal_id) & set("0o1li")


async def test_a_viewer_cannot_propose(room: Room, risky: Risky) -> None:
    assert await room.say(f"!nuke {APP}", VIEWER) == [
        f"🔒 `!nuke` needs the operator role; {VIEWER} is viewer. Nothing was done."
    ]
    assert room.bot.store.proposals() == []
    assert room.chat.sent_reactions == []


# -- voting by reaction ---------------------------------------------------------------------


async def test_one_approval_shows_the_live_tally(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    (edit,) = room.chat.edits_of(proposal.message_id)
    assert edit.endswith(f"Approved by: {OP1} · Rejected by: nobody · Still needed: 1")
    assert f"Voters: {', '.join(ELIGIBLE)}" in edit
    assert risky.calls == []
    assert room.row(proposal).state == "open"
    # Votes that change nothing shown edit nothing.
    await room.react(proposal.message_id, OP1, "✅")
    await room.react(proposal.message_id, room.chat.user_id)
    assert room.chat.edits_of(proposal.message_id) == [edit]


async def test_two_approvals_run_the_job_once_in_the_proposals_thread(
    room: Room, risky: Risky
) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1, "👍")
    await room.react(proposal.message_id, ADMIN, "👍🏽")
    assert risky.calls == [Call(APP, REQUESTER, proposal.message_id, proposal.message_id)]
    reply = the_job_reply(room, proposal)
    assert reply.thread_root == proposal.message_id
    shown = room.shown(proposal)
    assert f"✅ **Approved** by {ADMIN}, {OP1}: running as job #1, reported in this thread." in (
        shown
    )
    assert "Still needed" not in shown
    assert "Voters:" not in shown
    assert room.row(proposal).state == "done"
    assert room.audit("approved") == [
        f"{proposal.id}: !nuke {APP}; approved by {ADMIN}, {OP1}; job #1"
    ]
    (job,) = room.bot.store.jobs()
    assert (job.sender, job.state, job.app) == (REQUESTER, "done", APP)

    edits = len(room.chat.edits)
    await room.react(proposal.message_id, OP2)  # a third approval, too late to matter
    await room.say(f"!approve {proposal.id}", OP2)
    assert len(risky.calls) == 1
    assert len(room.bot.store.jobs()) == 1
    assert len(room.chat.edits) == edits


async def test_approvals_arriving_together_run_the_job_once(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    for voter in (OP1, OP2, ADMIN):
        await room.bot.dispatcher.submit(room.reaction(proposal.message_id, voter))
    await drain(room.bot)
    assert len(risky.calls) == 1
    assert len(room.bot.store.jobs()) == 1
    assert len(room.audit("approved")) == 1


async def test_votes_that_do_not_count(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, VIEWER)
    await room.react(proposal.message_id, REQUESTER)
    await room.react(proposal.message_id, room.chat.user_id)  # the bot's own seed reaction
    await room.react(proposal.message_id, room.chat.user_id, "👎")
    await room.react(proposal.message_id, STRANGER)
    await room.react(proposal.message_id, OP1)
    shown = room.shown(proposal)
    assert f"Approved by: {OP1} · Rejected by: nobody · Still needed: 1" in shown
    assert shown.endswith(
        f"Not counted: {REQUESTER} (asked for it), {STRANGER} (not operator), "
        f"{VIEWER} (not operator)"
    )
    assert room.chat.user_id not in shown
    assert risky.calls == []
    assert room.row(proposal).state == "open"


async def test_other_reactions_are_not_votes(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    for key in ("❤️", "+1", "👍👍", "🎉"):
        await room.react(proposal.message_id, OP1, key)
    assert room.chat.edits == []
    assert room.bot.store.votes(proposal.id) == []


async def test_reactions_to_other_messages_are_not_votes(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.asked.event_id, OP1)  # the command, not the proposal
    await room.react("$somewhere-else", OP2)
    assert room.chat.edits == []
    assert room.bot.store.votes(proposal.id) == []


async def test_one_reject_vetoes(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    await room.react(proposal.message_id, OP2, "👎🏿")
    shown = room.shown(proposal)
    assert f"❌ **Rejected** (by {OP2}). Nothing was done." in shown
    assert shown.endswith(f"Approved by: {OP1} · Rejected by: {OP2}")
    assert room.row(proposal).state == "rejected"
    assert room.audit("rejected") == [
        f"{proposal.id}: !nuke {APP}; approved by {OP1}, rejected by {OP2}"
    ]
    edits = len(room.chat.edits)
    await room.react(proposal.message_id, ADMIN)  # closed: nothing changes
    assert risky.calls == []
    assert len(room.chat.edits) == edits
    assert room.row(proposal).state == "rejected"


async def test_a_viewers_reject_does_not_veto(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, VIEWER, "👎")
    await room.react(proposal.message_id, OP1)
    await room.react(proposal.message_id, OP2)
    assert len(risky.calls) == 1


async def test_the_requester_withdraws_with_a_reject(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    await room.react(proposal.message_id, REQUESTER, "❌")
    assert "❌ **Rejected** (withdrawn by the requester). Nothing was done." in room.shown(proposal)
    assert room.row(proposal).state == "rejected"
    await room.react(proposal.message_id, OP2)
    assert risky.calls == []


async def test_a_redaction_withdraws_an_approval(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    first = await room.react(proposal.message_id, OP1)
    await room.redact(first, OP1)
    assert room.shown(proposal).endswith(
        "Approved by: nobody · Rejected by: nobody · Still needed: 2"
    )
    await room.react(proposal.message_id, OP2)
    assert risky.calls == []
    assert room.shown(proposal).endswith(
        f"Approved by: {OP2} · Rejected by: nobody · Still needed: 1"
    )
    await room.react(proposal.message_id, ADMIN)
    assert len(risky.calls) == 1
    assert room.audit("approved") == [
        f"{proposal.id}: !nuke {APP}; approved by {ADMIN}, {OP2}; job #1"
    ]


async def test_a_redacted_reject_no_longer_vetoes(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    # Reject, then take it back: no veto as long as the proposal was still open...
    await room.redact(await room.react(proposal.message_id, VIEWER, "👎"), VIEWER)
    await room.react(proposal.message_id, OP2)
    assert len(risky.calls) == 1


async def test_redacting_something_else_changes_nothing(room: Room) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    edits = len(room.chat.edits)
    await room.redact("$not-a-vote", OP1)
    assert len(room.chat.edits) == edits
    assert len(room.bot.store.votes(proposal.id)) == 1


async def test_a_reaction_and_its_redaction_arriving_together(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    vote = room.reaction(proposal.message_id, OP1)
    await room.bot.dispatcher.submit(vote)  # no draining in between
    await room.bot.dispatcher.submit(Redaction(ROOM, "$undo", OP1, vote.event_id))
    await drain(room.bot)
    assert room.bot.store.votes(proposal.id) == []
    await room.react(proposal.message_id, OP2)
    assert risky.calls == []


async def test_changing_a_reaction_counts_the_latest(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    thumbs_down = await room.react(proposal.message_id, VIEWER, "👎")  # ignored: a viewer
    room.clock.now += 1
    await room.react(proposal.message_id, OP1, "👍")
    room.clock.now += 1
    await room.redact(thumbs_down, VIEWER)
    await room.react(proposal.message_id, OP2, "✅")
    assert len(risky.calls) == 1


# -- voting by text -----------------------------------------------------------------------


async def test_approve_and_reject_by_text(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    assert await room.say(f"!approve {proposal.id}", OP1) == [
        f"Counted: you approve `{proposal.id}`."
    ]
    assert room.shown(proposal).endswith(
        f"Approved by: {OP1} · Rejected by: nobody · Still needed: 1"
    )
    assert await room.say(f"!approve {proposal.id.upper()}", ADMIN) == [
        f"Counted: you approve `{proposal.id}`."
    ]
    assert risky.calls == [Call(APP, REQUESTER, proposal.message_id, proposal.message_id)]
    assert room.audit("approved") == [
        f"{proposal.id}: !nuke {APP}; approved by {ADMIN}, {OP1}; job #1"
    ]


async def test_reject_by_text_vetoes(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    assert await room.say(f"!reject {proposal.id}", ADMIN) == [
        f"Counted: you reject `{proposal.id}`."
    ]
    assert f"❌ **Rejected** (by {ADMIN})" in room.shown(proposal)
    await room.react(proposal.message_id, OP2)
    assert risky.calls == []


async def test_a_text_vote_that_does_not_count_says_so(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    assert await room.say(f"!approve {proposal.id}", VIEWER) == [
        f"Your vote on `{proposal.id}` does not count: you are not operator."
    ]
    assert room.shown(proposal).endswith(f"Not counted: {VIEWER} (not operator)")


async def test_the_requesters_own_text_approval_is_explained_in_plain_words(room: Room) -> None:
    proposal = await room.propose()
    (reply,) = await room.say(f"!approve {proposal.id}", REQUESTER)
    assert reply.startswith(f"Your vote on `{proposal.id}` does not count")
    # BUG: the reason "asked for it" is pasted after "you are": "you are asked for it".
    assert "you are asked for it" not in reply


async def test_text_vote_on_an_unknown_proposal(room: Room) -> None:
    await room.propose()
    assert await room.say("!approve zzzzz", OP1) == [
        "No proposal `zzzzz` in this room. `!proposals` lists the open ones."
    ]


async def test_text_vote_from_another_room(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    assert await room.say(f"!approve {proposal.id}", OP1, room=OTHER_ROOM) == [
        f"No proposal `{proposal.id}` in this room. `!proposals` lists the open ones."
    ]
    assert room.bot.store.votes(proposal.id) == []


async def test_text_vote_on_a_closed_proposal(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1, "👎")
    assert await room.say(f"!approve {proposal.id}", OP2) == [
        f"Proposal `{proposal.id}` is already closed (rejected)."
    ]
    assert [v.voter for v in room.bot.store.votes(proposal.id)] == [OP1]


async def test_a_text_vote_and_a_reaction_by_one_member_count_once(
    room: Room, risky: Risky
) -> None:
    proposal = await room.propose()
    await room.say(f"!approve {proposal.id}", OP1)
    room.clock.now += 1
    await room.react(proposal.message_id, OP1)
    assert risky.calls == []
    assert room.shown(proposal).endswith("Still needed: 1")


# -- expiry -----------------------------------------------------------------------------


async def test_expiry_closes_the_proposal_and_nothing_runs(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    edits = len(room.chat.edits)
    room.clock.now = T0 + TIMEOUT - 1
    await room.bot.gate.sweep()
    assert len(room.chat.edits) == edits  # not yet
    assert room.row(proposal).state == "open"

    room.clock.now = T0 + TIMEOUT
    await room.bot.gate.sweep()
    shown = room.shown(proposal)
    assert f"⌛ **Expired** at {EXPIRY} with 1 of 2 approvals. Nothing was done." in shown
    assert "Still needed" not in shown
    row = room.row(proposal)
    assert (row.state, row.decided_at) == ("expired", T0 + TIMEOUT)
    assert room.audit("expired") == [
        f"{proposal.id}: !nuke {APP}; approved by {OP1}, rejected by nobody"
    ]
    await room.bot.gate.sweep()  # once closed, sweeping again changes nothing
    assert len(room.audit("expired")) == 1

    room.clock.now += 1
    await room.react(proposal.message_id, OP2)
    assert risky.calls == []
    assert room.bot.store.jobs() == []


async def test_a_late_reaction_expires_the_proposal_instead_of_approving(
    room: Room, risky: Risky
) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    room.clock.now = T0 + TIMEOUT + 5  # the sweep has not run yet
    await room.react(proposal.message_id, OP2)
    assert risky.calls == []
    assert room.row(proposal).state == "expired"
    assert "⌛ **Expired**" in room.shown(proposal)


async def test_a_late_text_vote_is_not_called_counted(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    room.clock.now = T0 + TIMEOUT + 5  # expired, but the sweep has not run yet
    (reply,) = await room.say(f"!approve {proposal.id}", OP2)
    assert risky.calls == []
    assert room.row(proposal).state == "expired"
    # BUG: the reply says "Counted: you approve ..." although the vote came after
    # the deadline and the proposal just expired because of it.
    assert not reply.startswith("Counted"), reply
    assert "expired" in reply


async def test_the_timeout_comes_from_the_policy(make_room: Any, risky: Risky) -> None:
    room = make_room(approvals={"policies": {"undeploy": {"timeout": "10m"}}})
    proposal = await room.propose()
    assert "by 2023-11-14 22:23 UTC" in room.shown(proposal)
    room.clock.now = T0 + 600
    await room.bot.gate.sweep()
    assert room.row(proposal).state == "expired"


# -- stale plans --------------------------------------------------------------------------


async def test_a_plan_that_changed_before_the_last_approval_is_stale(
    room: Room, risky: Risky
) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    risky.deployed[APP] = "2.0.0"  # someone upgraded the app meanwhile
    await room.react(proposal.message_id, OP2)
    assert risky.calls == []
    assert room.bot.store.jobs() == []
    shown = room.shown(proposal)
    assert (
        "♻ **Stale**: the app changed since this was proposed, so the plan no longer holds. "
        f"Nothing was done; ask again with `!nuke {APP}`."
    ) in shown
    assert room.row(proposal).state == "stale"
    assert room.audit("stale") == [f"{proposal.id}: !nuke {APP}"]
    assert room.audit("approved") == []

    # Asking again proposes the new plan, which can run.
    again = await room.propose()
    assert "(version 2.0.0)" in room.shown(again)
    await room.react(again.message_id, OP1)
    await room.react(again.message_id, OP2)
    assert len(risky.calls) == 1


async def test_an_unchanged_plan_is_not_stale(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    risky.deployed["other.test"] = "9"  # another app's change does not matter
    await room.react(proposal.message_id, OP2)
    assert len(risky.calls) == 1
    assert room.row(proposal).state == "done"


async def test_a_requester_demoted_meanwhile_is_refused_when_the_job_starts(
    room: Room, risky: Risky
) -> None:
    proposal = await room.propose()
    room.chat.set_member(REQUESTER, 0)
    await room.react(proposal.message_id, OP1)
    await room.react(proposal.message_id, OP2)
    assert risky.calls == []
    (job,) = room.bot.store.jobs()
    assert job.state == "failed"
    assert room.chat.replies_to(proposal.message_id) == [
        f"❌ 🔒 `!nuke` needs the operator role; {REQUESTER} is viewer. Nothing was done."
    ]


# -- restart ----------------------------------------------------------------------------


async def restart(room: Room, make_room: Any, clock: Clock) -> Room:
    """Stop the bot, then start a new one on the same data_dir with a new FakeChat."""
    await room.bot.dispatcher.shutdown()
    room.bot.store.close()
    again: Room = make_room(data_dir=str(room.bot.config.data_dir))
    again.chat._ids = itertools.count(1000)  # the new chat's event ids differ from the old
    return again


def server_reaction(
    room: Room, proposal: Proposal, sender: str, key: str = "👍", at: float | None = None
) -> Reaction:
    when = room.clock.now if at is None else at
    return Reaction(
        ROOM, f"$server-{next(_ids)}", sender, proposal.message_id, key, int(when * 1000)
    )


async def test_recount_after_a_restart_runs_an_approved_proposal(
    room: Room, make_room: Any, clock: Clock, risky: Risky
) -> None:
    proposal = await room.propose()
    first = room.reaction(proposal.message_id, OP1)
    await room.bot.dispatcher.submit(first)
    await drain(room.bot)
    again = await restart(room, make_room, clock)

    clock.now += 60  # OP2 approved while the bot was down
    again.chat.server_reactions[proposal.message_id] = [
        first,
        server_reaction(again, proposal, OP2, "👍🏼"),
        server_reaction(again, proposal, again.chat.user_id, "👍"),  # the seeds
        server_reaction(again, proposal, again.chat.user_id, "👎"),
    ]
    await again.bot.gate.recount()
    await drain(again.bot)
    assert risky.calls == [Call(APP, REQUESTER, proposal.message_id, proposal.message_id)]
    (edit,) = again.chat.edits_of(proposal.message_id)
    assert f"✅ **Approved** by {OP2}, {OP1}: running as job #1" in edit
    assert again.row(proposal).state == "done"


async def test_recount_forgets_reactions_withdrawn_while_down(
    room: Room, make_room: Any, clock: Clock, risky: Risky
) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)  # redacted while the bot was down
    again = await restart(room, make_room, clock)
    again.chat.server_reactions[proposal.message_id] = []
    await again.bot.gate.recount()
    await drain(again.bot)
    assert again.bot.store.votes(proposal.id) == []
    (edit,) = again.chat.edits_of(proposal.message_id)
    assert edit.endswith("Approved by: nobody · Rejected by: nobody · Still needed: 2")
    await again.react(proposal.message_id, OP2)
    assert risky.calls == []


async def test_recount_keeps_text_votes(
    room: Room, make_room: Any, clock: Clock, risky: Risky
) -> None:
    proposal = await room.propose()
    await room.say(f"!approve {proposal.id}", ADMIN)  # not a reaction: not on the server
    again = await restart(room, make_room, clock)
    again.chat.server_reactions[proposal.message_id] = [server_reaction(again, proposal, OP2)]
    await again.bot.gate.recount()
    await drain(again.bot)
    assert [c.app for c in risky.calls] == [APP]
    assert again.audit("approved") == [
        f"{proposal.id}: !nuke {APP}; approved by {ADMIN}, {OP2}; job #1"
    ]


async def test_recount_sees_a_veto_cast_while_down(
    room: Room, make_room: Any, clock: Clock, risky: Risky
) -> None:
    proposal = await room.propose()
    again = await restart(room, make_room, clock)
    again.chat.server_reactions[proposal.message_id] = [
        server_reaction(again, proposal, OP1),
        server_reaction(again, proposal, OP2),
        server_reaction(again, proposal, ADMIN, "👎"),
    ]
    await again.bot.gate.recount()
    await drain(again.bot)
    assert risky.calls == []
    assert again.row(proposal).state == "rejected"


async def test_maintain_recounts_once_ready_then_sweeps(make_room: Any, risky: Risky) -> None:
    room = make_room(sweep_interval=0.001)
    approved = await room.propose("one.test")
    expiring = await room.propose("two.test")
    room.chat.server_reactions[approved.message_id] = [
        server_reaction(room, approved, OP1),
        server_reaction(room, approved, OP2),
    ]
    ready = asyncio.Event()
    upkeep = asyncio.create_task(room.bot.gate.maintain(ready.is_set))
    try:
        await asyncio.sleep(0.01)
        assert risky.calls == []  # not before the chat is connected
        ready.set()
        await until(lambda: len(risky.calls) == 1, "the recount ran the approved proposal")
        room.clock.now = T0 + TIMEOUT
        await until(lambda: room.row(expiring).state == "expired", "the sweep expired it")
    finally:
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
    await drain(room.bot)
    assert [c.app for c in risky.calls] == ["one.test"]


@pytest.mark.parametrize("upkeep", ["recount", "sweep"])
async def test_a_proposal_that_expired_while_down_is_closed(
    room: Room, make_room: Any, clock: Clock, risky: Risky, upkeep: str
) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    again = await restart(room, make_room, clock)
    clock.now = T0 + 2 * TIMEOUT
    again.chat.server_reactions[proposal.message_id] = [
        server_reaction(again, proposal, OP1, at=T0),
        server_reaction(again, proposal, OP2),  # after the deadline: does not count
    ]
    await getattr(again.bot.gate, upkeep)()
    await drain(again.bot)
    assert risky.calls == []
    assert again.row(proposal).state == "expired"
    (edit,) = again.chat.edits_of(proposal.message_id)
    assert f"⌛ **Expired** at {EXPIRY} with 1 of 2 approvals. Nothing was done." in edit


async def test_recount_survives_a_failing_server(
    room: Room, risky: Risky, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = await room.propose("broken.test")
    fine = await room.propose()
    room.chat.server_reactions[fine.message_id] = [
        server_reaction(room, fine, OP1),
        server_reaction(room, fine, OP2),
    ]
    real = room.chat.reactions

    async def reactions(room_id: str, event_id: str) -> list[Reaction]:
        if event_id == broken.message_id:
            raise RuntimeError("server error")
        return await real(room_id, event_id)

    monkeypatch.setattr(room.chat, "reactions", reactions)
    await room.bot.gate.recount()
    await drain(room.bot)
    assert [c.app for c in risky.calls] == [APP]
    assert room.row(broken).state == "open"


# -- several proposals, policies ----------------------------------------------------------


async def test_two_proposals_at_once_are_independent(room: Room, risky: Risky) -> None:
    first = await room.propose("one.test")
    second = await room.propose("two.test")
    assert first.id != second.id
    assert first.message_id != second.message_id
    await room.react(first.message_id, OP1)
    await room.react(second.message_id, OP2)
    assert risky.calls == []  # one approval each, not two for either
    await room.react(second.message_id, ADMIN, "👎")
    assert room.row(second).state == "rejected"
    assert room.row(first).state == "open"
    await room.react(first.message_id, ADMIN)
    assert [c.app for c in risky.calls] == ["one.test"]
    assert risky.calls[0].thread_root == first.message_id
    assert room.row(first).state == "done"
    assert room.row(second).state == "rejected"


async def test_a_plan_can_ask_for_a_stricter_policy(make_room: Any, risky: Risky) -> None:
    room = make_room(approvals={"policies": {"major_upgrade": {"required": 3}}})
    risky.policies["major.test"] = "major_upgrade"
    major = await room.propose("major.test")
    minor = await room.propose("minor.test")
    assert room.row(major).policy == "major_upgrade"
    assert room.row(minor).policy == "undeploy"
    assert "Needs **3** approvals" in room.shown(major)
    assert "Needs **2** approvals" in room.shown(minor)
    assert room.audit("proposed")[0] == f"{major.id}: !nuke major.test (major_upgrade)"

    await room.react(major.message_id, OP1)
    await room.react(major.message_id, OP2)
    assert risky.calls == []
    assert room.shown(major).endswith("Still needed: 1")
    await room.react(major.message_id, ADMIN)
    assert [c.app for c in risky.calls] == ["major.test"]

    await room.react(minor.message_id, OP1)
    await room.react(minor.message_id, OP2)
    assert [c.app for c in risky.calls] == ["major.test", "minor.test"]


async def test_admins_only_policy_pings_only_admins(make_room: Any, risky: Risky) -> None:
    room = make_room(approvals={"policies": {"undeploy": {"voters": "admin", "required": 1}}})
    proposal = await room.propose()
    (sent,) = room.chat.sent
    assert sent.mentions == (ADMIN,)
    assert "Needs **1** approval from admins, not" in sent.markdown
    await room.react(proposal.message_id, OP1)
    assert risky.calls == []
    await room.react(proposal.message_id, ADMIN)
    assert len(risky.calls) == 1


async def test_self_approval_when_allowed(make_room: Any, risky: Risky) -> None:
    room = make_room(approvals={"allow_self_approval": True})
    proposal = await room.propose()
    (sent,) = room.chat.sent
    assert sent.mentions == tuple(sorted([*ELIGIBLE, REQUESTER]))
    await room.react(proposal.message_id, REQUESTER)
    await room.react(proposal.message_id, OP1)
    assert len(risky.calls) == 1


# -- !proposals -------------------------------------------------------------------------


async def test_proposals_lists_the_open_ones_only(room: Room) -> None:
    assert await room.say("!proposals", VIEWER) == ["No proposal is open."]
    closed = await room.propose("closed.test")
    await room.react(closed.message_id, OP1, "👎")
    room.clock.now += 60
    first = await room.propose("one.test")
    await room.react(first.message_id, OP1)
    room.clock.now += 60
    second = await room.propose("two.test")
    elsewhere = room.message("!nuke far.test", REQUESTER, room=OTHER_ROOM)
    await room.bot.dispatcher.submit(elsewhere)
    await drain(room.bot)

    assert await room.say("!proposals", VIEWER) == [
        "\n".join(
            [
                "Open proposals:",
                "",
                f"- `{first.id}` `!nuke one.test` by {REQUESTER} (undeploy), expires "
                "2023-11-14 23:14 UTC",
                "  Remove **one.test** (version 1.0.0) and its volumes.",
                f"  approved by {OP1}; rejected by nobody; 1 more needed "
                f"(not voted yet: {ADMIN}, {OP2})",
                f"- `{second.id}` `!nuke two.test` by {REQUESTER} (undeploy), expires "
                "2023-11-14 23:15 UTC",
                "  Remove **two.test** (version 1.0.0) and its volumes.",
                "  approved by nobody; rejected by nobody; 2 more needed "
                f"(not voted yet: {ADMIN}, {OP2}, {OP1})",
            ]
        )
    ]


# -- bugs found while writing these tests --------------------------------------------------


async def test_a_proposal_asked_in_a_thread_runs_in_that_thread(room: Room, risky: Risky) -> None:
    # Matrix threads do not nest: the proposal is itself in "$thread", so it cannot
    # root a thread of its own (Synapse answers 400 "Cannot start threads from an
    # event with a relation"), and every message of the job would be refused.
    proposal = await room.propose(thread_root="$thread")
    await room.react(proposal.message_id, OP1)
    await room.react(proposal.message_id, OP2)
    (call,) = risky.calls
    assert call.thread_root == "$thread"
    reply = the_job_reply(room, proposal)
    assert reply.thread_root == "$thread"


async def test_a_proposal_asked_in_a_thread_runs_in_that_thread_after_a_restart(
    room: Room, make_room: Any, clock: Clock, risky: Risky
) -> None:
    proposal = await room.propose(thread_root="$thread")
    again = await restart(room, make_room, clock)
    again.chat.server_reactions[proposal.message_id] = [
        server_reaction(again, proposal, OP1),
        server_reaction(again, proposal, OP2),
    ]
    await again.bot.gate.recount()
    await drain(again.bot)
    (call,) = risky.calls
    assert call.thread_root == "$thread"


async def test_a_command_with_a_newline_before_its_argument_runs_once_approved(
    room: Room, risky: Risky
) -> None:
    # The dispatcher splits the command word at any whitespace; the gate rebuilt
    # the arguments by splitting at the first space only, so the approved command
    # failed to parse ("missing <app>") and the proposal stayed open for ever.
    msg = room.message(f"!nuke\n{APP}", REQUESTER)
    await room.bot.dispatcher.submit(msg)
    await drain(room.bot)
    (sent,) = room.chat.sent
    assert "Proposal" in sent.markdown
    await room.react(sent.event_id, OP1)
    await room.react(sent.event_id, OP2)
    assert [c.app for c in risky.calls] == [APP]


async def test_a_redaction_in_another_room_does_not_withdraw_a_vote(
    room: Room, risky: Risky
) -> None:
    # A redaction only redacts events of its own room; one sent elsewhere that
    # names a vote's event id leaves the reaction in place on the server.
    proposal = await room.propose()
    vote = await room.react(proposal.message_id, OP1)
    await room.redact(vote, VIEWER, room=OTHER_ROOM)
    await room.react(proposal.message_id, OP2)
    assert len(risky.calls) == 1


async def test_a_reaction_in_another_room_is_not_a_vote(room: Room, risky: Risky) -> None:
    # The server's relations for the proposal (what recount reads) never include a
    # reaction sent in another room, so the live count must not either.
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1, room=OTHER_ROOM)
    await room.react(proposal.message_id, OP2, room=OTHER_ROOM)
    assert risky.calls == []
    assert room.bot.store.votes(proposal.id) == []
