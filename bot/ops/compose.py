"""Compose files loaded, interpolated and merged the way `docker stack deploy` does.

Debian's docker 20.10 CLI has no `docker stack config` (it came with 24.0), and no
maintained Python library loads compose v3 files for swarm (docker-compose v1 is
unmaintained and pins old dependencies), so this follows the CLI's own loader.
The bot needs the merged result before deploying: to validate the files, and to
know the images to check and pin, the secrets to check, and the services to label.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from bot.errors import UserError


class ComposeError(UserError):
    """The compose files are not valid; the message lists every problem."""


# The docker CLI's template pattern (cli/compose/template), quirks included: an
# unbraced "$VAR-x" is VAR with the default "x", up to the next "}".
_SUBST = r"[_a-z][_a-z0-9]*(?::?[-?][^}]*)?"
_VAR_RE = re.compile(
    rf"\$(?i:(?P<escaped>\$)|(?P<named>{_SUBST})|\{{(?P<braced>{_SUBST})\}}|(?P<invalid>))"
)


class _TemplateError(Exception):
    pass


def _substitute(text: str, env: Mapping[str, str], missing: set[str]) -> str:
    """Interpolate one string as the docker CLI does; unset plain variables are
    collected in `missing` (and become "")."""

    def repl(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        sub = m.group("named") or m.group("braced")
        if not sub:
            raise _TemplateError(f"invalid interpolation format: {text!r}")
        # Same order as the CLI: soft default, hard default, required non-empty, required.
        if ":-" in sub:
            name, default = sub.split(":-", 1)
            return env.get(name) or default
        if "-" in sub:
            name, default = sub.split("-", 1)
            return env.get(name, default)
        for sep in (":?", "?"):
            if sep in sub:
                name, message = sub.split(sep, 1)
                value = env.get(name)
                if value is None or (sep == ":?" and value == ""):
                    raise _TemplateError(f"required variable {name} is missing a value: {message}")
                return value
        if sub not in env:
            missing.add(sub)
            return ""
        return env[sub]

    return _VAR_RE.sub(repl, text)


def _to_int(v: str) -> Any:
    return int(v)


def _to_float(v: str) -> Any:
    return float(v)


def _to_bool(v: str) -> Any:
    low = v.lower()
    if low in ("y", "yes", "true", "on"):
        return True
    if low in ("n", "no", "false", "off"):
        return False
    raise ValueError(f"invalid boolean: {v}")


# The CLI's interpolateTypeCastMapping: strings at these paths are converted after
# interpolation. "*" matches any key, "[]" any list item.
_CASTS: list[tuple[tuple[str, ...], Callable[[str], Any]]] = [
    (("services", "*", "configs", "[]", "mode"), _to_int),
    (("services", "*", "secrets", "[]", "mode"), _to_int),
    (("services", "*", "healthcheck", "retries"), _to_int),
    (("services", "*", "healthcheck", "disable"), _to_bool),
    (("services", "*", "deploy", "replicas"), _to_int),
    (("services", "*", "deploy", "update_config", "parallelism"), _to_int),
    (("services", "*", "deploy", "update_config", "max_failure_ratio"), _to_float),
    (("services", "*", "deploy", "rollback_config", "parallelism"), _to_int),
    (("services", "*", "deploy", "rollback_config", "max_failure_ratio"), _to_float),
    (("services", "*", "deploy", "restart_policy", "max_attempts"), _to_int),
    (("services", "*", "deploy", "placement", "max_replicas_per_node"), _to_int),
    (("services", "*", "ports", "[]", "target"), _to_int),
    (("services", "*", "ports", "[]", "published"), _to_int),
    (("services", "*", "ulimits", "*"), _to_int),
    (("services", "*", "ulimits", "*", "hard"), _to_int),
    (("services", "*", "ulimits", "*", "soft"), _to_int),
    (("services", "*", "privileged"), _to_bool),
    (("services", "*", "read_only"), _to_bool),
    (("services", "*", "stdin_open"), _to_bool),
    (("services", "*", "tty"), _to_bool),
    (("services", "*", "volumes", "[]", "read_only"), _to_bool),
    (("services", "*", "volumes", "[]", "volume", "nocopy"), _to_bool),
    (("networks", "*", "external"), _to_bool),
    (("networks", "*", "internal"), _to_bool),
    (("networks", "*", "attachable"), _to_bool),
    (("volumes", "*", "external"), _to_bool),
    (("secrets", "*", "external"), _to_bool),
    (("configs", "*", "external"), _to_bool),
]


def _cast_for(path: tuple[str, ...]) -> Callable[[str], Any] | None:
    for pattern, cast in _CASTS:
        if len(pattern) == len(path) and all(
            (p == "*" and q != "[]") or p == q for p, q in zip(pattern, path, strict=True)
        ):
            return cast
    return None


def _path_str(path: tuple[str, ...]) -> str:
    return ".".join(path).replace(".[]", "[]")


class _Problems:
    """Everything wrong with a set of compose files, gathered before giving up."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.missing: dict[str, str] = {}  # variable -> first place it is used

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


def _interpolate(
    value: Any, path: tuple[str, ...], env: Mapping[str, str], fname: str, problems: _Problems
) -> Any:
    if isinstance(value, str):
        missing: set[str] = set()
        try:
            new = _substitute(value, env, missing)
        except _TemplateError as e:
            problems.add(f"{fname}: {_path_str(path)}: {e}")
            return value
        for name in sorted(missing):
            problems.missing.setdefault(name, f"{fname}: {_path_str(path)}")
        cast = _cast_for(path)
        if cast is None:
            return new
        try:
            return cast(new)
        except ValueError:
            problems.add(f"{fname}: {_path_str(path)}: {new!r} is not a valid {cast.__name__[4:]}")
            return new
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, str(k)), env, fname, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, "[]"), env, fname, problems) for v in value]
    return value


_TOP_KEYS = {"version", "services", "networks", "volumes", "secrets", "configs"}
_SECTIONS = ("networks", "volumes", "secrets", "configs")
# Compose file format 3.x service keys (docker CLI's config_schema_v3.x).
_SERVICE_KEYS = {
    "build", "cap_add", "cap_drop", "cgroup_parent", "command", "configs", "container_name",
    "credential_spec", "depends_on", "deploy", "devices", "dns", "dns_search", "domainname",
    "entrypoint", "env_file", "environment", "expose", "external_links", "extra_hosts",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels", "links",
    "logging", "mac_address", "network_mode", "networks", "pid", "ports", "privileged",
    "read_only", "restart", "secrets", "security_opt", "shm_size", "stdin_open",
    "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "ulimits", "user",
    "userns_mode", "volumes", "working_dir",
}  # fmt: skip
_DEPLOY_KEYS = {
    "mode", "endpoint_mode", "replicas", "labels", "rollback_config", "update_config",
    "resources", "restart_policy", "placement",
}  # fmt: skip


def _check_types(doc: dict[str, Any], fname: str, problems: _Problems) -> None:
    """The parts of the compose schema that matter for a swarm deploy, all reported."""
    for key in doc:
        if key not in _TOP_KEYS and not str(key).startswith("x-"):
            problems.add(f"{fname}: additional property {key!r} is not allowed")
    services = doc.get("services")
    if services is None:
        services = {}
    if not isinstance(services, dict):
        problems.add(f"{fname}: services must be a mapping")
        return
    for section in _SECTIONS:
        if not isinstance(doc.get(section) or {}, dict):
            problems.add(f"{fname}: {section} must be a mapping")
    for name, svc in services.items():
        where = f"{fname}: services.{name}"
        if not re.fullmatch(r"[a-zA-Z0-9._-]+", str(name)):
            problems.add(f"{where}: invalid service name")
        if svc is None:
            continue
        if not isinstance(svc, dict):
            problems.add(f"{where} must be a mapping")
            continue
        for key in svc:
            if key not in _SERVICE_KEYS and not str(key).startswith("x-"):
                problems.add(f"{where}: additional property {key!r} is not allowed")
        if "image" in svc and not isinstance(svc["image"], str):
            problems.add(f"{where}.image must be a string")
        for key in ("command", "entrypoint"):
            if key in svc and not isinstance(svc[key], str | list | type(None)):
                problems.add(f"{where}.{key} must be a string or a list")
        for key in ("environment", "labels"):
            if key in svc and not isinstance(svc[key], dict | list | type(None)):
                problems.add(f"{where}.{key} must be a mapping or a list")
        for key in ("volumes", "ports", "secrets", "configs"):
            if key in svc and not isinstance(svc[key], list | type(None)):
                problems.add(f"{where}.{key} must be a list")
        deploy = svc.get("deploy")
        if deploy is None:
            continue
        if not isinstance(deploy, dict):
            problems.add(f"{where}.deploy must be a mapping")
            continue
        for key in deploy:
            if key not in _DEPLOY_KEYS and not str(key).startswith("x-"):
                problems.add(f"{where}.deploy: additional property {key!r} is not allowed")
        replicas = deploy.get("replicas")
        if (  # strings were converted (or reported) by the interpolation casts
            replicas is not None
            and not isinstance(replicas, str)
            and (not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0)
        ):
            problems.add(f"{where}.deploy.replicas must be a non-negative integer")
        if deploy.get("mode") not in (None, "replicated", "global"):
            problems.add(f"{where}.deploy.mode must be replicated or global")
        if not isinstance(deploy.get("labels") or {}, dict | list):
            problems.add(f"{where}.deploy.labels must be a mapping or a list")


def _str_value(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _kv(value: Any, env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """environment/labels, list or mapping, as a mapping. For environment (`env`
    given) a bare "NAME" takes its value from the environment, as the CLI does."""
    out: dict[str, str | None] = {}
    items: list[tuple[str, str | None]] = []
    if isinstance(value, dict):
        items = [(str(k), _str_value(v)) for k, v in value.items()]
    else:
        for item in value or []:
            key, sep, text = str(item).partition("=")
            items.append((key, text if sep else None))
    for k, v in items:
        out[k] = env.get(k) if v is None and env is not None else v
    return out


def _read_env_file(path: Path, problems: _Problems, fname: str) -> dict[str, str | None]:
    try:
        text = path.read_text()
    except OSError as e:
        problems.add(f"{fname}: env_file {path}: {e.strerror or e}")
        return {}
    out: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, sep, v = line.partition("=")
        out[k.strip()] = v if sep else None
    return out


def _host_path(source: str, working_dir: Path, env: Mapping[str, str]) -> str:
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
            long["source"] = _host_path(long["source"], working_dir, env)
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
    vol["source"] = _host_path(source, working_dir, env) if bind else source
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


def _normalise_service(
    name: str,
    svc: dict[str, Any],
    working_dir: Path,
    env: Mapping[str, str],
    fname: str,
    problems: _Problems,
) -> dict[str, Any]:
    where = f"{fname}: services.{name}"
    out = dict(svc)
    for key in ("command", "entrypoint"):
        if isinstance(out.get(key), str):
            try:
                out[key] = shlex.split(out[key])
            except ValueError as e:
                problems.add(f"{where}.{key}: {e}")
    environment: dict[str, str | None] = {}
    env_files = out.get("env_file")
    if env_files is not None:
        files = [env_files] if isinstance(env_files, str) else list(env_files)
        out["env_file"] = files
        for f in files:
            environment.update(_read_env_file(working_dir / str(f), problems, fname))
    if "environment" in out or environment:
        environment.update(_kv(out.get("environment"), env))
        out["environment"] = environment
    if "labels" in out:
        out["labels"] = _kv(out["labels"])
    deploy = out.get("deploy")
    if isinstance(deploy, dict) and "labels" in deploy:
        out["deploy"] = {**deploy, "labels": _kv(deploy["labels"])}
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


def _normalise_section(
    section: str, items: dict[str, Any], working_dir: Path, fname: str, problems: _Problems
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in items.items():
        entry = dict(value) if isinstance(value, dict) else {}
        if value is not None and not isinstance(value, dict):
            problems.add(f"{fname}: {section}.{name} must be a mapping")
        if entry.get("external") and not entry.get("name"):
            entry["name"] = str(name)
        if isinstance(entry.get("file"), str):
            entry["file"] = os.path.normpath(working_dir / entry["file"])
        out[str(name)] = entry
    return out


def _merge_keyed(
    base: list[Any], over: list[Any], key: Callable[[Any], Any], order: str
) -> list[Any]:
    """Merge two lists of mappings by key, the override winning, sorted by `order`
    (the CLI sorts merged volumes by target, secrets/configs by source, ports by
    published port)."""
    merged = {key(i): i for i in base}
    merged.update({key(i): i for i in over})
    return sorted(merged.values(), key=lambda i: _order_key(i.get(order)))


def _order_key(value: Any) -> tuple[int, int, str]:
    # Unset sorts as Go's zero value (0 or ""): first.
    if value is None:
        return (0, 0, "")
    if isinstance(value, int):
        return (0, value, "")
    return (1, 0, str(value))


def _deep_merge(base: Any, over: Any) -> Any:
    """mergo's WithOverride + WithAppendSlice, as the CLI merges services: mappings
    merge key by key, lists are appended, a set value replaces (an unset one doesn't)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _deep_merge(base.get(k), v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return base if over is None else over


def _merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key not in out:
            out[key] = value
        elif key in ("command", "entrypoint"):
            if value:  # the CLI's mergeShellCommand: a non-empty override replaces
                out[key] = value
        elif key in ("secrets", "configs"):
            out[key] = _merge_keyed(
                out[key] or [], value or [], lambda i: i.get("source"), "source"
            )
        elif key == "volumes":
            out[key] = _merge_keyed(
                out[key] or [], value or [], lambda i: i.get("target"), "target"
            )
        elif key == "ports":
            out[key] = _merge_keyed(
                out[key] or [], value or [], lambda i: json.dumps(i, sort_keys=True), "published"
            )
        elif key == "logging" and isinstance(value, dict) and isinstance(out[key], dict):
            d1, d2 = out[key].get("driver"), value.get("driver")
            if d1 == d2 or not d1 or not d2:
                options = {**(out[key].get("options") or {}), **(value.get("options") or {})}
                out[key] = {**out[key], **value, "driver": d1 or d2, "options": options}
            else:
                out[key] = value
        else:
            out[key] = _deep_merge(out[key], value)
    return out


def _check_references(doc: dict[str, Any], problems: _Problems) -> None:
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
) -> dict[str, Any]:
    """Load, interpolate and merge compose files the way `docker stack deploy` does.

    Each file is parsed, interpolated from `env` (the CLI's rules: `$$`, `${X:-d}`,
    `${X-d}`, `${X:?msg}`, `${X?msg}`, the CLI's type casts), checked, normalised, then
    merged onto the previous ones (services key by key; lists appended, except
    volumes by target, secrets/configs by source and ports by value; command and
    entrypoint replaced; top-level networks/volumes/secrets/configs replaced entry by
    entry). Normalised: environment/labels/deploy.labels become mappings (env_file
    read in, bare names looked up in `env`), command/entrypoint lists, volumes/ports/
    secrets/configs long syntax, service networks a mapping, relative host paths
    absolute against the first file's directory (as the CLI does). Top-level x-*
    keys are dropped.

    Stricter than the CLI: an unset variable without a default is an error (the CLI
    silently uses ""), unless `allow_missing`; services must have an image and
    refer only to declared secrets, configs, networks and volumes. Not done: the full
    JSON-schema validation (only the structure that matters here is checked),
    `extends`, compose v2 files. Raises ComposeError listing every problem found.
    """
    if not files:
        raise ComposeError("no compose files given")
    working_dir = working_dir or files[0].parent
    problems = _Problems()
    docs: list[dict[str, Any]] = []
    for path in files:
        fname = path.name
        try:
            raw = yaml.safe_load(path.read_text())
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
            if key in ("services", *_SECTIONS):
                doc[key] = _interpolate(value, (key,), env, fname, problems)
            elif key != "version":
                doc[key] = value
        _check_types(doc, fname, problems)
        services = doc.get("services")
        sections = {s: doc.get(s) for s in _SECTIONS}
        if not isinstance(services, dict | type(None)) or not all(
            isinstance(v, dict | type(None)) for v in sections.values()
        ):
            continue
        norm: dict[str, Any] = {"version": version, "services": {}}
        for name, svc in (services or {}).items():
            if isinstance(svc, dict | type(None)):
                norm["services"][str(name)] = _normalise_service(
                    str(name), svc or {}, working_dir, env, fname, problems
                )
        for section, items in sections.items():
            if items is not None:
                norm[section] = _normalise_section(section, items, working_dir, fname, problems)
        docs.append(norm)
    if problems.missing and not allow_missing:
        for name, where in sorted(problems.missing.items()):
            problems.add(f"variable {name} is not set (used in {where})")
    if not problems.items and docs:
        merged = docs[0]
        for over in docs[1:]:
            merged["version"] = over["version"] or merged["version"]
            for name, svc in over["services"].items():
                base = merged["services"].get(name)
                merged["services"][name] = svc if base is None else _merge_service(base, svc)
            for section in _SECTIONS:
                if section in over:
                    merged[section] = {**merged.get(section, {}), **over[section]}
        merged["services"] = dict(sorted(merged["services"].items()))
        if not merged["services"]:
            problems.add("no services defined")
        _check_references(merged, problems)
        if not problems.items:
            return merged
    raise ComposeError("invalid compose files:\n" + "\n".join(f"- {p}" for p in problems.items))


# --------------------------------------------------------------------------- the adapter
