"""What one app's backup covers, read from its running stack.

The recipe's backupbot labels say which services and volumes hold data
(`bot/ops/backupbot.py` reads them); the stack's volumes and mounts say where
that data is on the host. Nothing here runs restic or changes anything.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bot.config import BackupsConfig
from bot.errors import UserError
from bot.features.apps import Apps, deployed_from
from bot.ops.abra import AppEnv
from bot.ops.backupbot import BackupSpec, backup_specs, volume_paths
from bot.ops.swarm import ServiceInfo, Swarm, SwarmError

APP_TAG = "app="  # every snapshot is tagged app=<domain>, stack=<stack>, version=<v>
COOPBOT_TAG = "coopbot"


@dataclass(frozen=True)
class Location:
    """The node an app's volumes are on, on a swarm of several nodes (remote.py)."""

    node_id: str
    hostname: str
    volumes: tuple[str, ...]  # the stack's volumes there, short names
    remote: bool  # not the node whose volumes_root the bot reads


@dataclass(frozen=True)
class BackupTarget:
    """What one app's backup covers, read from its running stack."""

    env: AppEnv
    specs: list[BackupSpec]
    paths: list[Path]
    version: str | None
    services: list[ServiceInfo]
    warnings: list[str]
    location: Location | None = None  # None: a single-node swarm

    @property
    def tags(self) -> list[str]:
        tags = [COOPBOT_TAG, APP_TAG + self.env.domain, "stack=" + self.env.stack_name]
        if self.version:
            tags.append("version=" + self.version)
        return tags


def tree_totals(root: Path) -> tuple[int, int]:
    """(regular files, their total size) under root, symlinks not followed."""
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(st.st_mode):  # lstat: a symlink is not a file here
                files += 1
                size += st.st_size
    return files, size


class Targets:
    """The part of `Backups` that reads what to back up (no restic, no changes)."""

    config: BackupsConfig
    apps: Apps

    async def locate(self, env: AppEnv) -> Location | None:
        """Where the app's volumes are; None: on the bot's node (remote.py overrides)."""
        return None

    async def has_labels(self, env: AppEnv) -> bool:
        services = await self.apps.swarm(env.server).services(env.stack_name)
        return bool(backup_specs({s.short_name: s.labels for s in services}))

    async def labelled_apps(self) -> tuple[list[AppEnv], list[str]]:
        """Deployed apps with a service labelled backupbot.backup=true; problems."""
        apps, problems = await self.apps.inventory()
        stacks: dict[str, dict[str, list[ServiceInfo]]] = {}
        for server in sorted({a.server for a in apps}):
            try:
                stacks[server] = await self.apps.swarm(server).stacks()
            except SwarmError as e:
                problems.append(f"{server}: {e}")
        found = []
        for env in apps:
            services = stacks.get(env.server, {}).get(env.stack_name, [])
            if backup_specs({s.short_name: s.labels for s in services}):
                found.append(env)
        return found, problems

    async def target(self, env: AppEnv) -> BackupTarget:
        swarm = self.apps.swarm(env.server)
        services = await swarm.services(env.stack_name)
        if not services:
            raise UserError(f"{env.domain} is not deployed: there is nothing to back up.")
        specs = backup_specs({s.short_name: s.labels for s in services})
        if not specs:
            raise UserError(
                f"{env.domain} has no `backupbot.backup=true` label on any service: "
                "its recipe does not say what to back up."
            )
        prefix = env.stack_name + "_"
        volumes = [
            v[len(prefix) :]
            for v in await swarm.volumes(env.stack_name)
            if v.startswith(prefix) and len(v) > len(prefix)
        ]
        where = await self.locate(env)
        if where is not None and where.remote:  # the manager does not list them
            volumes = list(where.volumes)
        warnings = [w for spec in specs for w in spec.warnings]
        paths: list[Path] = []
        root = self.config.volumes_root
        for spec in specs:
            try:
                if spec.deprecated_paths:
                    paths += await self._deprecated(env, swarm, spec)
                else:
                    paths += volume_paths(env.stack_name, root, volumes, spec)
            except ValueError as e:
                raise UserError(f"{env.domain}: {e}") from None
        paths = list(dict.fromkeys(paths))
        # On another node the paths are the mount points restic sees there.
        remote = where is not None and where.remote
        missing = [] if remote else [p for p in paths if not p.exists()]
        if missing:
            raise UserError(
                f"{env.domain}: cannot see {', '.join(map(str, missing))}; is "
                f"backups.volumes_root ({root}) where the docker volumes are?"
            )
        if not paths:
            raise UserError(f"{env.domain}: every volume is skipped by its labels.")
        deployed = deployed_from(env.stack_name, services)  # no second listing
        return BackupTarget(env, specs, paths, deployed.version, services, warnings, where)

    async def _deprecated(self, env: AppEnv, swarm: Swarm, spec: BackupSpec) -> list[Path]:
        """backupbot.backup.path names paths inside the labelled container: map them
        through that service's volume mounts to the host."""
        mounts = (await swarm.mounts(env.stack_name)).get(spec.service, [])
        # The innermost mount first: a volume mounted inside another hides that part of it.
        mounts = sorted(mounts, key=lambda m: len(PurePosixPath(m[1]).parts), reverse=True)
        result = []
        for raw in spec.deprecated_paths:
            inside = PurePosixPath(raw)
            for source, target in mounts:
                try:
                    rel = inside.relative_to(target)
                except ValueError:
                    continue
                if ".." in rel.parts:  # leaves the mount: not on this volume
                    continue
                result.append(self.config.volumes_root / source / "_data" / rel)
                break
            else:
                raise ValueError(
                    f"backupbot.backup.path {raw} is not on a volume of service {spec.service}"
                )
        return result
