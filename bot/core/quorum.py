"""Can the approval settings be met by who is in the room? (pure; for `coopbot check`)

With the defaults (2 approvals, no self-approval, operators vote) a co-op with two
operators can never pass a vote: the requester is one of them and may not approve
their own proposal. Nothing at run time would say so; a proposal would just expire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bot.config import AccessConfig, ApprovalsConfig
from bot.core.access import role_of
from bot.core.chat import Membership
from bot.core.roles import Role


def voter_roles(
    access: AccessConfig, members: Mapping[str, Membership], bot_id: str
) -> dict[str, Role]:
    """Each joined member's role (the bot itself never votes)."""
    return {
        user: role_of(access, user, membership)
        for user, membership in members.items()
        if membership.member and user != bot_id
    }


def needed_voters(required: int, allow_self_approval: bool) -> int:
    """Eligible members a proposal needs in the room: the approvals, and the requester
    besides them when one may not approve one's own request."""
    return required + (0 if allow_self_approval else 1)


def shortfalls(
    approvals: ApprovalsConfig,
    access: AccessConfig,
    roles: Mapping[str, Role],
    actions: Iterable[str],
    room: str,
) -> list[str]:
    """One warning per group of actions (same required, voters and self-approval)
    whose votes the room's members cannot pass; empty when every one can pass."""
    groups: dict[tuple[int, Role, bool], list[str]] = {}
    for action in sorted(actions):
        policy = approvals.policy(action)
        key = (policy.required, policy.voters, policy.allow_self_approval)
        groups.setdefault(key, []).append(action)
    power = {Role.VIEWER: 0, Role.OPERATOR: access.operator_power, Role.ADMIN: access.admin_power}
    lines = []
    for (required, voters, self_ok), names in sorted(groups.items()):
        eligible = sorted(user for user, role in roles.items() if role >= voters)
        need = needed_voters(required, self_ok)
        if len(eligible) >= need:
            continue
        besides = "" if self_ok else " besides the requester"
        lines.append(
            f"room {room}: votes on {', '.join(names)} need {required} approval(s) from "
            f"{voters.label}s or above{besides}, so {need} eligible members, but the room "
            f"has {len(eligible)} ({', '.join(eligible) or 'none'}): such a proposal can "
            f"never pass. Give more members power level {power[voters]} or more (or list "
            "them under access:), or lower approvals.required, allow self-approval or "
            "change voters (for one action under approvals.policies)."
        )
    return lines
