"""How a proposal reads in the room: its plan, the tally, who still has to vote and
what became of it. Pure text; bot/core/gate.py posts and edits it."""

from __future__ import annotations

from bot.core.approvals import AUTO_PATCH, Policy, State, Tally
from bot.core.records import ProposalRow
from bot.core.roles import Role
from bot.errors import UserError
from bot.fmt import code, utc_time


def people(users: tuple[str, ...] | list[str]) -> str:
    return ", ".join(users) if users else "nobody"


def start_failure(exc: Exception) -> str:
    """What to tell the room about a failed start: a UserError's text, else its kind."""
    return str(exc) if isinstance(exc, UserError) else f"an unexpected {type(exc).__name__}"


def stopped_note(row: ProposalRow, tally: Tally) -> tuple[str, list[str]]:
    """The note (and whom it pings) when a held proposal (a delay, a window, a queued
    auto-patch) is rejected before it ran: an edit of the proposal notifies nobody."""
    what = "auto-patch" if row.policy == AUTO_PATCH else "proposal"
    text = (
        f"🛑 The {what} `{row.id}` ({code(row.text)}) is cancelled by "
        f"{people(tally.rejecters)} before it ran at {utc_time(row.run_at or 0)}; "
        "nothing was done."
    )
    return text, [u for u in (row.requester, *tally.rejecters) if u.startswith("@")]


def render(
    row: ProposalRow,
    policy: Policy,
    tally: Tally,
    voters: list[str] | None,
    job_id: int | None = None,
    stale_because: str = "",
    *,
    prefix: str,
) -> str:
    p = prefix
    summary = row.plan.summary
    who = f"{policy.voters.label}s or above" if policy.voters < Role.ADMIN else "admins"
    not_you = "" if policy.allow_self_approval else f", not {row.requester}"
    lines = [
        f"🗳 **Proposal `{row.id}`**: {code(row.text)}, asked by {row.requester}",
        "",
        summary,
        "",
    ]
    if row.reason:
        lines[1:1] = [f"Reason: {code(row.reason)}"]
    state = tally.state
    if state is State.OPEN and row.run_at is not None and row.policy == AUTO_PATCH:
        lines.append(
            f"🕑 **Scheduled auto-patch**, held to the server's maintenance window: it runs "
            f"at **{utc_time(row.run_at)}**. An eligible 👎 on this message (or "
            f"`{p}reject {row.id}`) until then cancels it."
        )
        if voters:
            lines.append(f"Who may cancel it: {people(voters)}")
    elif state is State.OPEN and row.run_at is not None:
        lines.append(
            f"⏳ **Approved** by {people(tally.approvers)}; runs at {utc_time(row.run_at)} "
            f"(the {row.policy} policy's delay or the server's maintenance window). "
            "An eligible 👎 until then stops it."
        )
    elif state is State.OPEN:
        lines.append(
            f"Needs **{policy.required}** approval{'s' if policy.required > 1 else ''} "
            f"from {who}{not_you}, by {utc_time(row.expires_at)}. "
            f"React 👍 to approve or 👎 to reject"
            + (" (one 👎 rejects)" if policy.veto else "")
            + f", or type `{p}approve {row.id}` / `{p}reject {row.id}`."
        )
        if voters is not None:
            lines.append(f"Voters: {people(voters)}")
    elif state is State.DONE:
        lines.append(
            f"✅ **Approved** by {people(tally.approvers)}: running as job "
            f"#{job_id}, reported in this thread."
        )
    elif state is State.REJECTED:
        why = "withdrawn by the requester" if tally.withdrawn else (f"by {people(tally.rejecters)}")
        lines.append(f"❌ **Rejected** ({why}). Nothing was done.")
    elif state is State.EXPIRED:
        lines.append(
            f"⌛ **Expired** at {utc_time(row.expires_at)} with "
            f"{len(tally.approvers)} of {policy.required} approvals. Nothing was done."
        )
    elif state is State.STALE:
        lines.append(
            f"♻ **Stale**: {stale_because}. Nothing was done; ask again with `{row.text}`."
        )
    elif state is State.FAILED:
        lines.append(
            f"⚠ **Approved, but it could not be started** ({stale_because}). Nothing ran, "
            f"and it will not run later; ask again with `{row.text}` when that is fixed."
        )
    lines.append("")
    lines.append(
        f"Approved by: {people(tally.approvers)} · Rejected by: "
        f"{people(tally.rejecters)}"
        + (f" · Still needed: {tally.needed}" if state is State.OPEN and policy.required else "")
    )
    if tally.ignored:
        lines.append("Not counted: " + ", ".join(f"{u} ({why})" for u, why in tally.ignored))
    return "\n".join(lines)


def summary_line(row: ProposalRow, tally: Tally, waiting: list[str]) -> str:
    """One open proposal for `!proposals`: its plan, who voted, what is missing."""
    lines = [
        f"- `{row.id}` {code(row.text)} by {row.requester} ({row.policy}), expires "
        f"{utc_time(row.expires_at)}",
        f"  {row.plan.summary.splitlines()[0] if row.plan.summary else ''}",
        f"  approved by {people(tally.approvers)}; rejected by {people(tally.rejecters)}; "
        + (
            f"runs at {utc_time(row.run_at)}"
            if row.run_at is not None
            else f"{tally.needed} more needed (not voted yet: {people(waiting)})"
        ),
    ]
    if row.reason:
        lines.insert(1, f"  reason: {code(row.reason)}")
    return "\n".join(lines)
