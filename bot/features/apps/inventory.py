"""Which apps there are, what each runs, and the swarm secrets each needs.

The apps are abra's `.env` files (`servers/<server>/<domain>.env`); what runs is
read from the swarm, from the version and chaos labels a deploy puts on every
service of the stack. Nothing here deploys or removes anything.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.config import Config
from bot.core.store import Store
from bot.errors import UserError
from bot.features.apps.secrets import Needed, needed_secrets, rendered_config
from bot.labels import chaos_label, version_label
from bot.ops.abra import AppEnv, create_app, generate_secret, list_apps, parse_env
from bot.ops.recipes import RecipeRepo, Recipes, Version, parse_version
from bot.ops.swarm import ServiceInfo, Swarm, SwarmError


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


@dataclass(frozen=True)
class SecretState:
    """One swarm secret the app's rendered compose references (secrets.py)."""

    name: str  # the swarm secret's name: <stack>_<name>_<version>
    exists: bool
    problem: str | None = None  # why no deploy can have it (an .env line to set)


class Inventory:
    """The part of `Apps` that finds apps and reads their state."""

    def __init__(
        self, config: Config, store: Store, swarms: Mapping[str, Swarm], recipes: Recipes
    ) -> None:
        self._config = config
        self._store = store
        self._swarms = swarms  # one adapter per configured server, built in bot/app.py
        self._recipes = recipes

    @property
    def abra_dir(self) -> Path:
        return self._config.abra_dir

    @property
    def prefix(self) -> str:
        """The command prefix, for the hints in messages."""
        matrix = self._config.matrix
        return matrix.prefix if matrix else "!"

    async def inventory(self) -> tuple[list[AppEnv], list[str]]:
        return await asyncio.to_thread(list_apps, self.abra_dir, list(self._swarms))

    async def find(self, domain: str) -> AppEnv:
        apps, _ = await self.inventory()
        for app in apps:
            if app.domain == domain:
                return app
        close = difflib.get_close_matches(domain, [a.domain for a in apps], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(
            f"No app {domain} on any configured server.{hint} `{self.prefix}apps` lists them."
        )

    def swarm(self, server: str) -> Swarm:
        return self._swarms[server]

    def recipe(self, name: str) -> RecipeRepo:
        return self._recipes.repo(name)

    async def create(self, recipe: str, domain: str, server: str | None) -> AppEnv:
        """A new app from its recipe's `.env.sample`, as `abra app new` makes it.
        Refuses an app that exists on any server, an unknown recipe or server."""
        servers = list(self._swarms)
        if server is None:
            if len(servers) != 1:
                raise UserError(
                    f"Name the server: one of {', '.join(servers) or 'none configured'}."
                )
            server = servers[0]
        if server not in self._swarms:
            raise UserError(f"No server {server}; configured: {', '.join(servers)}.")
        known = sorted(
            p.name for p in (self.abra_dir / "recipes").glob("*") if (p / ".git").exists()
        )
        if recipe not in known:
            close = difflib.get_close_matches(recipe, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(
                f"No recipe {recipe} in {self.abra_dir / 'recipes'}.{hint} "
                f"Known: {', '.join(known) or 'none'}."
            )
        apps, _ = await self.inventory()
        for app in apps:
            if app.domain == domain:
                raise UserError(f"{domain} exists already (on {app.server}); nothing was changed.")
        path = await asyncio.to_thread(create_app, self.abra_dir, server, recipe, domain)
        return await asyncio.to_thread(parse_env, path, server)

    async def deployed(self, app: AppEnv) -> Deployed:
        services = await self.swarm(app.server).services(app.stack_name)
        return deployed_from(app.stack_name, services)

    async def newest(self, app: AppEnv) -> Version | None:
        # Batched: the apps of one `!apps` share one `git for-each-ref` per recipe.
        return (await self._recipes.refs(app.recipe)).newest()

    async def head(self, app: AppEnv) -> str:
        """The commit the recipe's HEAD points at (what a chaos deploy runs)."""
        return await asyncio.to_thread(lambda: self.recipe(app.recipe).head())

    def previous_version(self, app: AppEnv, current: str | None) -> str | None:
        """The last successfully deployed version before the current one."""
        for row in self._store.deploys(app.domain, limit=100):
            if row["result"] == "ok" and row["version"] and row["version"] != current:
                return str(row["version"])
        return None

    # -- secrets ---------------------------------------------------------------------
    async def _needed(self, app: AppEnv) -> list[Needed]:
        """The secrets the rendered compose references (what the deploy checks)."""
        try:
            config = await rendered_config(self, app)
        except UserError as exc:
            raise UserError(
                f"Cannot tell which secrets {app.domain} needs: its compose does not render: {exc}"
            ) from None
        return needed_secrets(app.stack_name, config, app.secrets)

    async def secrets(self, app: AppEnv) -> list[SecretState]:
        """The secrets the app's rendered compose references, in the order its services
        name them, and whether each exists."""
        needed = await self._needed(app)
        existing = await self.swarm(app.server).secrets()
        return [SecretState(n.name, n.name in existing, n.problem) for n in needed]

    async def generate_secrets(self, app: AppEnv, actor: str) -> list[str]:
        """Create the missing secrets from the .env's length/charset hints; the names
        created. The values go to the swarm only: never logged, never returned. A secret
        whose name the .env leaves unfinished (an empty version) is not made."""
        needed = await self._needed(app)
        swarm = self.swarm(app.server)
        existing = await swarm.secrets()
        created = []
        for need in needed:
            spec, name = need.spec, need.name
            if name in existing or need.problem:
                continue
            try:
                await swarm.create_secret(
                    name,
                    generate_secret(spec),
                    {"coop-cloud.stack": app.stack_name, "coop-cloud.generated-by": "coopbot"},
                )
            except SwarmError as exc:
                raise UserError(f"Creating {name} failed: {exc}") from None
            created.append(name)
        self._store.audit(actor, "secrets.generate", ", ".join(created) or "none", app=app.domain)
        return created
