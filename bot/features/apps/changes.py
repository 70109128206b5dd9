"""What a deploy would change, as data and as one text: pure.

The same plan is shown by `--dry-run`, in every proposal for a version change and in
the deploy's own progress message, so what members read before deciding is what the
deploy then says it does. It compares the services as they run (their specs, read
from the swarm) with the services the target renders to (the merged compose, the
way `docker stack deploy` sends it, with the image digests the deploy pins):

- per service the image before → after (with the digest when it is pinned);
- services added and removed;
- environment variables added and removed, by NAME only: a value is never read
  into the plan, so it cannot be shown;
- secrets and configs added, removed or bumped: Co-op Cloud versions them in their
  names (`<stack>_<name>_<version>`), so a removed and an added name that differ
  only in the last part are one bump;
- named volumes added and removed (volumes are never deleted by a deploy).

Every name shown comes from a recipe or an .env: each is an inert code span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.fmt import code
from bot.ops.swarm import SpecSummary

_DIGEST_SHOWN = len("sha256:") + 12  # as docker shows ids
NOTE_LINE = 200  # characters of a release note's first line in a plan


@dataclass(frozen=True)
class NameChanges:
    """Names (secrets, configs, volumes, env keys) a service gains, loses or bumps."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    bumped: tuple[tuple[str, str], ...] = ()  # (old name, new name)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.bumped)


@dataclass(frozen=True)
class ServiceChange:
    name: str
    kind: str  # "added", "removed", "changed", "same"
    image_before: str | None = None
    image_after: str | None = None
    env: NameChanges = field(default_factory=NameChanges)
    secrets: NameChanges = field(default_factory=NameChanges)
    configs: NameChanges = field(default_factory=NameChanges)
    volumes: NameChanges = field(default_factory=NameChanges)


@dataclass(frozen=True)
class StackChanges:
    services: tuple[ServiceChange, ...]

    @property
    def unchanged(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services if s.kind == "same")


def _base(name: str) -> str:
    """The name without its version part: `s_db_password_v2` → `s_db_password`."""
    head, sep, _ = name.rpartition("_")
    return head if sep else name


def name_changes(before: frozenset[str], after: frozenset[str], *, versioned: bool) -> NameChanges:
    gone, new = sorted(before - after), sorted(after - before)
    bumped: list[tuple[str, str]] = []
    if versioned:
        for old in list(gone):
            match = [n for n in new if _base(n) == _base(old)]
            if len(match) == 1 and sum(_base(g) == _base(old) for g in gone) == 1:
                bumped.append((old, match[0]))
                gone.remove(old)
                new.remove(match[0])
    return NameChanges(tuple(new), tuple(gone), tuple(bumped))


def target_specs(
    stack: str, config: Mapping[str, Any], pins: Mapping[str, str]
) -> dict[str, SpecSummary]:
    """What each service of the rendered compose becomes on the swarm: the names
    `docker stack deploy` gives its secrets, configs and volumes (their `name:`, else
    `<stack>_<key>`; an external volume keeps its own name)."""

    def swarm_name(section: str, key: str) -> str:
        top = (config.get(section) or {}).get(key) or {}
        if isinstance(top, dict) and top.get("name"):
            return str(top["name"])
        if section == "volumes" and isinstance(top, dict) and top.get("external"):
            return key
        return f"{stack}_{key}"

    def sources(entries: Any) -> list[str]:
        out = []
        for entry in entries or []:
            source = entry.get("source") if isinstance(entry, dict) else str(entry)
            if source:
                out.append(str(source))
        return out

    specs: dict[str, SpecSummary] = {}
    for name, service in (config.get("services") or {}).items():
        if not isinstance(service, dict):
            continue
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            keys = [str(item).split("=", 1)[0] for item in environment]
        else:
            keys = [str(k) for k in environment]
        volumes = [
            v
            for v in service.get("volumes") or []
            if isinstance(v, dict) and v.get("type", "volume") == "volume" and v.get("source")
        ]
        specs[name] = SpecSummary(
            image=pins.get(name) or str(service.get("image", "")),
            env_keys=frozenset(keys),
            secrets=frozenset(swarm_name("secrets", s) for s in sources(service.get("secrets"))),
            configs=frozenset(swarm_name("configs", c) for c in sources(service.get("configs"))),
            volumes=frozenset(swarm_name("volumes", str(v["source"])) for v in volumes),
        )
    return specs


def diff(before: Mapping[str, SpecSummary], after: Mapping[str, SpecSummary]) -> StackChanges:
    """Service by service, sorted by name: what the move from `before` to `after` does."""
    changes = []
    empty = SpecSummary("")
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        kind = "added" if old is None else "removed" if new is None else "changed"
        old_spec, new_spec = old or empty, new or empty
        change = ServiceChange(
            name,
            kind,
            image_before=old.image if old else None,
            image_after=new.image if new else None,
            env=name_changes(old_spec.env_keys, new_spec.env_keys, versioned=False),
            secrets=name_changes(old_spec.secrets, new_spec.secrets, versioned=True),
            configs=name_changes(old_spec.configs, new_spec.configs, versioned=True),
            volumes=name_changes(old_spec.volumes, new_spec.volumes, versioned=False),
        )
        if (
            kind == "changed"
            and old_spec.image == new_spec.image
            and not (change.env or change.secrets or change.configs or change.volumes)
        ):
            change = ServiceChange(name, "same", old_spec.image, new_spec.image)
        changes.append(change)
    return StackChanges(tuple(changes))


def short_image(ref: str) -> str:
    """`name:tag@sha256:0123456789ab` (the digest cut as docker shows ids)."""
    name, at, digest = ref.partition("@")
    return f"{name}@{digest[:_DIGEST_SHOWN]}" if at else ref


def first_line(text: str, limit: int = NOTE_LINE) -> str:
    """A release note's first non-empty line, cut to `limit`, as an inert code span
    (notes are recipe text: no link, mention or markup of theirs reaches the room)."""
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    if not line:
        return "(empty)"
    return code(line if len(line) <= limit else line[: limit - 1].rstrip() + "…")


def _names(label: str, changes: NameChanges) -> str | None:
    parts = [f"+ {code(n)}" for n in changes.added]
    parts += [f"− {code(n)}" for n in changes.removed]
    parts += [f"{code(a)} → {code(b)}" for a, b in changes.bumped]
    return f"    - {label}: " + ", ".join(parts) if parts else None


def render_changes(
    current: str | None,
    target: str,
    changes: StackChanges,
    notes: Sequence[tuple[str, str]] = (),
    warnings: Sequence[str] = (),
) -> str:
    """The plan as one text (Markdown). `notes`: (version, text) release notes, shown
    by their first line (the full notes are in the upgrade proposal)."""
    lines = [f"📋 Plan: {current or 'not deployed'} → **{target}**"]
    for service in changes.services:
        if service.kind == "same":
            continue
        name = code(service.name)
        if service.kind == "added":
            lines.append(f"  - {name}: added, image {code(short_image(service.image_after or ''))}")
        elif service.kind == "removed":
            lines.append(
                f"  - {name}: removed (was {code(short_image(service.image_before or ''))})"
            )
        else:
            before, after = service.image_before or "", service.image_after or ""
            image = (
                f"image {code(short_image(before))} → {code(short_image(after))}"
                if before != after
                else f"image {code(short_image(after))} (unchanged)"
            )
            lines.append(f"  - {name}: {image}")
        for label, names in (
            ("environment", service.env),
            ("secrets", service.secrets),
            ("configs", service.configs),
            ("volumes", service.volumes),
        ):
            line = _names(label, names)
            if line:
                lines.append(line)
    if changes.unchanged:
        lines.append("  - unchanged: " + ", ".join(code(n) for n in changes.unchanged))
    for version, text in notes:
        lines.append(f"  - notes {code(version)}: {first_line(text)}")
    lines += [f"⚠ {warning}" for warning in warnings]
    return "\n".join(lines)
