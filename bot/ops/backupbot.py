"""The backupbot labels read into backup specs, and the host paths they name.

Co-op Cloud recipes describe their backups with labels on one service (GUIDE §4):
`backupbot.backup=true`, pre/post hooks for backup and restore, volumes skipped
with `backupbot.backup.volumes.<vol>=false` and limited with
`backupbot.backup.volumes.<vol>.path=a,b`. Old recipes use `backupbot.backup.path`,
which is accepted and flagged. No I/O here: the labels come from the swarm spec
(`ServiceInfo.labels`) and the result is a list of paths for restic.

Limits of a lexical check: `volume_paths` keeps every path under `volumes_root` as
written, but a symlink inside a volume can still point elsewhere; whoever reads
the files should not follow symlinks out of the volume.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

BACKUP = "backupbot.backup"
BACKUP_PRE_HOOK = "backupbot.backup.pre-hook"
BACKUP_POST_HOOK = "backupbot.backup.post-hook"
RESTORE_PRE_HOOK = "backupbot.restore.pre-hook"
RESTORE_POST_HOOK = "backupbot.restore.post-hook"
DEPRECATED_PATH = "backupbot.backup.path"
VOLUMES_PREFIX = "backupbot.backup.volumes."
_PATH_SUFFIX = ".path"
_KNOWN = frozenset(
    {
        BACKUP,
        BACKUP_PRE_HOOK,
        BACKUP_POST_HOOK,
        RESTORE_PRE_HOOK,
        RESTORE_POST_HOOK,
        DEPRECATED_PATH,
    }
)

# Docker's rule for volume names (daemon/names: RestrictedNamePattern).
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


@dataclass(frozen=True)
class VolumeRule:
    volume: str  # the compose volume name, e.g. "data"
    paths: tuple[str, ...]  # relative to the volume's _data; empty = the whole volume


@dataclass(frozen=True)
class BackupSpec:
    service: str  # short service name carrying backupbot.backup=true
    pre_hook: str | None
    post_hook: str | None
    restore_pre_hook: str | None
    restore_post_hook: str | None
    skipped: tuple[str, ...]  # volumes labelled backupbot.backup.volumes.<vol>=false
    limited: tuple[VolumeRule, ...]  # backupbot.backup.volumes.<vol>.path=a,b
    deprecated_paths: tuple[str, ...]  # backupbot.backup.path=a,b (old recipes)
    warnings: tuple[str, ...]  # human lines about labels accepted but questionable


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


def _hook(labels: Mapping[str, str], key: str) -> str | None:
    value = (labels.get(key) or "").strip()
    return value or None


def _split(value: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for part in value.split(","):
        if part.strip():
            seen[part.strip()] = None
    return tuple(seen)


def _spec(service: str, labels: Mapping[str, str]) -> BackupSpec:
    skipped: list[str] = []
    limited: list[VolumeRule] = []
    warnings: list[str] = []
    for key in sorted(labels):
        value = labels[key]
        if not key.startswith("backupbot.") or key in _KNOWN:
            continue
        rest = key.removeprefix(VOLUMES_PREFIX)
        if rest == key or not rest:
            warnings.append(f"{service}: unknown label {key} ignored")
        elif rest.endswith(_PATH_SUFFIX) and rest != _PATH_SUFFIX:
            volume = rest.removesuffix(_PATH_SUFFIX)
            paths = _split(value)
            if paths:
                limited.append(VolumeRule(volume, paths))
            else:
                warnings.append(f"{service}: {key} names no path: the whole volume is kept")
        elif value.strip().lower() == "false":
            skipped.append(rest)
        elif value.strip().lower() != "true":
            warnings.append(f"{service}: {key}={value!r} is neither true nor false: ignored")
    for rule in limited:
        if rule.volume in skipped:
            warnings.append(
                f"{service}: volume {rule.volume} is both skipped and limited: it is skipped"
            )
    deprecated = _split(labels.get(DEPRECATED_PATH, ""))
    if DEPRECATED_PATH in labels:
        warnings.insert(
            0,
            f"{service}: {DEPRECATED_PATH} is deprecated: use {VOLUMES_PREFIX}<vol>{_PATH_SUFFIX}",
        )
    return BackupSpec(
        service=service,
        pre_hook=_hook(labels, BACKUP_PRE_HOOK),
        post_hook=_hook(labels, BACKUP_POST_HOOK),
        restore_pre_hook=_hook(labels, RESTORE_PRE_HOOK),
        restore_post_hook=_hook(labels, RESTORE_POST_HOOK),
        skipped=tuple(skipped),
        limited=tuple(limited),
        deprecated_paths=deprecated,
        warnings=tuple(warnings),
    )


def backup_specs(services: Mapping[str, Mapping[str, str]]) -> list[BackupSpec]:
    """One spec per service labelled backupbot.backup=true (any case), in input order.

    `services` maps short service names to their spec labels. Parsing never fails:
    odd labels become warnings; path safety is checked by `volume_paths`.
    """
    return [
        _spec(name, labels) for name, labels in services.items() if _is_true(labels.get(BACKUP))
    ]


def _relative(path: str, label: str) -> PurePosixPath:
    sub = PurePosixPath(path)
    if sub.is_absolute() or ".." in sub.parts:
        raise ValueError(f"{label}: {path!r} must be a path inside the volume (no '/…' or '..')")
    return sub


def volume_paths(
    stack: str, volumes_root: Path, volumes: Iterable[str], spec: BackupSpec
) -> list[Path]:
    """The host paths to back up for `spec`, in the order of `volumes`.

    Each volume is `<volumes_root>/<stack>_<vol>/_data`; skipped volumes are left
    out, limited ones give their sub-paths under `_data`. Rules for volumes not in
    `volumes` are ignored. Raises ValueError, naming the label, for a sub-path that
    would leave `_data` or a volume name that is not a single safe path component.
    """
    skipped = set(spec.skipped)
    rules: dict[str, list[str]] = {}
    for rule in spec.limited:
        rules.setdefault(rule.volume, []).extend(rule.paths)
    result: list[Path] = []
    for volume in dict.fromkeys(volumes):
        if volume in skipped:
            continue
        name = f"{stack}_{volume}"
        if not _VOLUME_NAME.fullmatch(name):
            raise ValueError(f"volume {name!r} is not a valid docker volume name")
        data = volumes_root / name / "_data"
        label = f"{VOLUMES_PREFIX}{volume}{_PATH_SUFFIX}"
        subs = [_relative(p, label) for p in rules.get(volume, [])]
        if not subs:
            result.append(data)
        for sub in dict.fromkeys(subs):
            path = data / sub
            if path not in result:
                result.append(path)
    return result
