"""Proposals and votes as a pure state machine: no I/O, time passed in.

`decide` turns a proposal's ballots, the voters' current roles and its policy
into a state. Everything that talks to Matrix or the store lives in bot/core/gate.py.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from bot.core.roles import Role

APPROVE_KEYS = frozenset({"👍", "✅", "➕"})
REJECT_KEYS = frozenset({"👎", "❌"})
# Variation selectors and skin-tone modifiers change how an emoji looks, not what it says.
_DECORATION = {"\ufe0e", "\ufe0f", *(chr(code) for code in range(0x1F3FB, 0x1F400))}


class Choice(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class State(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    STALE = "stale"  # approved, but the app changed before it could run
    DONE = "done"  # approved and handed to a job
    FAILED = "failed"  # approved, but it could not be started: nothing ran

    @property
    def final(self) -> bool:
        return self is not State.OPEN


def choice_for_key(key: str) -> Choice | None:
    """The vote a reaction key means, or None for any other reaction."""
    bare = "".join(ch for ch in unicodedata.normalize("NFC", key) if ch not in _DECORATION)
    if bare in APPROVE_KEYS:
        return Choice.APPROVE
    if bare in REJECT_KEYS:
        return Choice.REJECT
    return None


@dataclass(frozen=True)
class Plan:
    """What a risky command will do, computed when it is asked and again just
    before it runs. If the fingerprint changed in between, the vote is stale."""

    summary: str  # markdown shown in the proposal
    fingerprint: str = ""  # the state the plan depends on (e.g. the deployed version)
    policy: str | None = None  # overrides the command's vote_policy (e.g. major_upgrade)
    # False when this particular request is not risky (a first deploy, a redeploy
    # of the running version): it then runs at once, like any operator command.
    needs_vote: bool = True
    # Argument values the plan resolved (the exact version, the snapshot id): the
    # job runs with these, so a tag or snapshot that appears later changes nothing.
    pins: Mapping[str, Any] = field(default_factory=dict)
    # Approved already and held until then (a scheduled auto-patch queued to its
    # server's maintenance window): the proposal is posted held, an eligible 👎 stops it.
    run_at: float | None = None


@dataclass(frozen=True)
class Policy:
    required: int
    voters: Role
    veto: bool
    allow_self_approval: bool
    timeout: float
    # An approved proposal runs only after this many seconds; an eligible 👎 in that
    # time stops it (the wait timer of GitHub's environment reviews).
    delay: float = 0.0
    require_reason: bool = False  # the request must say why: `!undeploy app -- why`
    # One admin may run an open proposal at once with `!urgent ID -- why`.
    break_glass: bool = False


# The policy of a scheduled auto-patch queued to its server's window: nothing to vote
# for (the co-op chose auto_patch), but any eligible 👎 before it runs cancels it.
AUTO_PATCH = "auto_patch"


def auto_patch_policy(upgrade: Policy) -> Policy:
    """The upgrade policy's voters and timeout, with no approval needed and a veto."""
    return replace(
        upgrade, required=0, veto=True, delay=0.0, require_reason=False, break_glass=False
    )


@dataclass(frozen=True)
class Ballot:
    """One vote as cast: a reaction or a `!approve`/`!reject` message."""

    voter: str
    choice: Choice
    event_id: str
    cast_at: float


@dataclass(frozen=True)
class Tally:
    state: State
    approvers: tuple[str, ...]
    rejecters: tuple[str, ...]
    ignored: tuple[tuple[str, str], ...]  # (voter, why their vote does not count)
    needed: int  # approvals still missing
    withdrawn: bool = False  # the requester rejected their own proposal


def decide(
    *,
    requester: str,
    bot: str,
    ballots: Iterable[Ballot],
    roles: Mapping[str, Role | None],
    policy: Policy,
    expires_at: float,
    now: float,
) -> Tally:
    """The state of an open proposal. Each member's latest ballot counts; ballots
    cast after expiry never count; roles are the voters' roles now."""
    latest: dict[str, Ballot] = {}
    for ballot in sorted(ballots, key=lambda b: b.cast_at):
        if ballot.cast_at <= expires_at:
            latest[ballot.voter] = ballot
    approvers: list[str] = []
    rejecters: list[str] = []
    ignored: list[tuple[str, str]] = []
    withdrawn = False
    for voter, ballot in sorted(latest.items()):
        role = roles.get(voter)
        if voter == bot:
            continue  # the bot's own seed reactions are buttons, not votes
        if voter == requester and not policy.allow_self_approval:
            if ballot.choice is Choice.REJECT:
                withdrawn = True
            else:
                ignored.append((voter, "asked for it"))
            continue
        if role is None or role < policy.voters:
            ignored.append((voter, f"not {policy.voters.label}"))
            continue
        (approvers if ballot.choice is Choice.APPROVE else rejecters).append(voter)
    needed = max(0, policy.required - len(approvers))
    if withdrawn or (policy.veto and rejecters):
        state = State.REJECTED
    elif needed == 0 and (policy.veto or len(approvers) > len(rejecters)):
        state = State.APPROVED
    elif now >= expires_at:
        state = State.EXPIRED
    else:
        state = State.OPEN
    return Tally(state, tuple(approvers), tuple(rejecters), tuple(ignored), needed, withdrawn)
