"""Upgrade checks and voted upgrades (issue 6).

The check compares, for every deployed app, the version it runs (its label,
read as `Apps.deployed` does) with the release tags of its recipe, ordered by
the recipe semver part: the newest step is a patch, a minor or a major one (a
major step may break the app). It collects the release notes of every version
in between, and finds image drift: a service pinned to `name:tag@sha256:...`
whose tag now points to another digest in its registry. Nothing one app, recipe
or registry does stops the check of the others: it is reported instead.

The decisions (steps, kinds, notes, drift, what is new since the last report,
what may run without a vote) are pure functions below; `Upgrades` does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from bot.config import Config
from bot.core.store import Store
from bot.errors import UserError
from bot.features.apps import Apps, Deployed, deployed_from
from bot.features.backups import Backups
from bot.ops.abra import AppEnv
from bot.ops.recipes import StepKind, Version, parse_version, step_kind
from bot.ops.swarm import ServiceInfo
from bot.ports import ProgressSink

log = logging.getLogger(__name__)

T = TypeVar("T")

REPORTED_KEY = "upgrades.reported"  # store kv: the facts the last scheduled report showed
AUTO_KEY = "upgrades.auto_attempted"  # store kv: "<domain>@<version>" auto-patches tried
NOTE_LIMIT = 3000  # characters of one release note shown in a proposal
NOTES_LIMIT = 12000  # characters of release notes in one proposal (Matrix events are small)
EXCERPT = 90  # characters of notes in the table
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def autoupdate_label(stack: str) -> str:
    return f"coop-cloud.{stack}.autoupdate"


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

    @property
    def fingerprint(self) -> str:
        # A vote is for this move: if the app or the target changed, it is stale.
        return f"{self.current.text}→{self.target.text}"


# ----------------------------------------------------------------------------- pure logic


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


def excerpt(notes: Sequence[tuple[str, str]], limit: int = EXCERPT) -> str:
    """The first line of each release's notes, newest first, cut to `limit`."""
    parts = []
    for version, text in reversed(notes):
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if first:
            parts.append(f"{version}: {first}")
    joined = " · ".join(parts).replace("|", "\\|")
    return joined if len(joined) <= limit else joined[: limit - 1].rstrip() + "…"


def kind_label(kind: StepKind | None) -> str:
    return "⚠ **major** (breaking)" if kind == "major" else (kind or "")


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
            lines += [f"**{version}**", *(f"> {line}" for line in body.splitlines())]
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


# ----------------------------------------------------------------------------- I/O


class _Below:
    """A phase's progress shown under the lines of the phases before it, so the whole
    upgrade (backup, deploy, result) stays one message: Apps.deploy renders its own
    text, and this puts it in place. Everything is forwarded to the job's progress."""

    def __init__(self, outer: ProgressSink, above: str) -> None:
        self._outer = outer
        self._above = above

    @property
    def event_id(self) -> str | None:
        return self._outer.event_id

    async def update(self, markdown: str) -> None:
        await self._outer.update(f"{self._above}\n\n{markdown}")

    async def finish(self, markdown: str) -> None:
        await self.update(markdown)  # the upgrade, not a phase, ends the message

    async def detail(self, markdown: str) -> str:
        return await self._outer.detail(markdown)

    async def settle(self) -> None:
        await self._outer.settle()


class _Once(Generic[T]):
    """One task per key for one check: a recipe is fetched once, an image tag is
    asked once, however many apps share them."""

    def __init__(self) -> None:
        self.tasks: dict[Hashable, asyncio.Task[T]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        task = self.tasks.get(key)
        if task is None:

            async def run() -> T:
                return await make()

            task = self.tasks[key] = asyncio.create_task(run(), name=f"upgrades-{key}")
        # Shielded: one app's check being cancelled must not cancel the others' answer.
        return await asyncio.shield(task)

    def cancel(self) -> None:
        for task in self.tasks.values():
            task.cancel()


class Upgrades:
    def __init__(self, config: Config, apps: Apps, store: Store, backups: Backups | None) -> None:
        self.config = config
        self.apps = apps
        self.store = store
        self.backups = backups

    # -- checking --------------------------------------------------------------------
    async def check(self) -> CheckReport:
        """Check every deployed app, `upgrades.concurrency` at a time."""
        envs, inventory_problems = await self.apps.inventory()
        problems = [Problem(f"inventory:{p}", p) for p in inventory_problems]
        servers = sorted({env.server for env in envs})
        listings = await asyncio.gather(
            *(self.apps.swarm(server).stacks() for server in servers), return_exceptions=True
        )
        stacks: dict[str, dict[str, list[ServiceInfo]]] = {}
        for server, listing in zip(servers, listings, strict=True):
            if isinstance(listing, Exception):
                problems.append(Problem(f"server:{server}", f"server {server}: {listing}"))
            elif isinstance(listing, BaseException):
                raise listing
            else:
                stacks[server] = listing
        deployed = [
            (env, deployed_from(env.stack_name, stacks[env.server][env.stack_name]))
            for env in envs
            if env.stack_name in stacks.get(env.server, {})
        ]
        limit = asyncio.Semaphore(self.config.upgrades.concurrency)
        fetches: _Once[str | None] = _Once()
        digests: _Once[str] = _Once()

        async def one(env: AppEnv, current: Deployed) -> AppCheck:
            async with limit:
                try:
                    return await self._check_app(env, current, fetches, digests)
                except UserError as exc:
                    problem = Problem(f"app:{env.domain}", f"{env.domain}: {exc}")
                except Exception:
                    log.exception("upgrade check of %s failed", env.domain)
                    problem = Problem(
                        f"app:{env.domain}",
                        f"{env.domain}: the check failed unexpectedly (the bot's log has why)",
                    )
                return AppCheck(
                    env.domain, env.server, env.recipe, current.version, problems=(problem,)
                )

        try:
            checks = await asyncio.gather(*(one(env, current) for env, current in deployed))
        finally:
            fetches.cancel()
            digests.cancel()
        for recipe, task in sorted(fetches.tasks.items(), key=lambda kv: str(kv[0])):
            error = task.result()
            if error:
                problems.append(Problem(f"fetch:{recipe}", f"recipe {recipe}: {error}"))
        return CheckReport(tuple(checks), tuple(problems))

    async def _check_app(
        self, env: AppEnv, current: Deployed, fetches: _Once[str | None], digests: _Once[str]
    ) -> AppCheck:
        if self.config.upgrades.fetch_recipes:
            await fetches.get(env.recipe, lambda: self._fetch(env.recipe))
        problems: list[Problem] = []
        release = None if current.chaos else parse_version(current.version or "")
        newest: Version | None = None
        notes: list[tuple[str, str]] = []
        if release is None:
            what = f"runs {current.version}" if current.version else "has no version label"
            why = " (a chaos deploy of an untagged commit)" if current.chaos else ""
            problems.append(
                Problem(
                    f"unversioned:{env.domain}:{current.version}",
                    f"{env.domain} {what}{why}, so it is not compared with the releases",
                )
            )
        else:
            newest, notes = await asyncio.to_thread(self._read_recipe, env.recipe, release)
        drift = []
        swarm = self.apps.swarm(env.server)
        for service in current.services:
            pinned = split_pinned(service.image)
            if pinned is None:
                continue
            ref = pinned[0]
            try:
                now = await digests.get((env.server, ref), partial(swarm.registry_digest, ref))
            except UserError as exc:
                problems.append(Problem(f"registry:{env.server}:{ref}", str(exc)))
                continue
            found = drift_of(service.short_name, service.image, now)
            if found is not None:
                drift.append(found)
        return AppCheck(
            env.domain,
            env.server,
            env.recipe,
            current.version,
            newest=newest.text if newest else None,
            kind=step_kind(release, newest) if newest and release else None,
            notes=tuple(notes),
            autoupdate=opted_in(env.stack_name, current.services),
            drift=tuple(drift),
            problems=tuple(problems),
        )

    async def _fetch(self, recipe: str) -> str | None:
        """git fetch the recipe; the error text if that failed (offline is not fatal)."""

        def fetch() -> None:
            repo = self.apps.recipe(recipe)
            try:
                repo.fetch()
            finally:
                repo.close()

        try:
            await asyncio.to_thread(fetch)
        except UserError as exc:
            return str(exc).removeprefix(f"recipe {recipe}: ")
        except Exception as exc:  # an odd repo must not stop the check of the others
            log.exception("git fetch of recipe %s failed", recipe)
            return f"git fetch failed unexpectedly: {exc}"
        return None

    def _read_recipe(
        self, recipe: str, current: Version
    ) -> tuple[Version | None, list[tuple[str, str]]]:
        """The newest release above `current` and the notes up to it (in a thread)."""
        repo = self.apps.recipe(recipe)
        try:
            newest = newest_release(current, repo.versions())
            notes = repo.release_notes(current.text, newest.text) if newest else []
            return newest, notes
        finally:
            repo.close()  # stops GitPython's cat-file helpers

    # -- reporting -----------------------------------------------------------------------
    def remember(self, report: CheckReport) -> set[str]:
        """Record what `report` says; return what the last scheduled report did not.
        What went away is forgotten, so it is news again if it comes back."""
        fresh = news(self.store.get_json(REPORTED_KEY) or [], report)
        self.store.put_json(REPORTED_KEY, sorted(facts(report)))
        return fresh

    def auto_patches(self, report: CheckReport) -> list[tuple[str, str]]:
        """The auto-patches to start now; each is recorded as tried."""
        tried = list(self.store.get_json(AUTO_KEY) or [])
        todo = auto_patches(report, tried)
        tried += [f"{domain}@{version}" for domain, version in todo]
        self.store.put_json(AUTO_KEY, tried[-500:])
        return todo

    # -- upgrading -------------------------------------------------------------------------
    async def prepare(self, env: AppEnv, version: str | None) -> UpgradePlan:
        """What `!upgrade` would do; UserError for anything that is not an upgrade."""
        current = await self.apps.deployed(env)
        if not current.exists:
            raise UserError(f"{env.domain} is not deployed; `!deploy {env.domain}` deploys it.")
        release = None if current.chaos else parse_version(current.version or "")
        if release is None:
            raise UserError(
                f"{env.domain} runs {current.version or 'an unknown version'}, which is not a "
                f"release; `!deploy {env.domain} <version>` deploys one."
            )

        def read() -> tuple[list[Version], Version, list[tuple[str, str]]]:
            repo = self.apps.recipe(env.recipe)
            try:
                versions = repo.versions()
                if version is not None:
                    target = repo.version(version)  # unknown versions stop here
                else:
                    newest = newest_release(release, versions)
                    if newest is None:
                        raise UserError(
                            f"{env.domain} already runs {release.text}, the newest release of "
                            f"{env.recipe}."
                        )
                    target = newest
                kind = step_kind(release, target)
                if kind == "same":
                    raise UserError(
                        f"{env.domain} already runs {target.text}; `!deploy {env.domain}` "
                        "redeploys it."
                    )
                if kind == "downgrade":
                    raise UserError(
                        f"{target.text} is older than {release.text}, which {env.domain} runs: "
                        f"that is not an upgrade. `!rollback {env.domain} {target.text}` "
                        "goes back (with a vote)."
                    )
                return versions, target, repo.release_notes(release.text, target.text)
            finally:
                repo.close()

        versions, target, notes = await asyncio.to_thread(read)
        will_back_up, backup = await self._backup_intent(env)
        return UpgradePlan(
            env,
            release,
            target,
            step_kind(release, target),
            tuple((v.text, k) for v, k in steps_between(release, target, versions)),
            tuple(notes),
            opted_in(env.stack_name, current.services),
            backup,
            will_back_up,
        )

    async def _backup_intent(self, env: AppEnv) -> tuple[bool, str]:
        if not self.config.upgrades.backup_first:
            return False, "No backup first (upgrades.backup_first is off)."
        if self.backups is None:
            return False, "No backup first: no `backups:` section is configured."
        if not await self.backups.has_labels(env):
            return False, "No backup first: the app has no `backupbot.backup=true` label."
        return True, "Back up the app's data first; if that fails, stop there."

    async def upgrade(
        self,
        plan: UpgradePlan,
        progress: ProgressSink,
        actor: str,
        job_id: int | None = None,
        prefix: str = "!",
    ) -> str:
        """Back up (if planned), deploy and wait; on failure the code is rolled back
        (by Apps.deploy) and the room is told which snapshot restores the data.
        Returns the report; raises UserError with it when the upgrade failed."""
        env = plan.env
        lines = [
            f"⬆ **Upgrade {env.domain}**: {plan.current.text} → {plan.target.text}, "
            f"{kind_label(plan.kind)}"
        ]
        snapshot: str | None = None
        if plan.will_back_up and self.backups is not None:
            await progress.update("\n".join([*lines, "⏳ Backing up first"]))
            try:
                outcome = await self.backups.backup(
                    env, _Below(progress, "\n".join(lines)), actor, job_id
                )
            except UserError as exc:
                self.store.audit(actor, "upgrade.aborted", f"backup failed: {exc}", app=env.domain)
                raise UserError(
                    "\n".join(
                        [
                            *lines,
                            f"❌ The backup failed, so the upgrade did not start; {env.domain} "
                            f"still runs {plan.current.text}, nothing changed.",
                            "",
                            str(exc),
                        ]
                    )
                ) from None
            snapshot = outcome.snapshot_id
            lines.append(f"✅ Backed up first: snapshot `{snapshot[:8]}`")
        else:
            lines.append(f"ℹ {plan.backup}")
        above = "\n".join(lines)
        before = await self._spec_versions(env)  # None: unknown, so assume it changed
        try:
            report = await self.apps.deploy(
                env,
                _Below(progress, above),
                actor,
                plan.target.text,
                job_id=job_id,
                action="upgrade",
            )
        except UserError as exc:
            if before is not None and await self._spec_versions(env) == before:
                hint = f"Nothing was changed: {env.domain} still runs {plan.current.text}."
            else:
                hint = await self._restore_hint(env, snapshot, prefix)
            raise UserError(f"{above}\n\n{exc}\n\n{hint}") from None
        return f"{above}\n\n{report}"

    async def _spec_versions(self, env: AppEnv) -> dict[str, int] | None:
        """Each service's spec version (any deploy or rollback changes it); None if
        the swarm did not answer."""
        try:
            services = await self.apps.swarm(env.server).services(env.stack_name)
        except UserError:
            return None
        return {s.name: s.version for s in services}

    async def _restore_hint(self, env: AppEnv, snapshot: str | None, prefix: str) -> str:
        if snapshot is not None:
            return restore_hint(env.domain, snapshot[:8], True, prefix)
        if self.backups is None or not await self.backups.has_labels(env):
            return f"💾 {env.domain} has no backups, so its data cannot be restored from one."
        try:
            newest = await self.backups.newest_snapshot(env)
        except UserError as exc:
            return f"💾 Could not list the snapshots of {env.domain}: {exc}"
        return restore_hint(env.domain, newest[:8] if newest else None, False, prefix)
