"""load_compose: compose files read, interpolated, normalised and merged."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bot.ops.compose import normalise
from bot.ops.compose.interpolate import interpolate
from bot.ops.compose.merge import merge
from bot.ops.compose.normalise import inside, outside_message
from bot.ops.compose.problems import ComposeError, Problems
from bot.ops.compose.schema import SECTIONS, check_types
from bot.ops.compose.yamlgo import load_yaml


def _check_references(doc: dict[str, Any], problems: Problems) -> None:
    # What `docker stack deploy` refuses when it converts the stack, found here first.
    for name, svc in doc["services"].items():
        if not svc.get("image"):
            problems.add(f"services.{name}: no image (stack deploy needs one)")
        for key in ("secrets", "configs"):
            for ref in svc.get(key) or []:
                source = ref.get("source")
                if source not in doc.get(key, {}):
                    problems.add(f"services.{name} refers to undefined {key[:-1]} {source}")
        for net in svc.get("networks") or {}:
            if net != "default" and net not in doc.get("networks", {}):
                problems.add(f"services.{name} refers to undefined network {net}")
        for vol in svc.get("volumes") or []:
            source = vol.get("source")
            if vol.get("type") == "volume" and source and source not in doc.get("volumes", {}):
                problems.add(f"services.{name} refers to undefined volume {source}")
    for section in ("secrets", "configs"):
        for name, entry in doc.get(section, {}).items():
            f = entry.get("file")
            if f and not entry.get("external") and not os.path.exists(f):
                problems.add(f"{section}.{name}: file {f} not found")


def load_compose(
    files: list[Path],
    env: Mapping[str, str],
    *,
    working_dir: Path | None = None,
    allow_missing: bool = False,
    root: Path | None = None,
    check_refs: bool = True,
    unset: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Load, interpolate and merge compose files the way `docker stack deploy` does.

    Each file is parsed (YAML as the CLI's yaml.v3 reads it: `yes` is a string, `1e3`
    a number), interpolated from `env` (the CLI's rules: `$$`, `${X:-d}`, `${X-d}`,
    `${X:?msg}`, `${X?msg}`, type casts of interpolated strings), checked, normalised,
    then merged onto the previous ones in order (see merge.py: services key by key;
    lists appended, except volumes by target, secrets/configs by source and ports by
    published port; command/entrypoint replaced if the overlay's is non-empty; network
    aliases replaced; top-level networks/volumes/secrets/configs replaced entry by
    entry). Normalised as `docker stack config` prints it (see normalise.py):
    environment/labels/deploy.labels mappings (env_file read in as the CLI's kvfile,
    empty and bare values taken from `env`), command/entrypoint/healthcheck.test lists,
    volumes/ports/secrets/configs long syntax, service networks a mapping, relative
    host paths absolute against the first file's directory. Top-level x-* keys are
    dropped. tests/integration/test_compose_golden.py holds all this to docker 28.

    Stricter than the CLI: an unset variable without a default is an error (the CLI
    uses "" and warns), unless `allow_missing`; then, as the CLI, it is "", and
    `unset` (if given) receives each such name with where it is used; services must
    have an image and refer only to declared secrets, configs, networks and volumes
    (what `docker stack deploy` refuses later; `check_refs=False` skips this); a file
    without a version is refused (Debian's 20.10 CLI refuses it; 24+ read it as the
    newest 3.x). env_file,
    secrets/configs `file:` and the compose files themselves must resolve (symlinks
    followed) inside `root` (default: the working dir, i.e. the recipe folder), since
    the CLI reads them on the bot's machine and a recipe must not read the bot's files.
    Not done: the full JSON-schema validation (only the structure that matters here is
    checked), `extends`, compose v2 files. Raises ComposeError listing every problem.
    """
    if not files:
        raise ComposeError("no compose files given")
    working_dir = working_dir or files[0].parent
    root = root or working_dir
    problems = Problems()
    docs: list[dict[str, Any]] = []
    for path in files:
        fname = path.name
        if not inside(path, root):
            problems.add(outside_message(fname, "COMPOSE_FILE", str(path), root))
            continue
        try:
            raw = load_yaml(path.read_text())
        except OSError as e:
            problems.add(f"{fname}: cannot read: {e.strerror or e}")
            continue
        except yaml.YAMLError as e:
            problems.add(f"{fname}: invalid YAML: {' '.join(str(e).split())}")
            continue
        if not isinstance(raw, dict):
            problems.add(f"{fname}: top level must be a mapping")
            continue
        version = str(raw.get("version", "") or "")
        if not re.fullmatch(r"3(\.\d+)?", version):
            problems.add(f"{fname}: unsupported Compose file version: {version or '1.0'}")
        doc: dict[str, Any] = {"version": version}
        for key, value in raw.items():
            if key in ("services", *SECTIONS):
                doc[key] = interpolate(value, (key,), env, fname, problems)
            elif key != "version":
                doc[key] = value
        check_types(doc, fname, problems)
        services = doc.get("services")
        sections = {s: doc.get(s) for s in SECTIONS}
        if not isinstance(services, dict | type(None)) or not all(
            isinstance(v, dict | type(None)) for v in sections.values()
        ):
            continue
        norm: dict[str, Any] = {"version": version, "services": {}}
        for name, svc in (services or {}).items():
            if isinstance(svc, dict | type(None)):
                norm["services"][str(name)] = normalise.service(
                    str(name), svc or {}, working_dir, env, fname, problems, root
                )
        for section, items in sections.items():
            if items is not None:
                norm[section] = normalise.section(
                    section, items, working_dir, fname, problems, root
                )
        docs.append(norm)
    if unset is not None:
        unset.update(problems.missing)
    if problems.missing and not allow_missing:
        for name, where in sorted(problems.missing.items()):
            problems.add(f"variable {name} is not set (used in {where})")
    if not problems.items and docs:
        merged = merge(docs)
        if not merged["services"]:
            problems.add("no services defined")
        if check_refs:
            _check_references(merged, problems)
        if not problems.items:
            return merged
    raise ComposeError("invalid compose files:\n" + "\n".join(f"- {p}" for p in problems.items))
