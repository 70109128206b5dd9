"""One compose file's services and sections in the CLI's long form.

Every short syntax becomes what `docker stack config` prints: environment and
labels as mappings (env_file read in), command/entrypoint/healthcheck.test as
lists, volumes, ports, secrets and configs in long syntax, service networks as a
mapping, relative host paths absolute. Files the CLI would read on the bot's own
machine (env_file, secrets/configs `file:`) must stay inside the recipe folder.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.ops.compose.problems import Problems
from bot.ops.compose.yamlgo import go_str


def labels(value: Any) -> dict[str, str]:
    """labels/deploy.labels/sysctls, list or mapping: a name alone is "" (the CLI's
    mapping-or-list without nil)."""
    if isinstance(value, dict):
        return {str(k): go_str(v) or "" for k, v in value.items()}
    out: dict[str, str] = {}
    for item in value or []:
        key, _, text = str(item).partition("=")
        out[key] = text
    return out


def _environment_items(value: Any) -> dict[str, str | None]:
    if isinstance(value, dict):
        return {str(k): go_str(v) for k, v in value.items()}
    out: dict[str, str | None] = {}
    for item in value or []:
        key, sep, text = str(item).partition("=")
        out[key] = text if sep else None
    return out


def _update_environment(
    environment: dict[str, str | None], items: Mapping[str, str | None], env: Mapping[str, str]
) -> None:
    # The CLI's updateEnvironment: a variable without a value, or with an empty one,
    # takes the value it has where the CLI runs, when it has one there.
    for key, value in items.items():
        environment[key] = env[key] if not value and key in env else value


def inside(path: Path | str, root: Path | None) -> bool:
    if root is None:
        return True
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def outside_message(fname: str, key: str, value: str, root: Path) -> str:
    return (
        f"{fname}: {key}: {value} is outside the recipe folder {root} "
        "(a recipe may only read its own files)"
    )


def read_env_file(path: Path, env: Mapping[str, str]) -> dict[str, str | None]:
    """An env_file as the CLI's kvfile reads it: leading blanks and # lines skipped,
    the value kept verbatim (no quotes removed, no trimming, no expansion), a name
    alone takes its value from the environment or is left out. ValueError on a name
    with blanks in it or no name, OSError if unreadable."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("contains invalid utf8 bytes") from None
    out: dict[str, str | None] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = raw.removesuffix("\r").lstrip()  # lines as Go's bufio.ScanLines cuts them
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.lstrip(" \t")
        if " " in name or "\t" in name:
            raise ValueError(f"line {number}: variable {name!r} contains whitespaces")
        if not name:
            raise ValueError(f"line {number}: no variable name")
        if sep:
            out[name] = value
        elif line.strip() in env:
            out[line.strip()] = env[line.strip()]
    return out


def host_path(source: str, working_dir: Path, env: Mapping[str, str]) -> str:
    if source.startswith("~"):
        home = env.get("HOME") or os.path.expanduser("~")
        return home + source[1:]
    if source.startswith("."):
        return os.path.normpath(working_dir / source)
    return source


_BIND_PROPAGATION = {"rprivate", "private", "rshared", "shared", "rslave", "slave"}


def _volume(item: Any, working_dir: Path, env: Mapping[str, str], where: str) -> dict[str, Any]:
    """A service volume in long syntax (short "src:target:mode" parsed as the CLI does)."""
    if isinstance(item, dict):
        long = dict(item)
        if long.get("type") == "bind" and isinstance(long.get("source"), str):
            long["source"] = host_path(long["source"], working_dir, env)
        return long
    parts = str(item).split(":")
    if len(parts) == 1:
        return {"type": "volume", "target": parts[0]}
    if len(parts) > 3:
        raise ValueError(f"{where}: invalid volume spec {item!r}")
    source, target = parts[0], parts[1]
    mode = parts[2].split(",") if len(parts) == 3 else []
    bind = source.startswith(("/", ".", "~"))
    vol: dict[str, Any] = {"type": "bind" if bind else "volume"}
    vol["source"] = host_path(source, working_dir, env) if bind else source
    vol["target"] = target
    for opt in mode:
        if opt == "ro":
            vol["read_only"] = True
        elif opt == "rw":
            pass
        elif opt == "nocopy":
            vol["volume"] = {"nocopy": True}
        elif opt in _BIND_PROPAGATION:
            vol["bind"] = {"propagation": opt}
        elif opt not in ("z", "Z", "delegated", "cached", "consistent"):
            raise ValueError(f"{where}: unknown volume option {opt!r} in {item!r}")
    return vol


def _port_range(text: str) -> list[int]:
    lo, sep, hi = text.partition("-")
    start, end = int(lo), int(hi) if sep else int(lo)
    if not (0 < start <= end <= 65535):
        raise ValueError(text)
    return list(range(start, end + 1))


def _ports(item: Any, where: str) -> list[Any]:
    """Short port syntax "[ip:][published:]target[/proto]" in long syntax (the CLI
    drops the IP with a warning: swarm's ingress listens on all addresses)."""
    if isinstance(item, dict):
        return [item]
    text = str(item)
    spec, _, proto = text.partition("/")
    proto = proto or "tcp"
    parts = spec.rsplit(":", 2)
    try:
        targets = _port_range(parts[-1])
        published = _port_range(parts[-2]) if len(parts) >= 2 and parts[-2] else []
    except ValueError:
        raise ValueError(f"{where}: invalid port spec {text!r}") from None
    if published and len(published) != len(targets):
        raise ValueError(f"{where}: port ranges differ in size in {text!r}")
    out = []
    for i, target in enumerate(targets):
        port: dict[str, Any] = {"mode": "ingress", "target": target}
        if published:
            port["published"] = published[i]
        port["protocol"] = proto
        out.append(port)
    return out


def service(
    name: str,
    svc: dict[str, Any],
    working_dir: Path,
    env: Mapping[str, str],
    fname: str,
    problems: Problems,
    root: Path | None,
) -> dict[str, Any]:
    where = f"{fname}: services.{name}"
    out = dict(svc)
    for key in ("command", "entrypoint"):
        if isinstance(out.get(key), str):
            try:
                out[key] = shlex.split(out[key])
            except ValueError as e:
                problems.add(f"{where}.{key}: {e}")
    healthcheck = out.get("healthcheck")
    if isinstance(healthcheck, dict) and isinstance(healthcheck.get("test"), str):
        out["healthcheck"] = {**healthcheck, "test": ["CMD-SHELL", healthcheck["test"]]}
    environment: dict[str, str | None] = {}
    env_files = out.get("env_file")
    if env_files is not None:
        files = [env_files] if isinstance(env_files, str) else list(env_files)
        out["env_file"] = files
        for f in files:
            path = working_dir / str(f)
            if not inside(path, root):
                assert root is not None
                problems.add(outside_message(fname, f"services.{name}.env_file", str(f), root))
                continue
            try:
                _update_environment(environment, read_env_file(path, env), env)
            except (OSError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else e
                problems.add(f"{where}.env_file: {f}: {reason}")
    if "environment" in out or env_files is not None:
        _update_environment(environment, _environment_items(out.get("environment")), env)
        out["environment"] = environment
    for key in ("labels", "sysctls"):
        if key in out:
            out[key] = labels(out[key])
    deploy = out.get("deploy")
    if isinstance(deploy, dict) and "labels" in deploy:
        out["deploy"] = {**deploy, "labels": labels(deploy["labels"])}
    for key in ("secrets", "configs"):
        if key in out:
            out[key] = [i if isinstance(i, dict) else {"source": str(i)} for i in out[key] or []]
    if isinstance(out.get("networks"), list):
        out["networks"] = {str(n): None for n in out["networks"]}
    try:
        if "volumes" in out:
            out["volumes"] = [
                _volume(v, working_dir, env, f"{where}.volumes") for v in out["volumes"] or []
            ]
        if "ports" in out:
            out["ports"] = [p for i in out["ports"] or [] for p in _ports(i, f"{where}.ports")]
    except ValueError as e:
        problems.add(str(e))
    return out


def section(
    kind: str,
    items: dict[str, Any],
    working_dir: Path,
    fname: str,
    problems: Problems,
    root: Path | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in items.items():
        entry = dict(value) if isinstance(value, dict) else {}
        if value is not None and not isinstance(value, dict):
            problems.add(f"{fname}: {kind}.{name} must be a mapping")
        if entry.get("external") and not entry.get("name"):
            entry["name"] = str(name)
        if isinstance(entry.get("file"), str):
            written = entry["file"]
            entry["file"] = os.path.normpath(working_dir / written)
            if not inside(entry["file"], root):
                assert root is not None
                problems.add(outside_message(fname, f"{kind}.{name}.file", written, root))
        out[str(name)] = entry
    return out
