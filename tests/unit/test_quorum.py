"""bot/core/quorum.py and bot/ops/matrix_rooms.py: whether a room's members can pass
the configured votes, as `coopbot check` warns."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import POLICY_NAMES, AccessConfig, ApprovalsConfig
from bot.core.chat import Membership
from bot.core.quorum import needed_voters, shortfalls, voter_roles
from bot.core.roles import Role
from bot.ops.matrix_rooms import members_of

BOT = "@bot:hs.test"
ROOM = "#ops:hs.test"


def joined(**levels: int) -> dict[str, Membership]:
    return {f"@{name}:hs.test": Membership(True, level) for name, level in levels.items()}


def warn(approvals: dict[str, Any], members: dict[str, Membership], **access: Any) -> list[str]:
    access_config = AccessConfig(**access)
    roles = voter_roles(access_config, members, BOT)
    return shortfalls(ApprovalsConfig(**approvals), access_config, roles, POLICY_NAMES, ROOM)


def test_needed_voters() -> None:
    assert needed_voters(2, allow_self_approval=False) == 3
    assert needed_voters(2, allow_self_approval=True) == 2


def test_two_operators_can_never_pass_the_default_votes() -> None:
    members = {**joined(ann=50, bea=100, cy=0), BOT: Membership(True, 100)}
    (line,) = warn({}, members)
    assert line.startswith(f"room {ROOM}: votes on {', '.join(sorted(POLICY_NAMES))} need 2")
    assert "from operators or above besides the requester, so 3 eligible members" in line
    assert "the room has 2 (@ann:hs.test, @bea:hs.test)" in line  # not the bot, not cy
    assert "power level 50" in line


@pytest.mark.parametrize(
    ("approvals", "members", "access"),
    [
        ({}, joined(ann=50, bea=50, cy=100), {}),  # three eligible: 2 besides the requester
        ({"allow_self_approval": True}, joined(ann=50, bea=50), {}),
        ({"required": 1}, joined(ann=50, bea=50), {}),
        ({}, joined(ann=50, bea=0, cy=0), {"operators": ["@bea:hs.test", "@cy:hs.test"]}),
        ({}, joined(ann=50, bea=10, cy=10), {"operator_power": 10}),
    ],
)
def test_enough_eligible_members_no_warning(
    approvals: dict[str, Any], members: dict[str, Membership], access: dict[str, Any]
) -> None:
    assert warn(approvals, members, **access) == []


def test_one_policy_short_is_named_alone() -> None:
    approvals = {"required": 1, "policies": {"restore": {"voters": "admin", "required": 2}}}
    (line,) = warn(approvals, joined(ann=100, bea=100, cy=50))
    assert "votes on restore need 2 approval(s) from admins or above" in line
    assert "so 3 eligible members, but the room has 2" in line
    assert "power level 100" in line


def test_a_member_who_left_does_not_count() -> None:
    members = {**joined(ann=50, bea=50), "@cy:hs.test": Membership(False, 50)}
    assert len(warn({}, members)) == 1


def test_members_from_room_state() -> None:
    state: list[dict[str, Any]] = [
        {"type": "m.room.create", "sender": "@ann:hs.test",
         "content": {"room_version": "12", "additional_creators": ["@bea:hs.test"]}},
        {"type": "m.room.power_levels", "sender": "@ann:hs.test",
         "content": {"users": {"@cy:hs.test": 50}, "users_default": 10}},
        *({"type": "m.room.member", "state_key": user, "sender": user,
           "content": {"membership": "join"}}
          for user in ("@ann:hs.test", "@bea:hs.test", "@cy:hs.test", "@dee:hs.test")),
        {"type": "m.room.member", "state_key": "@eve:hs.test", "sender": "@ann:hs.test",
         "content": {"membership": "invite"}},
    ]  # fmt: skip
    members = members_of(state)
    assert members == {
        "@ann:hs.test": Membership(True, 10, creator=True),
        "@bea:hs.test": Membership(True, 10, creator=True),
        "@cy:hs.test": Membership(True, 50),
        "@dee:hs.test": Membership(True, 10),
    }
    roles = voter_roles(AccessConfig(), members, BOT)
    assert roles["@ann:hs.test"] == Role.ADMIN  # a creator of a v12 room
    assert roles["@dee:hs.test"] == Role.VIEWER
    old_room = [{**state[0], "content": {"room_version": "10"}}, *state[1:]]
    assert not members_of(old_room)["@ann:hs.test"].creator  # creators are levels there
