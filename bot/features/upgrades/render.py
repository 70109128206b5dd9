"""The upgrade check and an upgrade plan as messages for the room."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bot.features.upgrades.plan import CheckReport, UpgradePlan
from bot.fmt import code, code_block
from bot.ops.recipes import StepKind

NOTE_LIMIT = 3000  # characters of one release note shown in a proposal
NOTES_LIMIT = 12000  # characters of release notes in one proposal (Matrix events are small)
EXCERPT = 90  # characters of notes in the table


def excerpt(notes: Sequence[tuple[str, str]], limit: int = EXCERPT) -> str:
    """The first line of each release's notes, newest first, cut to `limit`."""
    parts = []
    for version, text in reversed(notes):
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if first:
            parts.append(f"{version}: {first}")
    joined = " · ".join(parts)
    joined = joined if len(joined) <= limit else joined[: limit - 1].rstrip() + "…"
    # Release notes are outside text: a code span (no link, image or mention rides
    # along), its pipes escaped for the table (GFM drops the backslash in the cell).
    return code(joined).replace("|", "\\|") if joined else ""


def kind_label(kind: StepKind | None) -> str:
    return "⚠ **major** (breaking)" if kind == "major" else (kind or "")


def render_report(report: CheckReport, prefix: str = "!", new: Iterable[str] = ()) -> str:
    """The check as one message: a table of upgrades, then drift and problems.
    Rows and lines whose fact is in `new` are marked 🆕."""
    fresh = set(new)

    def mark(key: str) -> str:
        return "🆕 " if key in fresh else ""

    upgradable = [a for a in report.apps if a.newest]
    drifting = [a for a in report.apps if a.drift]
    lines = [
        f"**Upgrade check**: {len(report.apps)} deployed app(s), "
        f"{len(upgradable)} can be upgraded, {len(drifting)} with image drift."
    ]
    if upgradable:
        lines += ["", "| app | deployed → newest | kind | notes |", "|---|---|---|---|"]
        for app in sorted(upgradable, key=lambda a: a.domain):
            key = f"upgrade:{app.domain}:{app.deployed}:{app.newest}"
            lines.append(
                f"| {mark(key)}{app.domain} | {app.deployed} → **{app.newest}** | "
                f"{kind_label(app.kind)} | {excerpt(app.notes)} |"
            )
    extra = []
    for app in sorted(drifting, key=lambda a: a.domain):
        for d in app.drift:
            key = f"drift:{app.domain}:{d.service}:{d.current}"
            extra.append(
                f"- {mark(key)}🔁 Image drift in {app.domain} ({d.service}): `{d.image}` "
                f"runs {_short(d.running)}, the tag now points to {_short(d.current)}; "
                f"`{prefix}deploy {app.domain}` pins the new one."
            )
    for problem in report.all_problems():
        extra.append(f"- {mark('problem:' + problem.key)}⚠ {problem.text}")
    if extra:
        lines += ["", *extra]
    if upgradable:
        lines += ["", f"`{prefix}upgrade <app> [version]` proposes an upgrade."]
    elif report.apps and not drifting:
        lines += ["", "Every deployed app runs its recipe's newest release."]
    return "\n".join(lines)


def _short(digest: str) -> str:
    return digest[:19]  # "sha256:" and 12 hex digits, as docker shows ids


def plan_summary(plan: UpgradePlan) -> str:
    """The proposal: the move, every step, what will happen, the full release notes."""
    env = plan.env
    breaking = " (⚠ **major**: may break the app; read the notes)" if plan.kind == "major" else ""
    lines = [
        f"Upgrade **{env.domain}** on {env.server}: {plan.current.text} → "
        f"**{plan.target.text}**, a {plan.kind} step{breaking}.",
        "",
        "Steps: " + " → ".join([plan.current.text, *(f"{v} ({k})" for v, k in plan.steps)]),
        "",
        "Then:",
        f"1. {plan.backup}",
        f"2. Deploy {plan.target.text} and wait until it runs.",
        "3. If it fails: roll the code back, and name the snapshot that restores the data.",
    ]
    if plan.changes:  # the very text the deploy shows (bot/features/apps/changes.py)
        lines += ["", plan.changes]
    if plan.notes:
        lines += ["", "Release notes:"]
        used = 0
        for version, text in plan.notes:
            body = text.strip() or "(empty)"
            if len(body) > NOTE_LIMIT:
                body = body[:NOTE_LIMIT].rstrip() + f"\n… (cut; the rest is in release/{version})"
            if used + len(body) > NOTES_LIMIT:
                last = plan.notes[-1][0]
                more = version if version == last else f"{version} to {last}"
                lines.append(f"… the notes of {more} are in the recipe's release/ folder.")
                break
            used += len(body)
            lines += [f"**{version}**", code_block(body)]
    else:
        lines += ["", "No release notes for these versions."]
    return "\n".join(lines)


def restore_hint(domain: str, snapshot: str | None, taken_now: bool, prefix: str = "!") -> str:
    if snapshot is None:
        return f"💾 No snapshot of {domain} exists, so its data cannot be restored from a backup."
    when = "taken before this upgrade" if taken_now else "its newest"
    return (
        f"💾 If the failed upgrade changed the data (a migration), snapshot `{snapshot}` "
        f"({when}) restores it: `{prefix}restore {domain} {snapshot}` (it needs a vote)."
    )
