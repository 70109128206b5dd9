"""Apps on the swarm: inventory, deploy, rollback, undeploy.

How a deploy works (each step is a line of the job's one progress message):
a private checkout of the recipe at the tag, the environment abra would build,
pre-flight checks that all run and are all reported before anything is created,
the plan, `docker stack deploy` with pinned digests and version labels, waiting
for real convergence, and on failure a rollback to the previous spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.config import Config
from bot.core.store import Store
from bot.errors import UserError
from bot.ops.abra import AppEnv, list_apps, read_exports, set_pinned_version
from bot.ops.recipes import RecipeRepo, Recipes, Version, parse_version
from bot.ops.swarm import ServiceInfo, Swarm
from bot.ports import ProgressSink

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300
OVERLAY = "coopbot.override.yml"


def version_label(stack: str) -> str:
    return f"coop-cloud.{stack}.version"


def chaos_label(stack: str) -> str:
    return f"coop-cloud.{stack}.chaos"


def timeout_label(stack: str) -> str:
    return f"coop-cloud.{stack}.timeout"


@dataclass(frozen=True)
class Deployed:
    """What runs now, read from the swarm (labels of the stack's services)."""

    version: str | None
    chaos: bool
    services: list[ServiceInfo]

    @property
    def exists(self) -> bool:
        return bool(self.services)


def _release_order(text: str | None) -> tuple[tuple[int, int, int], str]:
    release = parse_version(text or "")
    return (release.key if release else (-1, -1, -1), text or "")


def deployed_from(stack: str, services: list[ServiceInfo]) -> Deployed:
    versions = {s.labels.get(version_label(stack)) for s in services} - {None}
    chaos = any(s.labels.get(chaos_label(stack)) == "true" for s in services)
    # Recipes label one service (app); we label all. Mid-update the labels can
    # differ: show the highest release (by recipe semver, not by string).
    version = (max(versions, key=_release_order) if versions else None) or None
    return Deployed(version, chaos, services)


@dataclass
class Steps:
    """The lines of a job's progress message: one per step, updated in place."""

    progress: ProgressSink
    title: str
    lines: list[str] = field(default_factory=list)

    async def step(self, text: str) -> None:
        self.lines.append(f"⏳ {text}")
        await self.progress.update(self.render())

    async def done(self, text: str | None = None, mark: str = "✅") -> None:
        if self.lines:
            current = self.lines[-1][2:]
            self.lines[-1] = f"{mark} {text or current}"
        await self.progress.update(self.render())

    def render(self) -> str:
        return "\n".join([self.title, "", *self.lines])


class Apps:
    """Inventory and actions over every configured server."""

    def __init__(
        self, config: Config, store: Store, swarms: Mapping[str, Swarm], recipes: Recipes
    ) -> None:
        self._config = config
        self._store = store
        self._swarms = swarms  # one adapter per configured server, built in bot/app.py
        self._recipes = recipes

    # -- lookup ------------------------------------------------------------------
    @property
    def abra_dir(self) -> Path:
        return self._config.abra_dir

    async def inventory(self) -> tuple[list[AppEnv], list[str]]:
        return await asyncio.to_thread(list_apps, self.abra_dir, list(self._swarms))

    async def find(self, domain: str) -> AppEnv:
        apps, _ = await self.inventory()
        for app in apps:
            if app.domain == domain:
                return app
        close = difflib.get_close_matches(domain, [a.domain for a in apps], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"No app {domain} on any configured server.{hint} `!apps` lists them.")

    def swarm(self, server: str) -> Swarm:
        return self._swarms[server]

    def recipe(self, name: str) -> RecipeRepo:
        return self._recipes.repo(name)

    async def deployed(self, app: AppEnv) -> Deployed:
        services = await self.swarm(app.server).services(app.stack_name)
        return deployed_from(app.stack_name, services)

    async def newest(self, app: AppEnv) -> Version | None:
        def newest() -> Version | None:
            return self.recipe(app.recipe).newest()

        return await asyncio.to_thread(newest)

    def previous_version(self, app: AppEnv, current: str | None) -> str | None:
        """The last successfully deployed version before the current one."""
        for row in self._store.deploys(app.domain, limit=100):
            if row["result"] == "ok" and row["version"] and row["version"] != current:
                return str(row["version"])
        return None

    # -- deploy ---------------------------------------------------------------------
    async def deploy(
        self,
        app: AppEnv,
        progress: ProgressSink,
        actor: str,
        version: str | None = None,
        *,
        chaos: bool = False,
        job_id: int | None = None,
        action: str = "deploy",
    ) -> str:
        """Deploy and wait for convergence; returns the final report (markdown).
        Raises UserError with the report when it failed."""
        stack, swarm = app.stack_name, self.swarm(app.server)
        steps = Steps(progress, f"**{action.capitalize()} {app.domain}** on {app.server}")
        repo = await asyncio.to_thread(self.recipe, app.recipe)
        current = await self.deployed(app)
        if chaos:
            head = await asyncio.to_thread(repo.head)
            target = head[:8]
            checkout: AbstractContextManager[Path] = repo.chaos_worktree()
        else:
            target = version or app.pinned_version or await self._newest_text(repo, app)
            await asyncio.to_thread(repo.version, target)  # unknown versions stop here
            checkout = repo.worktree(target)
        await steps.step(f"Checking out {app.recipe} {target}")
        async with _entered(checkout) as tree:
            await steps.done()
            env = await asyncio.to_thread(self._environment, app, tree)
            files = [tree / name for name in app.compose_files]
            await steps.step("Pre-flight checks")
            config, pins = await self._preflight(app, swarm, files, env, tree)
            await steps.done()
            notes = (
                await asyncio.to_thread(
                    repo.release_notes, current.version if not chaos else None, target
                )
                if not chaos and parse_version(target)
                else []
            )
            plan = self._plan_lines(current, target, config, pins, notes)
            steps.lines.append("📋 " + plan)
            overlay = tree / OVERLAY
            overlay.write_text(yaml.safe_dump(self._overlay(stack, config, pins, target, chaos)))
            await steps.step(f"`docker stack deploy` {stack}")
            await swarm.deploy(stack, [*files, overlay], env, tree)
            await steps.done()
        timeout = self._timeout(app, config)
        await steps.step(f"Waiting for convergence (up to {timeout}s)")

        async def seen(text: str) -> None:
            await progress.detail(text)

        result = await swarm.wait_converged(stack, timeout, on_progress=seen)
        if result.ok:
            await steps.done(f"Converged: {self._replicas(result.services)}")
            self._record(app, target, current, actor, "ok", chaos, job_id)
            if not chaos:
                await asyncio.to_thread(set_pinned_version, app.path, app.recipe, target)
            return steps.render() + f"\n\n✅ {app.domain} runs {target}."
        await steps.done("Did not converge", mark="❌")
        steps.lines += [f"- {line}" for line in result.failures[:10]]
        if result.rolled_back_by_swarm:
            steps.lines.append("↩ Swarm rolled the services back to their previous spec by itself.")
            after = await swarm.wait_converged(stack, timeout)
            state = "running the previous version again" if after.ok else "NOT healthy"
        elif not current.exists:
            steps.lines.append(
                f"⚠ This was a first deploy: the stack {stack} exists but is not healthy. "
                f"`!undeploy {app.domain}` removes it (volumes are kept)."
            )
            state = "half-created"
        else:
            await steps.step("Rolling back to the previous spec")
            rolled = await swarm.rollback(stack)
            after = await swarm.wait_converged(stack, timeout)
            await steps.done(
                f"Rolled back {', '.join(rolled) or 'nothing'}: "
                + ("converged" if after.ok else "NOT converged"),
                mark="↩" if after.ok else "❌",
            )
            state = "running the previous version again" if after.ok else "NOT healthy"
        self._record(
            app,
            target,
            current,
            actor,
            "failed",
            chaos,
            job_id,
            detail="; ".join(result.failures[:5]),
        )
        was = f" ({current.version})" if current.version and "previous" in state else ""
        raise UserError(
            steps.render() + f"\n\n{action.capitalize()} of {app.domain} {target} failed; "
            f"the app is {state}{was}."
        )

    async def _newest_text(self, repo: RecipeRepo, app: AppEnv) -> str:
        newest = await asyncio.to_thread(repo.newest)
        if newest is None:
            raise UserError(
                f"Recipe {app.recipe} has no release tags; use `--chaos` to deploy "
                "its current commit."
            )
        return newest.text

    def _environment(self, app: AppEnv, tree: Path) -> dict[str, str]:
        """What abra exports: the recipe's abra.sh exports, the app's .env, STACK_NAME."""
        abra_sh = tree / "abra.sh"
        exports = read_exports(abra_sh) if abra_sh.exists() else {}
        return {**exports, **app.values, "STACK_NAME": app.stack_name}

    async def _preflight(
        self, app: AppEnv, swarm: Swarm, files: list[Path], env: dict[str, str], tree: Path
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Every check runs; every problem is reported together; nothing is created."""
        problems: list[str] = []
        missing_files = [f.name for f in files if not f.exists()]
        config: dict[str, Any] = {}
        if missing_files:
            problems.append(f"compose files missing in the recipe: {', '.join(missing_files)}")
        else:
            try:
                config = await swarm.config(files, env, tree)
            except UserError as exc:
                problems.append(f"the compose files are not valid: {exc}")
        needed = sorted(
            spec["name"]
            for spec in (config.get("secrets") or {}).values()
            if isinstance(spec, dict) and spec.get("name") and spec.get("external", True)
        )
        existing = await swarm.secrets()
        missing = [name for name in needed if name not in existing]
        if missing:
            problems.append(
                f"missing secrets: {', '.join(missing)} (`!secrets {app.domain} generate` "
                "creates them)"
            )
        pins: dict[str, str] = {}
        images = {
            name: service["image"]
            for name, service in (config.get("services") or {}).items()
            if isinstance(service, dict) and service.get("image")
        }
        checks = await asyncio.gather(*(swarm.image_available(ref) for ref in images.values()))
        for (name, ref), (available, pinned, reason) in zip(images.items(), checks, strict=True):
            if not available:
                problems.append(f"image {ref} of service {name} is not available: {reason}")
            elif pinned:
                pins[name] = pinned
        if problems:
            raise UserError(
                f"Pre-flight failed for {app.domain}; nothing was created:\n"
                + "\n".join(f"- {p}" for p in problems)
            )
        return config, pins

    @staticmethod
    def _overlay(
        stack: str, config: dict[str, Any], pins: dict[str, str], target: str, chaos: bool
    ) -> dict[str, Any]:
        services: dict[str, Any] = {}
        for name in config.get("services") or {}:
            entry: dict[str, Any] = {
                "deploy": {
                    "labels": {version_label(stack): target, chaos_label(stack): str(chaos).lower()}
                }
            }
            if name in pins:
                entry["image"] = pins[name]
            services[name] = entry
        return {"version": str(config.get("version", "3.8")), "services": services}

    def _timeout(self, app: AppEnv, config: dict[str, Any]) -> int:
        for service in (config.get("services") or {}).values():
            labels = (service.get("deploy") or {}).get("labels") or {}
            if isinstance(labels, list):
                labels = dict(item.split("=", 1) for item in labels if "=" in item)
            value = labels.get(timeout_label(app.stack_name))
            if value and str(value).isdigit():
                return int(value)
        return app.timeout or DEFAULT_TIMEOUT

    @staticmethod
    def _plan_lines(
        current: Deployed,
        target: str,
        config: dict[str, Any],
        pins: dict[str, str],
        notes: list[tuple[str, str]],
    ) -> str:
        lines = [f"Plan: {current.version or 'not deployed'} → **{target}**"]
        running = {s.short_name: s.image for s in current.services}
        for name, service in sorted((config.get("services") or {}).items()):
            image = pins.get(name) or service.get("image", "?")
            if running.get(name) != image:
                lines.append(f"  - {name}: {running.get(name, 'new')} → {image}")
        for version, text in notes:
            lines.append(
                f"  - notes {version}: {text.strip().splitlines()[0] if text.strip() else ''}"
            )
        return "\n".join(lines)

    @staticmethod
    def _replicas(services: list[ServiceInfo]) -> str:
        def desired(service: ServiceInfo) -> str:
            return "global" if service.replicas_desired is None else str(service.replicas_desired)

        return ", ".join(f"{s.short_name} {s.replicas_running}/{desired(s)}" for s in services)

    def _record(
        self,
        app: AppEnv,
        version: str,
        current: Deployed,
        actor: str,
        result: str,
        chaos: bool,
        job_id: int | None,
        detail: str | None = None,
    ) -> None:
        self._store.add_deploy(
            app.domain,
            version,
            actor,
            result,
            server=app.server,
            previous_version=current.version,
            chaos=chaos,
            job_id=job_id,
            detail=detail,
        )
        self._store.audit(
            actor, f"deploy.{result}", f"{version} (was {current.version})", app=app.domain
        )

    # -- undeploy ----------------------------------------------------------------------
    async def undeploy(self, app: AppEnv, progress: ProgressSink, actor: str) -> str:
        steps = Steps(progress, f"**Undeploy {app.domain}** on {app.server}")
        await steps.step(f"Removing stack {app.stack_name}")
        volumes = await self.swarm(app.server).remove(app.stack_name)
        await steps.done(f"Removed stack {app.stack_name}")
        self._store.audit(
            actor, "undeploy", f"volumes kept: {', '.join(volumes) or 'none'}", app=app.domain
        )
        kept = ", ".join(f"`{v}`" for v in volumes) or "none"
        return steps.render() + f"\n\nVolumes kept: {kept}."


@contextlib.asynccontextmanager
async def _entered(manager: AbstractContextManager[Path]) -> AsyncIterator[Path]:
    """Enter and leave a synchronous (git) context manager off the event loop."""
    value = await asyncio.to_thread(manager.__enter__)
    try:
        yield value
    except BaseException as exc:
        if not await asyncio.to_thread(manager.__exit__, type(exc), exc, exc.__traceback__):
            raise
    else:
        await asyncio.to_thread(manager.__exit__, None, None, None)
