"""Upgrade checks and voted upgrades: the I/O around plan.py's pure decisions.

The check lists every server's stacks once, fetches each recipe once and asks
each registry once per image tag, however many apps share them. Nothing one
app, recipe or registry does stops the check of the others: it is reported
instead. An upgrade backs up first (if planned), deploys through `Apps.deploy`
and, when that fails, names the snapshot that restores the data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

from bot.config import Config
from bot.core.store import Store
from bot.errors import StalePlan, UserError
from bot.faults import fault_point
from bot.features.apps import Apps, Deployed, deployed_from
from bot.features.backups import Backups
from bot.features.upgrades.plan import (
    AppCheck,
    CheckReport,
    Problem,
    UpgradePlan,
    auto_patches,
    drift_of,
    facts,
    newest_release,
    news,
    opted_in,
    split_pinned,
    steps_between,
)
from bot.features.upgrades.render import kind_label, restore_hint
from bot.ops.abra import AppEnv
from bot.ops.recipes import RecipeReads, Version, parse_version, step_kind
from bot.ops.swarm import ServiceInfo
from bot.ports import ProgressSink

log = logging.getLogger(__name__)

T = TypeVar("T")

REPORTED_KEY = "upgrades.reported"  # store kv: the facts the last scheduled report showed
AUTO_KEY = "upgrades.auto_attempted"  # store kv: "<domain>@<version>" auto-patches tried


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
        reads = RecipeReads(self.apps.recipe)  # one git read per recipe for the whole check

        async def one(env: AppEnv, current: Deployed) -> AppCheck:
            async with limit:
                try:
                    return await self._check_app(env, current, fetches, digests, reads)
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
            reads.cancel()
        for recipe, task in sorted(fetches.tasks.items(), key=lambda kv: str(kv[0])):
            error = task.result()
            if error:
                problems.append(Problem(f"fetch:{recipe}", f"recipe {recipe}: {error}"))
        return CheckReport(tuple(checks), tuple(problems))

    async def _check_app(
        self,
        env: AppEnv,
        current: Deployed,
        fetches: _Once[str | None],
        digests: _Once[str],
        reads: RecipeReads,
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
            newest = newest_release(release, (await reads.refs(env.recipe)).versions)
            if newest is not None:
                notes = await reads.release_notes(env.recipe, release.text, newest.text)
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
    async def prepare(
        self, env: AppEnv, version: str | None, prefix: str = "!", *, changes: bool = False
    ) -> UpgradePlan:
        """What `!upgrade` would do; UserError for anything that is not an upgrade.
        `prefix`: the command prefix, for the hints; `changes`: with the deploy's plan
        (a checkout and a render: for proposals and dry runs, not for the run itself)."""
        current = await self.apps.deployed(env)
        if not current.exists:
            raise UserError(
                f"{env.domain} is not deployed; `{prefix}deploy {env.domain}` deploys it."
            )
        release = None if current.chaos else parse_version(current.version or "")
        if release is None:
            raise UserError(
                f"{env.domain} runs {current.version or 'an unknown version'}, which is not a "
                f"release; `{prefix}deploy {env.domain} <version>` deploys one."
            )

        # The batched reads (one `git for-each-ref`, one `git cat-file --batch`), not
        # GitPython per tag: no Python git work under the GIL while others wait.
        repo = await asyncio.to_thread(self.apps.recipe, env.recipe)
        refs = await repo.refs()
        versions = refs.versions
        if version is not None:
            target = refs.version(version)  # unknown versions stop here
        else:
            newest = newest_release(release, versions)
            if newest is None:
                raise UserError(
                    f"{env.domain} already runs {release.text}, the newest release of {env.recipe}."
                )
            target = newest
        kind = step_kind(release, target)
        if kind == "same":
            raise UserError(
                f"{env.domain} already runs {target.text}; `{prefix}deploy {env.domain}` "
                "redeploys it."
            )
        if kind == "downgrade":
            raise UserError(
                f"{target.text} is older than {release.text}, which {env.domain} runs: "
                f"that is not an upgrade. `{prefix}rollback {env.domain} {target.text}` "
                "goes back (with a vote)."
            )
        notes = await repo.release_notes_async(release.text, target.text, refs)
        will_back_up, backup = await self._backup_intent(env)
        plan_text = await self.apps.plan(env, target.text) if changes else ""
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
            plan_text,
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
        *,
        action: str = "upgrade",
        still_as_planned: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        """Back up (if planned), deploy and wait; on failure the code is rolled back
        (by Apps.deploy) and the room is told which snapshot restores the data.
        `action`: the command that asked (a `!deploy` or `!rollback` that grows the
        major version goes this way too, backup first); `still_as_planned` is called
        after the backup (a wait) and raises StalePlan if the plan no longer holds.
        Returns the report; raises UserError with it when the upgrade failed."""
        env = plan.env
        asked = "" if action == "upgrade" else f" (`{action}` of a major step: as an upgrade)"
        lines = [
            f"⬆ **Upgrade {env.domain}**: {plan.current.text} → {plan.target.text}, "
            f"{kind_label(plan.kind)}{asked}"
        ]
        snapshot: str | None = None
        if plan.will_back_up and self.backups is not None:
            await progress.update("\n".join([*lines, "⏳ Backing up first"]))
            try:
                outcome = await self.backups.backup(env, _Below(progress, "\n".join(lines)), actor)
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
            fault_point("upgrade.backed_up")
        else:
            lines.append(f"ℹ {plan.backup}")
        if still_as_planned is not None:
            try:
                await still_as_planned()
            except StalePlan as exc:  # the backup is kept; nothing else happened
                raise StalePlan("\n".join([*lines, "", str(exc)])) from None
        above = "\n".join(lines)
        before = await self._spec_versions(env)  # None: unknown, so assume it changed
        try:
            report = await self.apps.deploy(
                env,
                _Below(progress, above),
                actor,
                plan.target.text,
                job_id=job_id,
                action=action,
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
