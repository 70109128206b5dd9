"""The docker CLI's `docker stack config` as an oracle for the bot's compose loader.

Shared by tests/integration/test_compose_golden.py and bench/compose_render.py:
- `combinations(recipe)`: the overlay sets a recipe's .env.sample offers (its
  COMPOSE_FILE lines, commented or not), each as the .env text an operator would
  have after uncommenting that line;
- `app_env(recipe, text, domain)`: the environment abra deploys with (the .env values,
  DOMAIN, STACK_NAME, the `export X=Y` lines of abra.sh);
- `docker_stack_config(...)`: the CLI's rendering; `bot_render(...)`: the bot's;
- `view(config)` and `differences(a, b)`: the two renderings in one representation.

`docker stack config` needs no daemon (checked with the 28.2 CLI: it renders with
DOCKER_HOST pointing at a socket that does not exist). DOCKER_HOST is set to such a
socket anyway so the machine's own daemon is never asked anything.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.ops import abra, dotenv
from bot.ops.compose import load_compose
from bot.ops.compose.yamlgo import load_yaml

DOCKER_28 = "/usr/local/bin/docker"
_NO_DAEMON = "unix:///nonexistent/coopbot-no-daemon.sock"
_COMPOSE_LINE = re.compile(r"^(?P<hash>\s*#\s*)(?P<line>COMPOSE_FILE=.*)$")


def cli_has_stack_config(cli: str = DOCKER_28) -> bool:
    """Only docker CLI 24+ has `stack config` (Debian's 20.10 has not)."""
    if not os.access(cli, os.X_OK):
        return False
    probe = subprocess.run(
        [cli, "stack", "config", "--help"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


@dataclass(frozen=True)
class Combination:
    label: str  # what was uncommented, for messages
    env_text: str  # the .env text with it uncommented


def combinations(recipe: Path) -> list[Combination]:
    """The sample as shipped, each commented COMPOSE_FILE line uncommented on its own,
    and all of them uncommented at once (chained samples then merge every overlay)."""
    text = (recipe / ".env.sample").read_text()
    lines = text.splitlines()
    commented = [i for i, line in enumerate(lines) if _COMPOSE_LINE.match(line)]

    def uncomment(indices: list[int]) -> str:
        out = list(lines)
        for i in indices:
            match = _COMPOSE_LINE.match(out[i])
            assert match is not None
            out[i] = match["line"]
        return "\n".join(out) + "\n"

    found = [Combination("as shipped", text)]
    for i in commented:
        found.append(Combination(f"line {i + 1}: {lines[i].strip()}", uncomment([i])))
    if len(commented) > 1:
        found.append(Combination("every COMPOSE_FILE line", uncomment(commented)))
    return found


def _dotenv_values(path: Path, text: str) -> dict[str, str]:
    """The .env values as abra's godotenv reads them ($VAR and ${VAR} expanded from
    earlier keys, so `COMPOSE_FILE="$COMPOSE_FILE:x.yml"` chains)."""
    return dotenv.as_dict(dotenv.parse(text, source=str(path)))


def app_env(recipe: Path, env_text: str, domain: str = "app.example.com") -> dict[str, str]:
    """The variables `abra app deploy` interpolates with, for an app at `domain`."""
    values = _dotenv_values(recipe / ".env.sample", env_text)
    values["DOMAIN"] = domain
    values["STACK_NAME"] = domain.replace(".", "_")
    if (recipe / "abra.sh").is_file():
        values.update(abra.read_exports(recipe / "abra.sh"))
    return values


def compose_files(env: Mapping[str, str]) -> list[str]:
    return [f for f in (env.get("COMPOSE_FILE") or "compose.yml").split(":") if f]


def process_env(env: Mapping[str, str], home: Path) -> dict[str, str]:
    """The whole environment both renderers see: the app's, and what the CLI needs
    (HOME and DOCKER_CONFIG inside the test's own folder, no daemon)."""
    return {
        "PATH": os.defpath,
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        **env,
        "DOCKER_HOST": _NO_DAEMON,
    }


@dataclass(frozen=True)
class Rendering:
    config: dict[str, Any] | None  # None when the renderer refused the files
    error: str = ""


def docker_stack_config(
    recipe: Path, files: list[str], env: Mapping[str, str], cli: str = DOCKER_28
) -> Rendering:
    args = [cli, "stack", "config"]
    for f in files:
        args += ["-c", f]
    done = subprocess.run(
        args, cwd=recipe, env=dict(env), capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode:
        return Rendering(None, done.stderr.strip() or done.stdout.strip())
    # The CLI's output is written by Go's yaml.v3, so it is read with yaml.v3's rules:
    # PyYAML's YAML 1.1 would take e.g. an unquoted 2001-12-14T21:59:43 for a date.
    return Rendering(load_yaml(done.stdout))


def bot_render(recipe: Path, files: list[str], env: Mapping[str, str]) -> Rendering:
    """The bot's loader as Swarm.config calls it; unset variables are allowed here
    because the CLI allows them (the bot's stricter check is tested on its own)."""
    from bot.errors import UserError

    try:
        return Rendering(load_compose([recipe / f for f in files], env, allow_missing=True))
    except UserError as e:
        return Rendering(None, str(e))


# ------------------------------------------------------------ one representation

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_KEYS = {
    "interval", "timeout", "start_period", "start_interval", "delay", "window", "monitor",
    "stop_grace_period",
}  # fmt: skip


def _seconds(value: Any) -> Any:
    """Go durations ("2m0s", the CLI's output) and compose ones ("2m", "90s", the
    files' own spelling) as seconds: the same duration written two ways."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return value
    return round(sum(float(n) * _UNIT[u] for n, u in parts), 9)


_SIZE = re.compile(r"(?i)(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?")


def _bytes(value: Any) -> Any:
    """Memory sizes: the CLI prints a byte count, a file may say "1024M"."""
    if isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        power = " kmgtp".index(m[2].lower() or " ")
        return int(float(m[1]) * 1024**power)
    return value


def _normalise(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out[str(k)] = _normalise(v, str(k))
        return out
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if key in _DURATION_KEYS:
        return _seconds(value)
    if key == "memory":
        return _bytes(value)
    return value


def _as_set(items: list[Any] | None) -> list[Any]:
    # A service's secrets, configs and mounts are sets to swarm (the CLI sorts the
    # merged ones; either order gives the same service), so order is not compared.
    return sorted(items or [], key=lambda i: yaml.safe_dump(i, sort_keys=True))


SERVICE_FIELDS = (
    "image", "environment", "labels", "command", "entrypoint", "healthcheck", "secrets",
    "configs", "volumes", "networks", "ports", "user", "working_dir", "hostname",
    "stop_grace_period", "logging", "env_file", "extra_hosts", "cap_add", "cap_drop",
    "sysctls", "ulimits", "tmpfs", "read_only", "init",
)  # fmt: skip
DEPLOY_FIELDS = (
    "mode", "endpoint_mode", "labels", "replicas", "update_config", "rollback_config",
    "placement", "resources", "restart_policy",
)  # fmt: skip
TOP_SECTIONS = ("secrets", "configs", "volumes", "networks")


def view(config: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a rendering that become the deployed stack, in one representation."""
    services: dict[str, Any] = {}
    for name, svc in (config.get("services") or {}).items():
        svc = _normalise(svc or {})
        one: dict[str, Any] = {k: svc.get(k) for k in SERVICE_FIELDS}
        for key in ("secrets", "configs", "volumes"):
            one[key] = _as_set(one[key])
        deploy = svc.get("deploy") or {}
        one["deploy"] = {k: deploy.get(k) for k in DEPLOY_FIELDS}
        services[str(name)] = one
    out: dict[str, Any] = {"services": services}
    for section in TOP_SECTIONS:
        out[section] = _normalise(config.get(section) or {})
    return out


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Field-by-field differences, each as "path: expected != actual"."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found: list[str] = []
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                found.append(f"{where}: {expected[key]!r} missing from the bot's")
            elif key not in expected:
                found.append(f"{where}: the bot has {actual[key]!r}, the CLI nothing")
            else:
                found += differences(expected[key], actual[key], where)
        return found
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for d in differences(e, a, f"{path}[{i}]")]  # fmt: skip
    if expected != actual:
        return [f"{path}: CLI {expected!r} != bot {actual!r}"]
    return []
