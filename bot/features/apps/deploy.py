"""Deploy, roll back and undeploy an app.

How a deploy works (each step is a line of the job's one progress message):
a private checkout of the recipe at the tag, the environment abra would build,
pre-flight checks (compose, secrets, images) that all run and are all reported
before anything is created, the plan, `docker stack deploy` with pinned digests
and version labels, waiting for real convergence, and then either the record
of a good deploy or, on failure, a rollback to the previous spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.errors import UserError
from bot.faults import fault_point
from bot.features.apps.changes import diff, render_changes, target_specs
from bot.features.apps.inventory import Deployed, Inventory
from bot.features.apps.outages import wait_through_outages
from bot.features.apps.secrets import environment
from bot.features.deploy_record import (
    DeployCheckpoint,
    record_converged,
    record_deploy,
    save_checkpoint,
)
from bot.features.self_app import SelfApp
from bot.labels import chaos_label, timeout_label, version_label
from bot.ops.abra import AppEnv
from bot.ops.recipes import RecipeRepo, parse_version
from bot.ops.swarm import Convergence, ServiceInfo, Swarm, SwarmError, stack_parts, stack_specs
from bot.ops.swarm.convergence import NODE_DOWN
from bot.ports import ProgressSink

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300
OVERLAY = "coopbot.override.yml"


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


@dataclass
class _Deploy:
    """One deploy's facts, filled in step by step."""

    app: AppEnv
    swarm: Swarm
    steps: Steps
    current: Deployed
    target: str
    chaos: bool
    action: str
    config: dict[str, Any] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)
    timeout: int = DEFAULT_TIMEOUT
    warnings: list[str] = field(default_factory=list)  # shown with the plan

    @property
    def stack(self) -> str:
        return self.app.stack_name


class Apps(Inventory):
    """Inventory and actions over every configured server."""

    # The bot's own app (bot/app.py sets it): never undeployed, its upgrade announced.
    self_app: SelfApp | None = None

    async def deploy(
        self,
        app: AppEnv,
        progress: ProgressSink,
        actor: str,
        version: str | None = None,
        *,
        chaos: bool = False,
        commit: str | None = None,
        job_id: int | None = None,
        action: str = "deploy",
    ) -> str:
        """Deploy and wait for convergence; returns the final report (markdown).
        `commit`: for chaos, the commit that was planned (voted): refused if the
        recipe's HEAD moved since. Raises UserError with the report when it failed."""
        steps = Steps(progress, f"**{action.capitalize()} {app.domain}** on {app.server}")
        repo = await asyncio.to_thread(self.recipe, app.recipe)
        current = await self.deployed(app)
        target, checkout = await self._target(app, repo, version, chaos, commit)
        run = _Deploy(app, self.swarm(app.server), steps, current, target, chaos, action)
        await steps.step(f"Checking out {app.recipe} {target}")
        async with _entered(checkout) as tree:
            await steps.done()
            env = await asyncio.to_thread(self._environment, app, tree)
            files = [tree / name for name in app.compose_files]
            await self._preflight(run, files, env, tree)
            fault_point("deploy.preflight_done")
            await self._show_plan(run, repo)
            if self.self_app is not None:  # the stack deploy may restart this very bot
                await self.self_app.before_deploy(app, target, current.version, actor, job_id)
            # What the next start needs to record this deploy if the bot dies meanwhile.
            save_checkpoint(
                self._store, job_id, DeployCheckpoint(target, current.version, actor, chaos)
            )
            await self._stack_deploy(run, files, env, tree)
        result = await self._converge(run, progress)
        if result.ok:
            return await self._record_success(run, result, actor, job_id)
        state = await self._roll_back(run, result)
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

    # -- the steps, in order ------------------------------------------------------------
    async def _target(
        self,
        app: AppEnv,
        repo: RecipeRepo,
        version: str | None,
        chaos: bool,
        commit: str | None = None,
    ) -> tuple[str, AbstractContextManager[Path]]:
        """What is deployed (a release tag, or the head commit for chaos) and the
        checkout to deploy it from. Unknown versions, and a chaos deploy whose
        planned commit is no longer HEAD, stop here."""
        if chaos:
            head = await asyncio.to_thread(repo.head)
            if commit is not None and head != commit:
                raise UserError(
                    f"The recipe {app.recipe} moved since this chaos deploy was planned "
                    f"(planned {commit[:8]}, HEAD is now {head[:8]}); nothing was done."
                )
            return head[:8], repo.chaos_worktree()
        target = version or app.pinned_version or await self._newest_text(repo, app)
        await asyncio.to_thread(repo.version, target)
        return target, repo.worktree(target)

    async def _preflight(
        self, run: _Deploy, files: list[Path], env: dict[str, str], tree: Path
    ) -> None:
        """Compose, secrets and images are all checked; every problem is reported
        together; nothing is created."""
        await run.steps.step("Pre-flight checks")
        problems: list[str] = []
        run.config = await self._check_compose(run.swarm, files, env, tree, problems, run.warnings)
        await self._check_secrets(run, problems)
        run.pins = await self._check_images(run, problems)
        # A node-local volume on a service that may move: data left behind (no problem
        # on a single node, where nothing can move).
        run.warnings += [s.describe() for s in await run.swarm.stranded_by(run.config, run.stack)]
        if problems:
            raise UserError(
                f"Pre-flight failed for {run.app.domain}; nothing was created:\n"
                + "\n".join(f"- {p}" for p in problems)
            )
        await run.steps.done()

    async def _show_plan(self, run: _Deploy, repo: RecipeRepo) -> None:
        run.steps.lines.append(await self._plan_text(run, repo))

    async def _plan_text(self, run: _Deploy, repo: RecipeRepo) -> str:
        """The one plan text (changes.py): what `--dry-run` shows, what a proposal for a
        version change holds and what the deploy's progress message then says."""
        notes = (
            # Batched: one `git cat-file --batch` for every note, not GitPython per tag.
            await repo.release_notes_async(run.current.version, run.target)
            if not run.chaos and parse_version(run.target)
            else []
        )
        before = await stack_specs(run.swarm, run.stack) if run.current.exists else {}
        changes = diff(before, target_specs(run.stack, run.config, run.pins))
        return render_changes(run.current.version, run.target, changes, notes, run.warnings)

    async def plan(self, app: AppEnv, version: str | None = None, *, chaos: bool = False) -> str:
        """The plan of deploying `version` (as `deploy` would resolve it), computed the
        way the deploy computes it, with nothing created: a checkout, the rendered
        compose, the pre-flight checks and the running specs. Pre-flight problems are
        listed under the plan instead of stopping it (a dry run shows them all)."""
        repo = await asyncio.to_thread(self.recipe, app.recipe)
        current = await self.deployed(app)
        target, checkout = await self._target(app, repo, version, chaos)
        steps = Steps(_Silent(), "")
        run = _Deploy(app, self.swarm(app.server), steps, current, target, chaos, "plan")
        problems: list[str] = []
        async with _entered(checkout) as tree:
            env = await asyncio.to_thread(self._environment, app, tree)
            files = [tree / name for name in app.compose_files]
            run.config = await self._check_compose(
                run.swarm, files, env, tree, problems, run.warnings
            )
            await self._check_secrets(run, problems)
            run.pins = await self._check_images(run, problems)
            text = await self._plan_text(run, repo)
        if problems:
            text += "\n❌ Pre-flight would fail:\n" + "\n".join(f"- {p}" for p in problems)
        return text

    async def _stack_deploy(
        self, run: _Deploy, files: list[Path], env: dict[str, str], tree: Path
    ) -> None:
        overlay = tree / OVERLAY
        overlay.write_text(
            yaml.safe_dump(self._overlay(run.stack, run.config, run.pins, run.target, run.chaos))
        )
        await run.steps.step(f"`docker stack deploy` {run.stack}")
        fault_point("deploy.overlay_written")
        await run.swarm.deploy(run.stack, [*files, overlay], env, tree)
        fault_point("deploy.stack_deployed")
        await run.steps.done()

    async def _converge(self, run: _Deploy, progress: ProgressSink) -> Convergence:
        run.timeout = self._timeout(run.app, run.config)
        await run.steps.step(f"Waiting for convergence (up to {run.timeout}s)")
        fault_point("deploy.converging")  # swarm is updating the services by now

        async def seen(text: str) -> None:
            if NODE_DOWN in text:  # a service hit by a node going away: in the message
                run.steps.lines.insert(max(0, len(run.steps.lines) - 1), f"⚠ {text}")
                await progress.update(run.steps.render())
            await progress.detail(text)

        return await wait_through_outages(run.swarm, run.stack, run.timeout, seen)

    async def _record_success(
        self, run: _Deploy, result: Convergence, actor: str, job_id: int | None
    ) -> str:
        app = run.app
        await run.steps.done(f"Converged: {self._replicas(result.services)}")
        await record_converged(
            self._store,
            app,
            run.target,
            run.current.version,
            actor,
            chaos=run.chaos,
            job_id=job_id,
        )
        return run.steps.render() + f"\n\n✅ {app.domain} runs {run.target}."

    async def _roll_back(self, run: _Deploy, result: Convergence) -> str:
        """After a failed convergence: back to the previous spec if there was one.
        Returns the state the app is left in, for the report."""
        steps, swarm, stack = run.steps, run.swarm, run.stack
        await steps.done("Did not converge", mark="❌")
        steps.lines += [f"- {line}" for line in result.failures[:10]]
        if result.rolled_back_by_swarm:
            steps.lines.append("↩ Swarm rolled the services back to their previous spec by itself.")
            after = await swarm.wait_converged(stack, run.timeout)
            return "running the previous version again" if after.ok else "NOT healthy"
        if not run.current.exists:
            return await self._remove_first(run)
        await steps.step("Rolling back to the previous spec")
        rolled = await swarm.rollback(stack)
        after = await swarm.wait_converged(stack, run.timeout)
        await steps.done(
            f"Rolled back {', '.join(rolled) or 'nothing'}: "
            + ("converged" if after.ok else "NOT converged"),
            mark="↩" if after.ok else "❌",
        )
        return "running the previous version again" if after.ok else "NOT healthy"

    async def _remove_first(self, run: _Deploy) -> str:
        """A failed first deploy leaves nothing behind: the services, networks, configs
        and secrets `docker stack deploy` made (its namespace label) are removed, as
        `docker stack rm` removes them. The secrets the operator generated are external,
        unlabelled, and stay; so do volumes (they may hold data already)."""
        steps, swarm, stack = run.steps, run.swarm, run.stack
        await steps.step(f"Removing what this first deploy created (stack {stack})")
        try:
            parts = await stack_parts(swarm, stack)
            await swarm.remove(stack)
        except SwarmError as exc:
            await steps.done(f"Removing stack {stack} failed: {exc}", mark="❌")
            steps.lines.append(
                f"⚠ `{self.prefix}undeploy {run.app.domain}` removes it (volumes are kept)."
            )
            return "half-created"
        await steps.done(f"Removed what this first deploy created: {parts.describe()}", mark="🧹")
        steps.lines.append("Secrets created before the deploy and volumes are kept.")
        return "not deployed (what the deploy created was removed)"

    # -- helpers of the steps --------------------------------------------------------------
    async def _newest_text(self, repo: RecipeRepo, app: AppEnv) -> str:
        newest = await asyncio.to_thread(repo.newest)
        if newest is None:
            raise UserError(
                f"Recipe {app.recipe} has no release tags; use `--chaos` to deploy "
                "its current commit."
            )
        return newest.text

    def _environment(self, app: AppEnv, tree: Path) -> dict[str, str]:
        """What abra exports (one definition, also for `!secrets`: secrets.py)."""
        return environment(app, tree)

    @staticmethod
    async def _check_compose(
        swarm: Swarm,
        files: list[Path],
        env: dict[str, str],
        tree: Path,
        problems: list[str],
        warnings: list[str],
    ) -> dict[str, Any]:
        """The merged compose config (as `docker stack deploy` would send it), or {}."""
        missing_files = [f.name for f in files if not f.exists()]
        if missing_files:
            problems.append(f"compose files missing in the recipe: {', '.join(missing_files)}")
            return {}
        unset: dict[str, str] = {}
        try:
            # As `docker stack deploy` does: a variable the .env leaves unset (samples
            # comment out the optional ones, e.g. #EXTRA_DOMAINS=) is "", with a warning.
            config = await swarm.config(files, env, tree, allow_missing=True, unset=unset)
        except UserError as exc:
            problems.append(f"the compose files are not valid: {exc}")
            return {}
        for name, where in sorted(unset.items()):
            warnings.append(f"{name} is not set in the .env: used as empty (in {where})")
        return config

    async def _check_secrets(self, run: _Deploy, problems: list[str]) -> None:
        needed = sorted(
            spec["name"]
            for spec in (run.config.get("secrets") or {}).values()
            if isinstance(spec, dict) and spec.get("name") and spec.get("external", True)
        )
        existing = await run.swarm.secrets()
        missing = [name for name in needed if name not in existing]
        if missing:
            problems.append(
                f"missing secrets: {', '.join(missing)} (`{self.prefix}secrets "
                f"{run.app.domain} generate` creates them)"
            )

    @staticmethod
    async def _check_images(run: _Deploy, problems: list[str]) -> dict[str, str]:
        """Every image can be pulled; the digests they are pinned to, by service."""
        pins: dict[str, str] = {}
        images = {
            name: service["image"]
            for name, service in (run.config.get("services") or {}).items()
            if isinstance(service, dict) and service.get("image")
        }
        checks = await asyncio.gather(*(run.swarm.image_available(ref) for ref in images.values()))
        for (name, ref), (available, pinned, reason) in zip(images.items(), checks, strict=True):
            if not available:
                problems.append(f"image {ref} of service {name} is not available: {reason}")
            elif pinned:
                pins[name] = pinned
        return pins

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
        record_deploy(
            self._store,
            app,
            version,
            current.version,
            actor,
            result,
            chaos=chaos,
            job_id=job_id,
            detail=detail,
        )

    # -- undeploy ----------------------------------------------------------------------
    async def undeploy(self, app: AppEnv, progress: ProgressSink, actor: str) -> str:
        if self.self_app is not None:  # again at execution time, whoever asked
            self.self_app.refuse_undeploy(app.domain)
        steps = Steps(progress, f"**Undeploy {app.domain}** on {app.server}")
        await steps.step(f"Removing stack {app.stack_name}")
        volumes = await self.swarm(app.server).remove(app.stack_name)
        await steps.done(f"Removed stack {app.stack_name}")
        self._store.audit(
            actor, "undeploy", f"volumes kept: {', '.join(volumes) or 'none'}", app=app.domain
        )
        kept = ", ".join(f"`{v}`" for v in volumes) or "none"
        return steps.render() + f"\n\nVolumes kept: {kept}."


class _Silent:
    """The progress of a plan computed without a job (nothing is shown as it goes)."""

    event_id: str | None = None

    async def update(self, markdown: str) -> None:
        return None

    async def finish(self, markdown: str) -> None:
        return None

    async def detail(self, markdown: str) -> str:
        return ""

    async def settle(self) -> None:
        return None


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
