"""bot/core/approvals.py (what a reaction means, how ballots become a decision) and
the per-action policies of bot/config.py. Pure logic: no bot, no chat."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import POLICY_NAMES, parse_config
from bot.core.approvals import Ballot, Choice, Policy, State, Tally, choice_for_key, decide
from bot.core.roles import Role
from bot.errors import ConfigError

T0 = 1_000_000.0  # when the proposal was made
EXPIRES = T0 + 3600

REQUESTER = "@requester:test"
BOT = "@coopbot:test"
ANNA = "@anna:test"  # operators
BEN = "@ben:test"
CARL = "@carl:test"
ADA = "@ada:test"  # admin
VIV = "@viv:test"  # viewer
STRANGER = "@stranger:test"  # not in the room

ROLES: dict[str, Role | None] = {
    REQUESTER: Role.OPERATOR,
    BOT: Role.ADMIN,
    ANNA: Role.OPERATOR,
    BEN: Role.OPERATOR,
    CARL: Role.OPERATOR,
    ADA: Role.ADMIN,
    VIV: Role.VIEWER,
    STRANGER: None,
}

DEFAULT = Policy(
    required=2, voters=Role.OPERATOR, veto=True, allow_self_approval=False, timeout=3600
)

_event_ids = itertools.count(1)


def yes(voter: str, at: float = T0 + 10) -> Ballot:
    return Ballot(voter, Choice.APPROVE, f"$vote-{next(_event_ids)}", at)


def no(voter: str, at: float = T0 + 10) -> Ballot:
    return Ballot(voter, Choice.REJECT, f"$vote-{next(_event_ids)}", at)


def count(
    *ballots: Ballot,
    now: float = T0 + 60,
    roles: Mapping[str, Role | None] = ROLES,
    **policy: object,
) -> Tally:
    return decide(
        requester=REQUESTER,
        bot=BOT,
        ballots=ballots,
        roles=roles,
        policy=dataclasses.replace(DEFAULT, **policy),  # type: ignore[arg-type]
        expires_at=EXPIRES,
        now=now,
    )


# -- what a reaction means ------------------------------------------------------------

VS16 = "\ufe0f"  # emoji presentation selector, added by many keyboards
TONES = [chr(code) for code in range(0x1F3FB, 0x1F400)]  # 🏻 🏼 🏽 🏾 🏿


def _variants(base: str) -> list[str]:
    keys = [base, base + VS16]
    for tone in TONES:
        keys += [base + tone, base + tone + VS16, base + VS16 + tone]
    return keys


@pytest.mark.parametrize("key", [*_variants("👍"), "✅", "✅" + VS16, "➕", "➕" + VS16])
def test_approving_reactions(key: str) -> None:
    assert choice_for_key(key) is Choice.APPROVE


@pytest.mark.parametrize("key", [*_variants("👎"), "❌", "❌" + VS16])
def test_rejecting_reactions(key: str) -> None:
    assert choice_for_key(key) is Choice.REJECT


def test_all_five_skin_tones_are_covered() -> None:
    assert "".join(TONES) == "🏻🏼🏽🏾🏿"


@pytest.mark.parametrize(
    "key",
    [
        "❤️",
        "❤",
        "+1",
        "-1",
        "",
        VS16,
        "🏽",
        "👍👍",
        "👍👎",
        "👍❤️",
        "approve",
        ":thumbsup:",
        "yes",
        "🙏",
        "👌",
        "✔️",
    ],
)
def test_other_reactions_are_not_votes(key: str) -> None:
    assert choice_for_key(key) is None


# -- deciding ---------------------------------------------------------------------------


def test_quorum_reached() -> None:
    tally = count(yes(ANNA), yes(BEN))
    assert tally == Tally(State.APPROVED, (ANNA, BEN), (), (), 0)


def test_one_approval_short_stays_open() -> None:
    tally = count(yes(ANNA))
    assert tally == Tally(State.OPEN, (ANNA,), (), (), 1)


def test_no_ballots_is_open_and_needs_all() -> None:
    assert count() == Tally(State.OPEN, (), (), (), 2)


def test_the_requesters_approval_is_ignored() -> None:
    tally = count(yes(REQUESTER), yes(ANNA))
    assert tally.state is State.OPEN
    assert tally.approvers == (ANNA,)
    assert tally.ignored == ((REQUESTER, "asked for it"),)
    assert tally.needed == 1


def test_the_requesters_approval_counts_when_self_approval_is_allowed() -> None:
    tally = count(yes(REQUESTER), yes(ANNA), allow_self_approval=True)
    assert tally.state is State.APPROVED
    assert set(tally.approvers) == {REQUESTER, ANNA}
    assert tally.ignored == ()


def test_self_approval_still_needs_the_voter_role() -> None:
    tally = count(yes(REQUESTER), yes(ANNA), allow_self_approval=True, voters=Role.ADMIN)
    assert tally.state is State.OPEN
    assert tally.approvers == ()
    assert dict(tally.ignored) == {REQUESTER: "not admin", ANNA: "not admin"}


def test_the_requesters_reject_withdraws_even_with_quorum() -> None:
    tally = count(yes(ANNA), yes(BEN), no(REQUESTER))
    assert tally.state is State.REJECTED
    assert tally.withdrawn
    assert tally.rejecters == ()


def test_the_requesters_reject_withdraws_without_veto() -> None:
    tally = count(yes(ANNA), yes(BEN), no(REQUESTER), veto=False)
    assert tally.state is State.REJECTED
    assert tally.withdrawn


def test_the_requester_changing_their_mind_back_does_not_withdraw() -> None:
    tally = count(no(REQUESTER, T0 + 1), yes(REQUESTER, T0 + 2), yes(ANNA), yes(BEN))
    assert tally.state is State.APPROVED
    assert not tally.withdrawn


@pytest.mark.parametrize("allow_self_approval", [False, True])
@pytest.mark.parametrize("voters", list(Role))
def test_the_bots_ballots_never_count(allow_self_approval: bool, voters: Role) -> None:
    tally = count(
        yes(BOT, T0 + 1),
        no(BOT, T0 + 2),  # the bot's seed 👎 does not veto
        yes(ANNA),
        required=1,
        allow_self_approval=allow_self_approval,
        voters=voters,
    )
    assert BOT not in tally.approvers
    assert BOT not in tally.rejecters
    assert BOT not in dict(tally.ignored)  # the seed reactions are buttons: not even listed
    if voters <= Role.OPERATOR:
        assert (tally.state, tally.approvers) == (State.APPROVED, (ANNA,))
    else:
        assert (tally.state, tally.approvers) == (State.OPEN, ())


def test_the_bot_alone_never_approves() -> None:
    assert count(yes(BOT), required=1, voters=Role.VIEWER).state is State.OPEN


def test_a_voter_below_the_policys_role_is_ignored_with_the_reason() -> None:
    tally = count(yes(VIV), yes(ANNA))
    assert tally.state is State.OPEN
    assert tally.approvers == (ANNA,)
    assert tally.ignored == ((VIV, "not operator"),)


def test_admins_only_policy() -> None:
    tally = count(yes(ANNA), yes(BEN), yes(ADA), voters=Role.ADMIN, required=1)
    assert tally.state is State.APPROVED
    assert tally.approvers == (ADA,)
    assert dict(tally.ignored) == {ANNA: "not admin", BEN: "not admin"}


def test_viewers_may_vote_when_the_policy_says_so() -> None:
    tally = count(yes(VIV), yes(ANNA), voters=Role.VIEWER)
    assert tally.state is State.APPROVED
    assert set(tally.approvers) == {VIV, ANNA}


@pytest.mark.parametrize("voters", list(Role))
def test_a_non_member_is_ignored_whatever_the_policy(voters: Role) -> None:
    unknown = "@nobody-knows:test"  # not even in the roles mapping
    tally = count(yes(STRANGER), yes(unknown), voters=voters, required=1)
    assert tally.state is State.OPEN
    assert tally.approvers == ()
    assert dict(tally.ignored) == {
        STRANGER: f"not {voters.label}",
        unknown: f"not {voters.label}",
    }


def test_a_non_members_reject_does_not_veto() -> None:
    assert count(yes(ANNA), yes(BEN), no(STRANGER)).state is State.APPROVED


def test_latest_ballot_wins_approve_then_reject() -> None:
    tally = count(yes(ANNA, T0 + 1), no(ANNA, T0 + 2), yes(BEN))
    assert tally.state is State.REJECTED
    assert tally.approvers == (BEN,)
    assert tally.rejecters == (ANNA,)


def test_latest_ballot_wins_reject_then_approve() -> None:
    tally = count(no(ANNA, T0 + 1), yes(ANNA, T0 + 2), yes(BEN))
    assert tally.state is State.APPROVED
    assert tally.approvers == (ANNA, BEN)
    assert tally.rejecters == ()


def test_latest_means_cast_last_not_listed_last() -> None:
    tally = count(no(ANNA, T0 + 2), yes(ANNA, T0 + 1), yes(BEN))
    assert tally.state is State.REJECTED
    assert tally.rejecters == (ANNA,)


def test_one_voter_approving_twice_counts_once() -> None:
    tally = count(yes(ANNA, T0 + 1), yes(ANNA, T0 + 2))
    assert tally.state is State.OPEN
    assert tally.approvers == (ANNA,)
    assert tally.needed == 1


def test_ballots_after_expiry_do_not_count() -> None:
    tally = count(yes(ANNA), yes(BEN, EXPIRES + 1), now=EXPIRES + 5)
    assert tally.state is State.EXPIRED
    assert tally.approvers == (ANNA,)
    assert tally.needed == 1


def test_ballots_before_expiry_count_even_when_counted_later() -> None:
    tally = count(yes(ANNA, EXPIRES - 2), yes(BEN, EXPIRES - 1), now=EXPIRES + 86400)
    assert tally.state is State.APPROVED
    assert tally.approvers == (ANNA, BEN)


def test_a_ballot_at_the_deadline_counts() -> None:
    assert count(yes(ANNA), yes(BEN, EXPIRES), now=EXPIRES).state is State.APPROVED
    assert count(yes(ANNA), yes(BEN, EXPIRES + 0.001), now=EXPIRES).state is State.EXPIRED


def test_a_late_reject_neither_vetoes_nor_replaces_an_approval() -> None:
    tally = count(yes(ANNA), yes(BEN), no(CARL, EXPIRES + 1), no(ANNA, EXPIRES + 2))
    assert tally.state is State.APPROVED
    assert tally.approvers == (ANNA, BEN)
    assert tally.rejecters == ()


@pytest.mark.parametrize("now", [EXPIRES, EXPIRES + 1, EXPIRES + 86400])
def test_expiry_with_partial_approvals(now: float) -> None:
    tally = count(yes(ANNA), yes(VIV), now=now)
    assert tally.state is State.EXPIRED
    assert tally.approvers == (ANNA,)
    assert tally.needed == 1
    assert tally.ignored == ((VIV, "not operator"),)


def test_just_before_expiry_is_still_open() -> None:
    assert count(yes(ANNA), now=EXPIRES - 0.001).state is State.OPEN


def test_expiry_without_any_ballot() -> None:
    assert count(now=EXPIRES).state is State.EXPIRED


def test_a_rejected_proposal_stays_rejected_after_expiry() -> None:
    assert count(no(ANNA), now=EXPIRES + 1).state is State.REJECTED


def test_veto_one_eligible_reject_rejects_even_with_quorum() -> None:
    tally = count(yes(ANNA), yes(BEN), yes(ADA), no(CARL))
    assert tally.state is State.REJECTED
    assert not tally.withdrawn
    assert tally.approvers == (ADA, ANNA, BEN)
    assert tally.rejecters == (CARL,)


@pytest.mark.parametrize("rejecter", [VIV, STRANGER, BOT])
def test_an_ineligible_reject_does_not_veto(rejecter: str) -> None:
    tally = count(yes(ANNA), yes(BEN), no(rejecter))
    assert tally.state is State.APPROVED
    assert tally.rejecters == ()


def test_an_admins_reject_vetoes_an_operator_policy() -> None:
    assert count(yes(ANNA), yes(BEN), no(ADA)).state is State.REJECTED


def test_without_veto_approvals_must_outnumber_rejections() -> None:
    assert count(yes(ANNA), yes(BEN), no(CARL), veto=False).state is State.APPROVED
    tied = count(yes(ANNA), yes(BEN), no(CARL), no(ADA), veto=False)
    assert tied.state is State.OPEN
    assert tied.needed == 0
    assert tied.rejecters == (ADA, CARL)
    assert count(yes(ANNA), yes(BEN), no(CARL), no(ADA), veto=False, now=EXPIRES).state is (
        State.EXPIRED
    )
    outnumbered = count(yes(ANNA), yes(BEN), yes(ADA), no(CARL), veto=False, required=3)
    assert outnumbered.state is State.APPROVED


def test_without_veto_rejections_alone_do_not_reject() -> None:
    tally = count(no(ANNA), no(BEN), veto=False)
    assert tally.state is State.OPEN
    assert tally.rejecters == (ANNA, BEN)


@pytest.mark.parametrize("required", [1, 2, 3, 5])
@pytest.mark.parametrize("approvals", [0, 1, 2, 3, 4])
def test_needed_counts_the_missing_approvals(required: int, approvals: int) -> None:
    voters = [ANNA, BEN, CARL, ADA][:approvals]
    extra = "@dora:test"
    roles = {**ROLES, extra: Role.OPERATOR}
    if approvals == 4:
        voters = [ANNA, BEN, CARL, extra]
    tally = count(*(yes(v) for v in voters), required=required, roles=roles)
    assert tally.needed == max(0, required - approvals)
    assert tally.state is (State.APPROVED if approvals >= required else State.OPEN)


# -- properties ---------------------------------------------------------------------------

PEOPLE = [REQUESTER, BOT, *(f"@member{n}:test" for n in range(6))]
MAYBE_ROLE = st.sampled_from([None, *Role])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Policy, dict[str, Role | None], list[Ballot], float]:
    policy = Policy(
        required=draw(st.integers(1, 5)),
        voters=draw(st.sampled_from(list(Role))),
        veto=draw(st.booleans()),
        allow_self_approval=draw(st.booleans()),
        timeout=3600,
    )
    people = draw(st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=8, unique=True))
    roles = {person: draw(MAYBE_ROLE) for person in people}
    # Distinct times, so "latest" is unambiguous; some fall after the deadline.
    times = draw(st.lists(st.integers(0, 4000), max_size=20, unique=True))
    ballots = [
        Ballot(
            draw(st.sampled_from(people)),
            draw(st.sampled_from(list(Choice))),
            f"$e{index}",
            T0 + offset,
        )
        for index, offset in enumerate(times)
    ]
    now = T0 + draw(st.integers(0, 4200))
    return policy, roles, ballots, now


def eligible(voter: str, roles: Mapping[str, Role | None], policy: Policy) -> bool:
    role = roles.get(voter)
    return (
        voter != BOT
        and (voter != REQUESTER or policy.allow_self_approval)
        and role is not None
        and role >= policy.voters
    )


def latest_in_time(ballots: list[Ballot]) -> dict[str, Ballot]:
    latest: dict[str, Ballot] = {}
    for ballot in ballots:
        if ballot.cast_at <= EXPIRES and (
            ballot.voter not in latest or ballot.cast_at > latest[ballot.voter].cast_at
        ):
            latest[ballot.voter] = ballot
    return latest


def run(
    policy: Policy, roles: Mapping[str, Role | None], ballots: list[Ballot], now: float
) -> Tally:
    return decide(
        requester=REQUESTER,
        bot=BOT,
        ballots=ballots,
        roles=roles,
        policy=policy,
        expires_at=EXPIRES,
        now=now,
    )


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_approved_means_enough_distinct_eligible_approvers(
    scenario: tuple[Policy, dict[str, Role | None], list[Ballot], float],
) -> None:
    policy, roles, ballots, now = scenario
    tally = run(policy, roles, ballots, now)
    expected = {
        voter
        for voter, ballot in latest_in_time(ballots).items()
        if ballot.choice is Choice.APPROVE and eligible(voter, roles, policy)
    }
    assert len(tally.approvers) == len(set(tally.approvers))
    assert set(tally.approvers) == expected
    assert BOT not in tally.approvers
    assert BOT not in tally.rejecters
    assert tally.needed == max(0, policy.required - len(expected))
    if tally.state is State.APPROVED:
        assert len(expected) >= policy.required
        assert not tally.withdrawn
        if policy.veto:
            assert tally.rejecters == ()


@settings(max_examples=400, deadline=None)
@given(scenarios(), st.data())
def test_with_veto_a_later_eligible_reject_never_leaves_it_approved(
    scenario: tuple[Policy, dict[str, Role | None], list[Ballot], float],
    data: st.DataObject,
) -> None:
    policy, roles, ballots, now = scenario
    policy = dataclasses.replace(policy, veto=True)
    # Make the random scenario approved: whoever rejects last changes their mind,
    # and enough fresh admins approve. All before the deadline, after everything else.
    changed = [v for v, b in latest_in_time(ballots).items() if b.choice is Choice.REJECT]
    fresh = [f"@approver{n}:test" for n in range(policy.required)]
    roles = {**roles, **dict.fromkeys(fresh, Role.ADMIN)}
    start = max([b.cast_at for b in ballots if b.cast_at <= EXPIRES], default=T0)
    step = (EXPIRES - start) / (len(changed) + len(fresh) + 2)
    extra = [
        Ballot(voter, Choice.APPROVE, f"$extra{n}", start + (n + 1) * step)
        for n, voter in enumerate([*changed, *fresh])
    ]
    ballots = [*ballots, *extra]
    assert run(policy, roles, ballots, now).state is State.APPROVED

    candidates = [voter for voter in roles if eligible(voter, roles, policy)]
    if not policy.allow_self_approval:
        candidates.append(REQUESTER)  # their reject withdraws the proposal
    rejecter = data.draw(st.sampled_from(candidates))
    veto = Ballot(rejecter, Choice.REJECT, "$veto", start + (len(extra) + 1) * step)
    assert run(policy, roles, [*ballots, veto], now).state is State.REJECTED


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_the_order_ballots_arrive_in_does_not_matter(
    scenario: tuple[Policy, dict[str, Role | None], list[Ballot], float], rnd: Random
) -> None:
    policy, roles, ballots, now = scenario
    shuffled = list(ballots)
    rnd.shuffle(shuffled)
    assert run(policy, roles, shuffled, now) == run(policy, roles, ballots, now)


# -- policies from the config -------------------------------------------------------------


def test_default_policy() -> None:
    approvals = parse_config({}).approvals
    for name in POLICY_NAMES:
        assert approvals.policy(name) == Policy(
            required=2, voters=Role.OPERATOR, veto=True, allow_self_approval=False, timeout=3600
        )


def test_global_settings_apply_to_every_action() -> None:
    approvals = parse_config(
        {
            "approvals": {
                "required": 3,
                "voters": "admin",
                "veto": False,
                "allow_self_approval": True,
                "timeout": "2h",
            }
        }
    ).approvals
    assert approvals.policy("rollback") == Policy(3, Role.ADMIN, False, True, 7200)


def test_per_action_overrides() -> None:
    approvals = parse_config(
        {
            "approvals": {
                "required": 3,
                "voters": "admin",
                "veto": False,
                "allow_self_approval": True,
                "timeout": "2h",
                "policies": {
                    "rollback": {"required": 1},
                    # Each override falsy on purpose: False must win over a True default.
                    "undeploy": {
                        "voters": "viewer",
                        "veto": True,
                        "allow_self_approval": False,
                        "timeout": "10m",
                    },
                    "major_upgrade": {"veto": False, "required": 4},
                },
            }
        }
    ).approvals
    assert approvals.policy("rollback") == Policy(1, Role.ADMIN, False, True, 7200)
    assert approvals.policy("undeploy") == Policy(3, Role.VIEWER, True, False, 600)
    assert approvals.policy("major_upgrade") == Policy(4, Role.ADMIN, False, True, 7200)
    assert approvals.policy("upgrade") == Policy(3, Role.ADMIN, False, True, 7200)


def test_an_override_of_false_beats_a_default_of_true() -> None:
    approvals = parse_config(
        {"approvals": {"policies": {"upgrade": {"veto": False}}, "allow_self_approval": True}}
    ).approvals
    assert approvals.policy("upgrade").veto is False
    assert approvals.policy("upgrade").allow_self_approval is True
    assert approvals.policy("rollback").veto is True


def test_unknown_policy_names_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"approvals": {"policies": {"destroy": {"required": 1}, "upgrade": {}}}})
    assert "approvals.policies: unknown action destroy; known: " in str(caught.value)
    assert ", ".join(sorted(POLICY_NAMES)) in str(caught.value)


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"required": 0}, "approvals.policies.upgrade.required"),
        ({"voters": "owner"}, "approvals.policies.upgrade.voters"),
        ({"timeout": "soon"}, "approvals.policies.upgrade.timeout"),
        ({"quorum": 2}, "approvals.policies.upgrade.quorum: unknown key"),
    ],
)
def test_invalid_overrides_are_refused(override: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"approvals": {"policies": {"upgrade": override}}})
    assert problem in str(caught.value)
