"""Scheduled auto-patches and maintenance windows.

An auto-patch the scheduler finds outside its server's window is not run then: it is
posted as a proposal that is approved already and held to the window's start (the
gate's `run_at`; policy `auto_patch`: no approval needed, any eligible 👎 vetoes).
So the room hears which app, which version and when, and a 👎 or `!reject` until
then cancels it exactly as it cancels a voted upgrade held by its window. Once
cancelled, the scheduler does not queue the same auto-patch again: a member asks for
it with `!upgrade`, which is put to a vote.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.approvals import AUTO_PATCH, Choice, State
from bot.core.store import Store
from bot.core.windows import Windows
from bot.errors import UserError
from bot.fmt import utc_time


@dataclass(frozen=True)
class Hold:
    run_at: float  # the window's next start
    note: str  # a line for the proposal: which window, of which server


def _same(store: Store, state: State, asked: str) -> list[str]:
    return [r.id for r in store.proposals(state) if r.policy == AUTO_PATCH and r.text == asked]


async def hold(
    windows: Windows | None, store: Store, domain: str, version: str, prefix: str
) -> Hold | None:
    """For the scheduler's `upgrade <domain> <version>`: None to run it now (inside
    the window, or no window), else how to hold it. Refused (UserError, nothing is
    posted) when the same auto-patch is held already or a member cancelled it."""
    asked = f"{prefix}upgrade {domain} {version}"
    for proposal_id in _same(store, State.OPEN, asked):
        row = store.proposal(proposal_id)
        when = utc_time(row.run_at) if row is not None and row.run_at else "its window"
        raise UserError(
            f"Not upgraded now: the auto-patch {asked} is held already (proposal "
            f"`{proposal_id}`, runs at {when})."
        )
    for proposal_id in _same(store, State.REJECTED, asked):
        by = sorted({v.voter for v in store.votes(proposal_id) if v.choice == Choice.REJECT})
        raise UserError(
            f"Not upgraded automatically: {', '.join(by) or 'a member'} cancelled this "
            f"auto-patch (proposal `{proposal_id}`). `{asked}` asks for a vote."
        )
    outside = await windows.outside(domain) if windows is not None else None
    if windows is None or outside is None:
        return None
    server, opens = outside
    return Hold(opens, f"Outside {windows.describe(server, opens)}: held until then.")
