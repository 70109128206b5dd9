"""What an upgrade check finds and what an upgrade would do: data and pure logic.

The check compares, for every deployed app, the version it runs (its label,
read as `Apps.deployed` does) with the release tags of its recipe, ordered by
the recipe semver part: the newest step is a patch, a minor or a major one (a
major step may break the app). It collects the release notes of every version
in between, and finds image drift: a service pinned to `name:tag@sha256:...`
whose tag now points to another digest in its registry.

The decisions (steps, kinds, drift, what is new since the last report, what may
run without a vote) are pure functions here; `service.py` does the I/O and
`render.py` the messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bot.labels import autoupdate_label
from bot.ops.abra import AppEnv
from bot.ops.recipes import StepKind, Version, parse_version, step_kind
from bot.ops.swarm import ServiceInfo

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Problem:
    """Something the check could not find out. `key` names it stably (not the error
    text, which may vary), so a lasting problem is reported once."""

    key: str
    text: str


@dataclass(frozen=True)
class Drift:
    service: str  # short name
    image: str  # "name:tag"
    running: str  # the digest the service is pinned to
    current: str  # the digest the tag points to now


@dataclass(frozen=True)
class AppCheck:
    domain: str
    server: str
    recipe: str
    deployed: str | None
    newest: str | None = None  # the newest release, when newer than the deployed one
    kind: StepKind | None = None  # of the step deployed → newest
    notes: tuple[tuple[str, str], ...] = ()  # (version, text), oldest first
    autoupdate: bool = False
    drift: tuple[Drift, ...] = ()
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class CheckReport:
    apps: tuple[AppCheck, ...]
    problems: tuple[Problem, ...] = ()  # not tied to one app: servers, recipes, inventory

    def all_problems(self) -> list[Problem]:
        """Every problem once (several apps can share a recipe or an image)."""
        seen: dict[str, Problem] = {}
        for problem in [*self.problems, *(p for app in self.apps for p in app.problems)]:
            seen.setdefault(problem.key, problem)
        return list(seen.values())


@dataclass(frozen=True)
class UpgradePlan:
    env: AppEnv
    current: Version
    target: Version
    kind: StepKind
    steps: tuple[tuple[str, StepKind], ...]  # every release after current up to target
    notes: tuple[tuple[str, str], ...]
    autoupdate: bool
    backup: str  # what happens about a backup first, one line
    will_back_up: bool = False
    changes: str = ""  # the deploy's plan (Apps.plan), when it was asked for

    @property
    def fingerprint(self) -> str:
        # A vote is for this move: if the app or the target changed, it is stale.
        return f"{self.current.text}→{self.target.text}"


# ----------------------------------------------------------------------------- pure logic


def is_major_step(current: str | None, target: str | None) -> bool:
    """Whether moving from `current` to `target` grows the recipe-semver major part:
    such a move needs the major_upgrade quorum and a backup first, whichever command
    (`!upgrade`, `!deploy`, `!rollback`) asks for it. Unversioned ends are not."""
    old, new = parse_version(current or ""), parse_version(target or "")
    return old is not None and new is not None and step_kind(old, new) == "major"


def newest_release(current: Version, versions: Iterable[Version]) -> Version | None:
    """The newest release above `current` by recipe semver, or None if it runs the newest."""
    newer = [v for v in versions if v.key > current.key]
    return max(newer, key=lambda v: (v.key, v.text)) if newer else None


def steps_between(
    current: Version, target: Version, versions: Iterable[Version]
) -> list[tuple[Version, StepKind]]:
    """Each release after `current` up to `target` (inclusive), oldest first, with the
    kind of the step from the one before it. One release per semver (the last tag)."""
    by_key: dict[tuple[int, int, int], Version] = {}
    for version in sorted(versions, key=lambda v: (v.key, v.text)):
        if current.key < version.key <= target.key:
            by_key[version.key] = version
    by_key[target.key] = target
    steps: list[tuple[Version, StepKind]] = []
    previous = current
    for key in sorted(by_key):
        steps.append((by_key[key], step_kind(previous, by_key[key])))
        previous = by_key[key]
    return steps


def split_pinned(image: str) -> tuple[str, str] | None:
    """("name:tag", "sha256:...") for an image pinned by tag and digest; None when it
    has no digest (nothing to compare) or no tag (nothing to ask the registry)."""
    ref, at, digest = image.partition("@")
    if not at or not _DIGEST.fullmatch(digest):
        return None
    slash, colon = ref.rfind("/"), ref.rfind(":")
    if colon <= slash or colon == len(ref) - 1:
        return None
    return ref, digest


def drift_of(service: str, image: str, current: str) -> Drift | None:
    """Drift when the service's pinned digest is not where its tag points now."""
    pinned = split_pinned(image)
    if pinned is None or pinned[1] == current:
        return None
    return Drift(service, pinned[0], pinned[1], current)


def opted_in(stack: str, services: Iterable[ServiceInfo]) -> bool:
    """The stack is labelled coop-cloud.<stack>.autoupdate=true (on any service)."""
    return any(s.labels.get(autoupdate_label(stack)) == "true" for s in services)


def facts(report: CheckReport) -> dict[str, str]:
    """What a report says, as stable keys (value: a short description)."""
    out: dict[str, str] = {}
    for app in report.apps:
        if app.newest:
            out[f"upgrade:{app.domain}:{app.deployed}:{app.newest}"] = app.domain
        for drift in app.drift:
            out[f"drift:{app.domain}:{drift.service}:{drift.current}"] = app.domain
    for problem in report.all_problems():
        out[f"problem:{problem.key}"] = problem.text
    return out


def news(previous: Iterable[str], report: CheckReport) -> set[str]:
    """The facts of `report` that the last report did not show."""
    return set(facts(report)) - set(previous)


def auto_patches(report: CheckReport, attempted: Iterable[str]) -> list[tuple[str, str]]:
    """(domain, version) of the opted-in apps whose newest step is a patch, each
    target tried once: a failed auto-patch is not retried every day."""
    tried = set(attempted)
    return [
        (app.domain, app.newest)
        for app in report.apps
        if app.newest
        and app.kind == "patch"
        and app.autoupdate
        and f"{app.domain}@{app.newest}" not in tried
    ]


def auto_refusal(plan: UpgradePlan, auto_patch: bool) -> str | None:
    """Why the scheduler may not run this upgrade without a vote, or None if it may."""
    if not auto_patch:
        return "upgrades.auto_patch is off"
    if not plan.autoupdate:
        stack = plan.env.stack_name
        return f"{plan.env.domain} is not labelled `{autoupdate_label(stack)}=true`"
    if plan.kind != "patch":
        return (
            f"{plan.current.text} → {plan.target.text} is a {plan.kind} step; "
            "only patch steps run without a vote"
        )
    return None
