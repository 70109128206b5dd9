# ruff: noqa: F811  (the room fixtures are imported from test_gate and used by name)
"""What is voted is what runs, and the fuller voting practice: pinned arguments, the
plan checked again after the lock wait, robust deciding, reasons, comments,
reminders, delays and break-glass. The real Bot over FakeChat with a fake clock
(tests/unit/test_gate.py's room); the real-swarm races are in tests/integration."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.approvals import Plan, State
from bot.core.context import Arg, CommandContext, split_reason
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from tests.unit.helpers import ADMIN, BotFactory, drain
from tests.unit.test_gate import (  # noqa: F401 (the fixtures: clock, risky, room, make_room)
    APP,
    OP1,
    OP2,
    REQUESTER,
    ROSTER,
    Clock,
    Risky,
    Room,
    clock,
    make_room,
    risky,
    room,
)

# -- split_reason ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("app", ("app", None)),
        ("app -- moving to the new server", ("app", "moving to the new server")),
        ("app 1.2.0 --   two   spaces ", ("app 1.2.0", "two spaces")),
        ("-- only a reason", ("", "only a reason")),
        ("app --", ("app --", None)),  # nothing after it: no reason, the parser decides
        ("app --path x", ("app --path x", None)),  # an option, not the separator
    ],
)
def test_split_reason(rest: str, expected: tuple[str, str | None]) -> None:
    assert split_reason(rest) == expected


# -- pins and the recheck after the lock wait --------------------------------------------


class Pinned:
    """A risky command whose plan resolves `latest` to a concrete version and pins it,
    as a deploy plan pins the newest tag."""

    def __init__(self) -> None:
        self.newest = "1.1.0"
        self.deployed = "1.0.0"
        self.ran: list[str] = []
        self.group = CommandGroup("pinned")

        async def plan(ctx: CommandContext) -> Plan:
            target = ctx.args["version"] or self.newest
            return Plan(
                f"Deploy {self.deployed} → {target}.",
                fingerprint=f"{self.deployed}|{target}",
                needs_vote=target != self.deployed,
                pins={"version": target},
            )

        @self.group.command(
            "ship",
            help="Deploy a version.",
            args=(Arg("app"), Arg("version", required=False)),
            role=Role.OPERATOR,
            vote_policy="deploy_version_change",
            lock_arg="app",
            plan=plan,
            example="ship a 1.0.0",
        )
        async def ship(ctx: CommandContext) -> None:
            self.ran.append(ctx.args["version"])
            self.deployed = ctx.args["version"]
            await ctx.reply(f"shipped {ctx.args['version']}")


@pytest.fixture
def pinned() -> Pinned:
    return Pinned()


@pytest.fixture
def pinned_room(make_bot: BotFactory, pinned: Pinned, clock: Clock) -> Room:
    bot = make_bot(pinned.group, members=dict(ROSTER), clock=clock, approvals={"required": 1})
    return Room(bot, clock)


async def _proposal_id(room: Room, body: str) -> str:
    msg = room.message(body, REQUESTER)
    await room.bot.dispatcher.submit(msg)
    await drain(room.bot)
    (sent,) = [s for s in room.chat.sent if s.reply_to == msg.event_id]
    row = room.bot.store.proposal_for_message(sent.event_id)
    assert row is not None
    return row.id


async def test_a_tag_arriving_during_the_vote_changes_nothing(
    pinned_room: Room, pinned: Pinned
) -> None:
    proposal = await _proposal_id(pinned_room, "!ship a")  # newest is 1.1.0: voted
    pinned.newest = "2.0.0"  # a tag arrives while members vote
    await pinned_room.say(f"!approve {proposal}", OP1)
    assert pinned.ran == ["1.1.0"]


async def test_a_voted_plan_that_changed_while_waiting_for_the_lock_does_not_run(
    pinned_room: Room, pinned: Pinned
) -> None:
    proposal = await _proposal_id(pinned_room, "!ship a 1.1.0")
    locks = pinned_room.bot.jobs.locks
    await locks.acquire("a")  # another job works on the app
    await pinned_room.bot.dispatcher.handle(pinned_room.message(f"!approve {proposal}", OP1))
    pinned.deployed = "1.2.0"  # that job's doing
    locks.release("a")
    await drain(pinned_room.bot)
    assert pinned.ran == []
    row = pinned_room.bot.store.proposal(proposal)
    assert row is not None
    assert row.state == State.STALE
    assert any("Not run: things changed since the vote" in t for t in pinned_room.chat.texts())


async def test_a_no_vote_request_that_needs_a_vote_after_the_wait_is_refused(
    pinned_room: Room, pinned: Pinned
) -> None:
    locks = pinned_room.bot.jobs.locks
    await locks.acquire("a")
    # A redeploy of the running version needs no vote when it is asked...
    await pinned_room.bot.dispatcher.handle(pinned_room.message("!ship a 1.0.0", REQUESTER))
    pinned.deployed = "1.1.0"  # ...but another job changed the app meanwhile
    locks.release("a")
    await drain(pinned_room.bot)
    assert pinned.ran == []
    assert any("it now needs a vote" in t for t in pinned_room.chat.texts())


# -- deciding --------------------------------------------------------------------------------


class Flaky(Risky):
    """The plan fails `failures` times (the swarm unreachable), then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.planned = 0
        spec = self.group.specs[0]
        inner = spec.plan
        assert inner is not None

        async def plan(ctx: CommandContext) -> Plan:
            self.planned += 1
            if self.planned > 1 and self.failures > 0:  # the proposal itself plans fine
                self.failures -= 1
                raise ConnectionError("server unreachable")
            return await inner(ctx)

        object.__setattr__(spec, "plan", plan)


def _flaky_room(make_bot: BotFactory, clock: Clock, failures: int) -> tuple[Room, Flaky]:
    flaky = Flaky(failures)
    bot = make_bot(flaky.group, members=dict(ROSTER), clock=clock, approvals={"required": 1})
    return Room(bot, clock), flaky


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.core.gate.START_RETRY_WAIT", 0.0)


async def test_a_deciding_vote_whose_start_fails_once_is_retried(
    make_bot: BotFactory, clock: Clock
) -> None:
    room, flaky = _flaky_room(make_bot, clock, failures=1)
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    assert [c.app for c in flaky.calls] == [APP]
    assert room.row(proposal).state == State.DONE


async def test_a_start_that_keeps_failing_closes_the_proposal_and_never_runs_later(
    make_bot: BotFactory, clock: Clock
) -> None:
    room, flaky = _flaky_room(make_bot, clock, failures=10)
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    assert flaky.calls == []
    assert room.row(proposal).state == State.FAILED
    assert "could not be started" in room.shown(proposal)
    flaky.failures = 0
    clock.now += 3 * 86400  # days later, a viewer's !approve starts nothing
    await room.say(f"!approve {proposal.id}", "@viewer:test")
    assert flaky.calls == []


async def test_an_approval_seen_only_after_expiry_never_runs(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    vote = room.reaction(proposal.message_id, OP1)
    room.clock.now += 4000  # past the hour: the vote was cast in time, seen late
    await room.bot.dispatcher.submit(
        type(vote)(vote.room_id, vote.event_id, OP2, vote.target, "👍", vote.timestamp_ms)
    )
    await drain(room.bot)
    assert risky.calls == []


async def test_the_sweeper_survives_a_failed_edit(room: Room, risky: Risky) -> None:
    first = await room.propose("one.test")
    second = await room.propose("two.test")
    failing = room.chat.edit

    async def edit(room_id: str, event_id: str, markdown: str) -> None:
        if event_id == first.message_id:
            raise ConnectionError("the server refused the edit")
        await failing(room_id, event_id, markdown)

    room.chat.edit = edit  # type: ignore[method-assign]
    room.clock.now += 4000
    await room.bot.gate.sweep()
    assert room.row(second).state == State.EXPIRED


# -- reasons, comments, reminders --------------------------------------------------------------


async def test_a_reason_is_shown_and_audited(room: Room) -> None:
    msg = room.message(f"!nuke {APP} -- moving to the new server", REQUESTER)
    await room.bot.dispatcher.submit(msg)
    await drain(room.bot)
    (sent,) = [s for s in room.chat.sent if s.reply_to == msg.event_id]
    assert "Reason: `moving to the new server`" in sent.markdown
    assert any("reason: moving to the new server" in d for d in room.audit("proposed"))


async def test_a_policy_may_require_a_reason(make_room: Any, risky: Risky) -> None:
    room = make_room(approvals={"policies": {"undeploy": {"require_reason": True}}})
    (answer,) = await room.say(f"!nuke {APP}")
    assert "needs a reason" in answer
    assert "Nothing was done" in answer
    assert room.bot.store.proposals() == []


async def test_member_text_in_a_proposal_is_inert(room: Room) -> None:
    msg = room.message(f"!nuke {APP} -- see [this](https://evil.example) @room `x`", REQUESTER)
    await room.bot.dispatcher.submit(msg)
    await drain(room.bot)
    (sent,) = [s for s in room.chat.sent if s.reply_to == msg.event_id]
    assert "Reason: `` see [this](https://evil.example) @room `x` ``" in sent.markdown


async def test_a_reply_in_the_proposals_thread_is_kept_in_the_audit_log(room: Room) -> None:
    proposal = await room.propose()
    await room.say("I checked the backups first", OP2, thread_root=proposal.message_id)
    assert room.audit("comment") == [f"{proposal.id}: I checked the backups first"]


async def test_voters_are_reminded_once_at_half_time(room: Room) -> None:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    room.clock.now += 1900  # past half of the hour
    await room.bot.gate.sweep()
    await room.bot.gate.sweep()
    reminders = [s for s in room.chat.sent if s.markdown.startswith("⏰")]
    assert len(reminders) == 1
    (reminder,) = reminders
    assert reminder.notify
    assert reminder.thread_root == proposal.message_id
    assert OP1 not in reminder.mentions
    assert OP2 in reminder.mentions


async def test_expiry_is_told_to_the_requester(room: Room) -> None:
    await room.propose()
    room.clock.now += 4000
    await room.bot.gate.sweep()
    (note,) = [s for s in room.chat.sent if s.markdown.startswith("⌛ Proposal")]
    assert note.mentions == (REQUESTER,)
    assert note.notify


async def test_the_proposal_pings_its_voters(room: Room) -> None:
    await room.propose()
    (sent,) = room.chat.sent
    assert sent.notify


# -- delays -----------------------------------------------------------------------------------


async def test_an_approved_proposal_waits_out_its_delay(make_room: Any, risky: Risky) -> None:
    room = make_room(approvals={"policies": {"undeploy": {"delay": "10m"}}})
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    await room.react(proposal.message_id, OP2)
    assert risky.calls == []
    assert "runs at" in room.shown(proposal)
    room.clock.now += 601
    await room.bot.gate.sweep()
    await drain(room.bot)
    assert [c.app for c in risky.calls] == [APP]


async def test_a_thumbs_down_during_the_delay_stops_it(make_room: Any, risky: Risky) -> None:
    room = make_room(approvals={"veto": False, "policies": {"undeploy": {"delay": "10m"}}})
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    await room.react(proposal.message_id, OP2)
    room.clock.now += 60
    await room.react(proposal.message_id, ADMIN, "👎")
    room.clock.now += 600
    await room.bot.gate.sweep()
    await drain(room.bot)
    assert risky.calls == []
    assert room.row(proposal).state == State.REJECTED


# -- break-glass ------------------------------------------------------------------------------


async def test_break_glass_needs_the_policy(room: Room, risky: Risky) -> None:
    proposal = await room.propose()
    (answer,) = await room.say(f"!urgent {proposal.id} -- the site is down", ADMIN)
    assert "does not allow break-glass" in answer
    assert risky.calls == []


async def test_break_glass_runs_at_once_tells_the_room_and_asks_to_confirm(
    make_room: Any, risky: Risky
) -> None:
    room = make_room(approvals={"policies": {"undeploy": {"break_glass": True}}})
    proposal = await room.propose()
    (refused,) = await room.say(f"!urgent {proposal.id} -- down", OP1)
    assert "needs the admin role" in refused
    await room.say(f"!urgent {proposal.id} -- the site is down", ADMIN)
    await drain(room.bot)
    assert [c.app for c in risky.calls] == [APP]
    (alarm,) = [s for s in room.chat.sent if s.markdown.startswith("🚨")]
    assert alarm.mentions == ("@room",)
    assert alarm.notify
    assert room.audit("urgent") == [f"{proposal.id}: !nuke {APP}; reason: the site is down"]
    (follow_up,) = room.bot.store.proposals(State.OPEN)
    assert follow_up.command == "ratify"
    assert follow_up.policy == "confirm_urgent"
    assert "the site is down" in follow_up.plan.summary


# -- properties -------------------------------------------------------------------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    votes=st.lists(
        st.tuples(st.sampled_from([OP1, OP2, ADMIN, "@viewer:test", REQUESTER]), st.booleans()),
        max_size=6,
    ),
    late=st.booleans(),
    changed=st.booleans(),
)
def test_no_run_without_eligible_approvals_a_changed_plan_or_after_expiry(
    make_bot: BotFactory, votes: list[tuple[str, bool]], late: bool, changed: bool
) -> None:
    async def scenario() -> None:
        risky, clock = Risky(), Clock()
        bot = make_bot(risky.group, members=dict(ROSTER), clock=clock)
        room = Room(bot, clock)
        proposal = await room.propose()
        if changed:
            risky.deployed[APP] = "9.9.9"
        if late:
            clock.now += 4000
        latest: dict[str, bool] = {}
        for voter, approve in votes:
            ran_before = bool(risky.calls)
            await room.react(proposal.message_id, voter, "👍" if approve else "👎")
            latest[voter] = approve
            if risky.calls and not ran_before:  # this vote decided it: count what held
                approvals = {v for v, ok in latest.items() if ok and v in (OP1, OP2, ADMIN)}
                assert len(approvals) >= 2
                assert not changed
                assert not late
        assert room.row(proposal).state != State.OPEN or not risky.calls
        bot.store.close()

    asyncio.run(scenario())
