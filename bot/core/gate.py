"""The approval gate: risky commands become proposals that run once the co-op
has voted. State lives in SQLite; the counting is bot/core/approvals.py's `decide`.

Votes arrive as reactions (and redactions withdrawing them) or as
`!approve`/`!reject`. All changes to proposals go through one lock, so a
reaction and its redaction are applied in the order they arrived.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from bot.core.approvals import Ballot, Choice, Plan, Policy, State, Tally, choice_for_key, decide
from bot.core.chat import ROOM_MENTION, Message, Reaction, Redaction
from bot.core.context import CommandContext, Control, Services, split_reason
from bot.core.proposal_text import people, render, stopped_note, summary_line
from bot.core.proposal_text import start_failure as _reason
from bot.core.records import ProposalRow, StoredPlan, VoteRow
from bot.core.roles import Role
from bot.core.windows import delay_only
from bot.errors import StalePlan, UserError
from bot.fmt import code, utc_time

log = logging.getLogger(__name__)

COMMENT_LIMIT = 500  # characters of a comment kept in the audit log
# A deciding vote whose start fails (the swarm briefly unreachable) is tried again.
START_ATTEMPTS = 3
START_RETRY_WAIT = 1.0  # seconds, doubling

CHANGED = "the app changed since this was proposed, so the plan no longer holds"
LEFT = "{requester} left the room, so it no longer runs"

_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
SEED_KEYS = ("👍", "👎")


class ApprovalGate:
    def __init__(
        self,
        services: Services,
        control: Control,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = 5.0,
    ) -> None:
        self._services = services
        self._control = control  # the dispatcher: what an approved command runs with
        self._prefix = services.prefix
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._lock = asyncio.Lock()
        self._shown: dict[str, str] = {}  # proposal id -> the text its message shows

    # -- asking --------------------------------------------------------------------
    async def propose(self, ctx: CommandContext) -> str | None:
        """Post the proposal for a risky command; nothing runs yet. Returns its id,
        or None when the plan says this request needs no vote (it runs at once)."""
        services, message = self._services, ctx.message
        assert ctx.spec.vote_policy is not None
        plan = await self._plan(ctx)
        if not plan.needs_vote:
            ctx.run_as_planned(plan)
            services.jobs.start(ctx)
            return None
        policy_name = plan.policy or ctx.spec.vote_policy
        policy = services.config.approvals.policy(policy_name)
        if policy.require_reason and not ctx.reason:
            raise UserError(
                f"`{self._prefix}{ctx.spec.name}` needs a reason ({policy_name} policy): end "
                f"the command with ` -- why`, e.g. `{message.body.strip()} -- moving servers`. "
                "Nothing was done."
            )
        now = self._clock()
        app = str(ctx.args[ctx.spec.lock_arg]) if ctx.spec.lock_arg else None
        row = ProposalRow(
            id=self._new_id(),
            command=ctx.spec.name,
            text=message.body,
            app=app,
            policy=policy_name,
            plan=StoredPlan(plan.summary, plan.fingerprint, dict(plan.pins)),
            requester=message.sender,
            room_id=message.room_id,
            event_id=message.event_id,
            message_id=None,
            state=State.OPEN,
            created_at=now,
            expires_at=max(now, plan.run_at or 0) + policy.timeout,
            decided_at=None,
            thread_root=message.thread_root,
            reason=ctx.reason,
            run_at=plan.run_at,  # a queued auto-patch: posted approved, held to its window
        )
        async with self._lock:
            message_id = await self._post(row, policy, message.reply_target)
        for key in SEED_KEYS:  # buttons to click; the bot's own reactions never count
            await services.chat.react(row.room_id, message_id, key)
        return row.id

    async def _post(self, row: ProposalRow, policy: Policy, reply_to: str | None) -> str:
        """Store a new proposal and post it, pinging its voters (under the lock)."""
        services = self._services
        services.store.add_proposal(row)
        voters = await self._eligible(row, policy)
        text = self._text(row, policy, Tally(State.OPEN, (), (), (), policy.required), voters)
        message_id = await services.chat.send(
            row.room_id,
            text,
            reply_to=reply_to,
            thread_root=row.thread_root,
            mentions=voters,
            notify=True,  # the voters must hear of it: a notice would not ping them
        )
        self._shown[row.id] = text
        services.store.set_proposal_message(row.id, message_id)
        services.store.audit(
            row.requester,
            "proposed",
            f"{row.id}: {row.text} ({row.policy})"
            + (f"; reason: {row.reason}" if row.reason else ""),
            app=row.app,
            room_id=row.room_id,
            event_id=row.event_id,
        )
        return message_id

    async def urgent(self, ctx: CommandContext, proposal_id: str) -> None:
        """Break-glass: one admin runs an open proposal at once, where its policy
        allows it. The whole room is told, it is audited, and a follow-up proposal
        asks the co-op to confirm it afterwards."""
        services, message = self._services, ctx.message
        if not ctx.reason:
            raise UserError(
                f"Say why: `{self._prefix}urgent {proposal_id} -- the site is down`. "
                "Nothing was done."
            )
        async with self._lock:
            row = services.store.proposal(proposal_id.lower())
            if row is None or row.room_id != message.room_id or row.state != State.OPEN:
                raise UserError(
                    f"No open proposal `{proposal_id}` in this room. "
                    f"`{self._prefix}proposals` lists them."
                )
            policy = services.config.approvals.policy(row.policy)
            if not policy.break_glass:
                raise UserError(
                    f"The {row.policy} policy does not allow break-glass runs "
                    f"(approvals.policies.{row.policy}.break_glass). Nothing was done."
                )
            now = self._clock()
            services.store.audit(
                message.sender,
                "urgent",
                f"{row.id}: {row.text}; reason: {ctx.reason}",
                app=row.app,
                room_id=row.room_id,
                event_id=message.event_id,
            )
            await services.chat.send(
                row.room_id,
                f"🚨 {message.sender} runs proposal `{row.id}` ({code(row.text)}) at once, "
                f"without the vote (break-glass). Reason: {code(ctx.reason)}",
                mentions=[ROOM_MENTION],
                notify=True,
            )
            tally = await self._tally(row)
            await self._start(row, policy, tally, now)
            follow_up = ProposalRow(
                id=self._new_id(),
                command="ratify",
                text=f"{self._prefix}ratify {row.id}",
                app=row.app,
                policy="confirm_urgent",
                plan=StoredPlan(
                    f"Confirm that {message.sender} ran {code(row.text)} at once "
                    f"(break-glass). Reason: {code(ctx.reason)}",
                    "",
                ),
                requester=message.sender,
                room_id=row.room_id,
                event_id=message.event_id,
                message_id=None,
                state=State.OPEN,
                created_at=now,
                expires_at=now + services.config.approvals.policy("confirm_urgent").timeout,
                decided_at=None,
                thread_root=message.thread_root,
            )
            follow_up_message = await self._post(
                follow_up, services.config.approvals.policy("confirm_urgent"), None
            )
        for key in SEED_KEYS:
            await services.chat.react(row.room_id, follow_up_message, key)

    async def describe(self, row: ProposalRow) -> str:
        """One open proposal for `!proposals`: its plan, who voted, what is missing."""
        policy = self._services.config.approvals.policy(row.policy)
        tally = await self._tally(row)
        voted = {v.voter for v in self._services.store.votes(row.id)}
        waiting = [v for v in await self._eligible(row, policy) if v not in voted]
        return summary_line(row, tally, waiting)

    async def _plan(self, ctx: CommandContext) -> Plan:
        if ctx.spec.plan is not None:
            return await ctx.spec.plan(ctx)
        return Plan(summary=f"Run `{ctx.message.body}`.")

    def _new_id(self) -> str:
        while True:
            candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(5))
            if self._services.store.proposal(candidate) is None:
                return candidate

    async def _eligible(self, row: ProposalRow, policy: Policy) -> list[str]:
        """Who may vote: pinged in the proposal."""
        services = self._services
        users = set(await services.chat.members(row.room_id))
        users |= set(services.config.access.admins) | set(services.config.access.operators)
        eligible = []
        for user in sorted(users - {services.chat.user_id}):
            if user == row.requester and not policy.allow_self_approval:
                continue
            role = await services.access.role(row.room_id, user)
            if role is not None and role >= policy.voters:
                eligible.append(user)
        return eligible

    # -- voting ----------------------------------------------------------------------
    async def on_reaction(self, reaction: Reaction) -> None:
        choice = choice_for_key(reaction.key)
        if choice is None:
            return
        async with self._lock:
            row = self._services.store.proposal_for_message(reaction.target)
            # A reaction relates to events of its own room only (recount agrees).
            if row is None or row.state != State.OPEN or row.room_id != reaction.room_id:
                return
            self._services.store.add_vote(
                VoteRow(
                    reaction.event_id,
                    row.id,
                    reaction.sender,
                    choice,
                    "reaction",
                    reaction.timestamp_ms / 1000,
                )
            )
            await self._update(row)

    async def on_comment(self, message: Message) -> None:
        """A reply in a proposal's thread is kept in the audit log with its votes."""
        row = self._services.store.proposal_for_message(message.thread_root or "")
        if row is None or row.room_id != message.room_id:
            return
        self._services.store.audit(
            message.sender,
            "comment",
            f"{row.id}: {message.body.strip()[:COMMENT_LIMIT]}",
            app=row.app,
            room_id=row.room_id,
            event_id=message.event_id,
        )

    async def on_redaction(self, redaction: Redaction) -> None:
        async with self._lock:
            proposal_id = self._services.store.remove_vote(redaction.redacts, redaction.room_id)
            row = self._services.store.proposal(proposal_id) if proposal_id else None
            if row is not None and row.state == State.OPEN:
                await self._update(row)

    async def vote_by_text(self, ctx: CommandContext, proposal_id: str, choice: Choice) -> None:
        services, message = self._services, ctx.message
        async with self._lock:
            row = services.store.proposal(proposal_id.lower())
            if row is None or row.room_id != message.room_id:
                raise UserError(
                    f"No proposal `{proposal_id}` in this room. `{self._prefix}proposals` "
                    "lists the open ones."
                )
            if row.state != State.OPEN:
                raise UserError(f"Proposal `{row.id}` is already closed ({row.state}).")
            if message.timestamp_ms / 1000 > row.expires_at:
                tally = await self._update(row)  # closes it on the votes cast in time
                if tally.state is State.EXPIRED:
                    raise UserError(
                        f"Too late: proposal `{row.id}` expired at {utc_time(row.expires_at)}, "
                        "before your vote. Nothing was done."
                    )
                raise UserError(f"Proposal `{row.id}` was already decided ({tally.state}).")
            services.store.add_vote(
                VoteRow(
                    message.event_id,
                    row.id,
                    message.sender,
                    choice,
                    "text",
                    message.timestamp_ms / 1000,
                )
            )
            tally = await self._update(row)
        not_counted = dict(tally.ignored).get(message.sender)
        if not_counted:
            asked = message.sender == row.requester
            why = "you asked for it" if asked else f"you are {not_counted}"
            await ctx.reply(f"Your vote on `{row.id}` does not count: {why}.")
        else:
            await ctx.reply(
                f"Counted: you {'approve' if choice is Choice.APPROVE else 'reject'} `{row.id}`."
            )

    # -- counting and deciding -----------------------------------------------------
    async def _tally(self, row: ProposalRow) -> Tally:
        services = self._services
        votes = services.store.votes(row.id)
        roles: dict[str, Role | None] = {}
        for vote in votes:
            if vote.voter not in roles:  # roles as they are now, at counting time
                roles[vote.voter] = await services.access.role(row.room_id, vote.voter)
        return decide(
            requester=row.requester,
            bot=services.chat.user_id,
            ballots=[Ballot(v.voter, Choice(v.choice), v.event_id, v.cast_at) for v in votes],
            roles=roles,
            policy=services.config.approvals.policy(row.policy),
            expires_at=row.expires_at,
            now=self._clock(),
        )

    async def _update(self, row: ProposalRow) -> Tally:
        """Recount; show the live tally, or close the proposal if it is decided."""
        tally = await self._tally(row)
        if tally.state is State.OPEN:
            policy = self._services.config.approvals.policy(row.policy)
            voters = await self._eligible(row, policy)
            await self._show(row, self._text(row, policy, tally, voters))
        else:
            await self._close(row, tally)
        return tally

    async def _close(self, row: ProposalRow, tally: Tally) -> None:
        services, now = self._services, self._clock()
        policy = services.config.approvals.policy(row.policy)
        if tally.state is not State.APPROVED:
            services.store.set_proposal_state(row.id, tally.state, now)
            self._audit(
                row,
                tally.state.value,
                f"{row.id}: {row.text}; approved by {people(tally.approvers)}, "
                f"rejected by {people(tally.rejecters)}",
            )
            await self._show(row, self._text(row, policy, tally, None))
            if tally.state is State.EXPIRED:
                await self._note(
                    row, f"⌛ Proposal `{row.id}` expired; nothing was done.", [row.requester]
                )
            elif tally.state is State.REJECTED and row.run_at is not None:  # held, then 👎
                await self._note(row, *stopped_note(row, tally))
            return
        if now >= row.expires_at:
            # Approved in time but only seen now (the bot was down, or a start kept
            # failing): a proposal never runs after its expiry.
            expired = Tally(State.EXPIRED, tally.approvers, tally.rejecters, tally.ignored, 0)
            services.store.set_proposal_state(row.id, State.EXPIRED, now)
            self._audit(row, "expired", f"{row.id}: {row.text}; approved too late to run")
            await self._show(row, self._text(row, policy, expired, None))
            return
        when = services.windows.run_at if services.windows else delay_only  # delay, window
        if (run_at := await when(row, now, policy.delay)) is not None:
            await self._hold(row, policy, tally, now, run_at)
            return
        await self._start(row, policy, tally, now)

    async def _hold(
        self, row: ProposalRow, policy: Policy, tally: Tally, now: float, run_at: float
    ) -> None:
        """An approved proposal under a delay waits, still open: an eligible 👎 in that
        time rejects it (veto or not), and the sweeper starts it when the time comes."""
        services = self._services
        if tally.rejecters:
            rejected = Tally(State.REJECTED, tally.approvers, tally.rejecters, tally.ignored, 0)
            services.store.set_proposal_state(row.id, State.REJECTED, now)
            self._audit(row, "rejected", f"{row.id}: {row.text}; stopped during its delay")
            await self._show(row, self._text(row, policy, rejected, None))
            if row.run_at is not None:  # it was shown held: say it will not run
                await self._note(row, *stopped_note(row, rejected))
            return
        if row.run_at != run_at:
            row = services.store.proposal(row.id) or row  # a window may extend the expiry
            run_at = min(run_at, row.expires_at)
            services.store.set_proposal_run_at(row.id, run_at)
            row = services.store.proposal(row.id) or row
            self._audit(row, "approved", f"{row.id}: {row.text}; runs at {utc_time(run_at)}")
            if services.windows is not None:  # told only now that it really stays held
                await services.windows.announce(row, run_at)
        held = Tally(State.OPEN, tally.approvers, tally.rejecters, tally.ignored, 0)
        await self._show(row, self._text(row, policy, held, None))

    async def _start(self, row: ProposalRow, policy: Policy, tally: Tally, now: float) -> None:
        """Start the approved command, with the plan members voted for. A transient
        failure (the swarm unreachable) is retried; if it still fails the proposal is
        closed as failed and says so: it never runs later by surprise."""
        services = self._services
        job_id: int | None = None
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_not_exception_type(StalePlan),
                stop=stop_after_attempt(START_ATTEMPTS),
                wait=wait_exponential(multiplier=START_RETRY_WAIT),
                reraise=True,
            ):
                with attempt:
                    ctx = await self._context(row)
                    if ctx is None:
                        raise StalePlan(LEFT.format(requester=row.requester))
                    voted = Plan(
                        row.plan.summary, row.plan.fingerprint, row.policy, pins=row.plan.pins
                    )
                    ctx.run_as_planned(voted, row.id)
                    await ctx.recheck()
                    services.store.set_proposal_state(row.id, State.DONE, now)
                    job_id = services.jobs.start(ctx).id
        except StalePlan as exc:
            services.store.set_proposal_state(row.id, State.STALE, now)
            self._audit(row, "stale", f"{row.id}: {row.text}")
            stale = Tally(State.STALE, tally.approvers, tally.rejecters, tally.ignored, 0)
            why = str(exc) if str(exc) == LEFT.format(requester=row.requester) else CHANGED
            await self._show(row, self._text(row, policy, stale, None, stale_because=why))
            await self._note(
                row, f"♻ Proposal `{row.id}` is stale ({why}); nothing ran.", [row.requester]
            )
            return
        except Exception as exc:
            log.exception("approved proposal %s could not be started", row.id)
            services.store.set_proposal_state(row.id, State.FAILED, now)
            self._audit(row, "failed", f"{row.id}: {row.text}; could not start: {exc}")
            failed = Tally(State.FAILED, tally.approvers, tally.rejecters, tally.ignored, 0)
            await self._show(row, self._text(row, policy, failed, None, stale_because=_reason(exc)))
            await self._note(
                row,
                f"⚠ Proposal `{row.id}` was approved but could not be started "
                f"({_reason(exc)}); nothing ran.",
                [row.requester, *self._services.config.access.admins],
            )
            return
        self._audit(
            row,
            "approved",
            f"{row.id}: {row.text}; approved by {people(tally.approvers)}; job #{job_id}",
        )
        done = Tally(State.DONE, tally.approvers, tally.rejecters, tally.ignored, 0)
        await self._show(row, self._text(row, policy, done, None, job_id=job_id))

    async def _note(self, row: ProposalRow, text: str, mentions: list[str]) -> None:
        """A short message in the proposal's thread that pings the people named
        (an edit of the proposal itself would notify nobody: MSC3958)."""
        if row.message_id is None:
            return
        await self._services.chat.send(
            row.room_id,
            text,
            thread_root=row.thread_root or row.message_id,
            mentions=mentions,
            notify=True,
        )

    async def _remind(self, row: ProposalRow, now: float) -> None:
        """Once, when half the voting time is gone: ping the eligible voters who have
        not voted yet."""
        if row.reminded or row.run_at is not None:
            return
        if now < row.created_at + (row.expires_at - row.created_at) / 2:
            return
        self._services.store.set_proposal_reminded(row.id)
        policy = self._services.config.approvals.policy(row.policy)
        tally = await self._tally(row)
        voted = {v.voter for v in self._services.store.votes(row.id)}
        waiting = [v for v in await self._eligible(row, policy) if v not in voted]
        if tally.state is State.OPEN and waiting:
            await self._note(
                row,
                f"⏰ Half the time for proposal `{row.id}` ({code(row.text)}) is gone: "
                f"{tally.needed} more approval{'s' if tally.needed != 1 else ''} needed by "
                f"{utc_time(row.expires_at)}.",
                waiting,
            )

    def _audit(self, row: ProposalRow, action: str, detail: str) -> None:
        """Decisions are the bot's, about the proposal message."""
        self._services.store.audit(
            "coopbot", action, detail, app=row.app, room_id=row.room_id, event_id=row.message_id
        )

    async def _context(self, row: ProposalRow) -> CommandContext | None:
        """The command as it was asked, to run in the proposal's thread."""
        services = self._services
        spec = services.registry.get(row.command)
        role = await services.access.role(row.room_id, row.requester)
        if spec is None or role is None:
            return None
        assert row.message_id is not None
        # Split off the command word at any whitespace, as the dispatcher does.
        words = row.text[len(self._prefix) :].strip().split(None, 1)
        rest, _ = split_reason(words[1] if len(words) > 1 else "")
        message = Message(
            row.room_id,
            row.message_id,
            row.requester,
            row.text,
            int(self._clock() * 1000),
            # Threads do not nest: a proposal asked in a thread reports in that thread.
            thread_root=row.thread_root or row.message_id,
        )
        return CommandContext(
            spec,
            spec.parse(rest, self._prefix),
            message,
            role,
            services,
            self._control,
            reason=row.reason,
        )

    async def _show(self, row: ProposalRow, text: str) -> None:
        if row.message_id is None or self._shown.get(row.id) == text:
            return
        self._shown[row.id] = text
        await self._services.chat.edit(row.room_id, row.message_id, text)

    # -- upkeep ----------------------------------------------------------------------
    async def maintain(self, ready: Callable[[], bool]) -> None:
        """Once the chat is connected: recount every open proposal from the server's
        reactions (votes cast or withdrawn while the bot was down), then close
        proposals as they expire."""
        while not ready():  # noqa: ASYNC110  (the chat exposes a predicate, not an event)
            await asyncio.sleep(0.2)
        await self.recount()
        while True:
            await self.sweep()
            await asyncio.sleep(self._sweep_interval)

    async def recount(self) -> None:
        services = self._services
        for row in services.store.proposals(State.OPEN):
            if row.message_id is None:
                continue
            try:
                reactions = await services.chat.reactions(row.room_id, row.message_id)
            except Exception:
                log.exception("cannot recount proposal %s", row.id)
                continue
            votes = [
                VoteRow(r.event_id, row.id, r.sender, choice, "reaction", r.timestamp_ms / 1000)
                for r in reactions
                if (choice := choice_for_key(r.key)) is not None
            ]
            async with self._lock:
                services.store.replace_reaction_votes(row.id, votes)
                await self._update(row)

    async def sweep(self) -> None:
        """Close what expired, start what waited out its delay. One proposal's failure
        (a message edit the server refused) is logged and never stops the others."""
        now = self._clock()
        for row in self._services.store.proposals(State.OPEN):
            due = now >= row.expires_at or (row.run_at is not None and now >= row.run_at)
            try:
                async with self._lock:
                    current = self._services.store.proposal(row.id)
                    if current is None or current.state != State.OPEN:
                        continue
                    if due:
                        await self._update(current)
                    else:
                        await self._remind(current, now)
            except Exception:
                log.exception("proposal %s: upkeep failed; trying again next sweep", row.id)

    # -- showing -----------------------------------------------------------------------
    def _text(
        self,
        row: ProposalRow,
        policy: Policy,
        tally: Tally,
        voters: list[str] | None,
        job_id: int | None = None,
        stale_because: str = "",
    ) -> str:
        return render(row, policy, tally, voters, job_id, stale_because, prefix=self._prefix)
