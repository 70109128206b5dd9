"""Which swarm secrets an app needs: the ones its rendered compose references.

`!secrets` and the deploy must give one answer. The deploy checks the secrets that
the merged compose (as `docker stack config` renders it) makes its services use; so
`!secrets` lists exactly those too, not the `SECRET_<NAME>_VERSION` lines of the .env.
The two differ in real recipes: bonfire's overlays name their secrets
`${STACK_NAME}_mail_key_${SECRET_MAIL_KEY_VERSION:-v1}`, so an operator who enables
the overlay but not its (commented) version line still needs `…_mail_key_v1`; and
an overlay whose version has no default and no line needs `…_usersfile_`, which no
deploy can satisfy: that is reported as the .env's problem, naming the key to set.

The .env's lines still give each secret its hints (`# length=64 charset=hex`), matched
by the compose key (SECRET_<KEY>_VERSION). Secrets with `file:` are made by
`docker stack deploy` itself and are not listed. The compose is rendered from the
version a deploy would use (pinned, else the newest release, else the recipe's
current tree, as `--chaos` would), in a private checkout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.ops.abra import AppEnv, SecretSpec, read_exports
from bot.ops.recipes import RecipeRepo
from bot.ops.swarm import Swarm


class Sources(Protocol):
    """Where the render reads from (Inventory is one; a Protocol, not an import of it,
    so inventory.py and this module do not import each other)."""

    def recipe(self, name: str) -> RecipeRepo: ...

    def swarm(self, server: str) -> Swarm: ...


@dataclass(frozen=True)
class Needed:
    """One secret the rendered compose makes a service use."""

    key: str  # the compose key, e.g. db_password
    name: str  # the swarm secret's name, e.g. <stack>_db_password_v1
    spec: SecretSpec  # the .env line's hints, or a default one when there is no line
    problem: str | None = None  # why no deploy can have it (then it is not generated)


def environment(app: AppEnv, tree: Path) -> dict[str, str]:
    """What abra exports for a deploy: the recipe's abra.sh exports, the app's .env,
    STACK_NAME (the .env wins over abra.sh, STACK_NAME over both)."""
    abra_sh = tree / "abra.sh"
    exports = read_exports(abra_sh) if abra_sh.exists() else {}
    return {**exports, **app.values, "STACK_NAME": app.stack_name}


def needed_secrets(
    stack: str, config: Mapping[str, Any], specs: Sequence[SecretSpec]
) -> list[Needed]:
    """The external secrets the services use, in the order services name them, each once."""
    top = config.get("secrets") or {}
    by_key = {spec.name: spec for spec in specs}
    found: dict[str, Needed] = {}
    for service in (config.get("services") or {}).values():
        for entry in (service or {}).get("secrets") or []:
            key = str(entry.get("source") if isinstance(entry, dict) else entry)
            spec_of = top.get(key) or {}
            if key in found or not isinstance(spec_of, dict) or spec_of.get("file"):
                continue
            name = str(spec_of.get("name") or f"{stack}_{key}")
            env_key = f"SECRET_{key.upper()}_VERSION"
            spec = by_key.get(key) or SecretSpec(key, name.rpartition("_")[2], env_key)
            problem = None
            if name.endswith("_"):
                problem = f"its version is empty: set {env_key} in the .env (e.g. {env_key}=v1)"
            found[key] = Needed(key, name, spec, problem)
    return list(found.values())


async def rendered_config(inventory: Sources, app: AppEnv) -> dict[str, Any]:
    """The app's merged compose at the version a deploy would use (see the module)."""
    repo = await asyncio.to_thread(inventory.recipe, app.recipe)
    ref = app.pinned_version
    if ref is None:
        newest = (await repo.refs()).newest()
        ref = newest.text if newest else None
    checkout = repo.worktree(ref) if ref else repo.chaos_worktree()
    async with _entered(checkout) as tree:
        env = await asyncio.to_thread(environment, app, tree)
        files = [tree / name for name in app.compose_files]
        return await inventory.swarm(app.server).config(
            files, env, tree, allow_missing=True, unset={}
        )


class _entered:
    """Enter and leave a synchronous (git) context manager off the event loop."""

    def __init__(self, manager: AbstractContextManager[Path]) -> None:
        self._manager = manager

    async def __aenter__(self) -> Path:
        return await asyncio.to_thread(self._manager.__enter__)

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self._manager.__exit__, *exc)
