"""The parts of the compose file schema (3.x) that matter for a swarm deploy."""

from __future__ import annotations

import re
from typing import Any

from bot.ops.compose.problems import Problems

TOP_KEYS = {"version", "services", "networks", "volumes", "secrets", "configs"}
SECTIONS = ("networks", "volumes", "secrets", "configs")
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


def check_types(doc: dict[str, Any], fname: str, problems: Problems) -> None:
    """The parts of the compose schema that matter for a swarm deploy, all reported."""
    for key in doc:
        if key not in TOP_KEYS and not str(key).startswith("x-"):
            problems.add(f"{fname}: additional property {key!r} is not allowed")
    services = doc.get("services")
    if services is None:
        services = {}
    if not isinstance(services, dict):
        problems.add(f"{fname}: services must be a mapping")
        return
    for section in SECTIONS:
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
            _check_values(svc.get(key), f"{where}.{key}", problems)
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
        _check_values(deploy.get("labels"), f"{where}.deploy.labels", problems)


def _check_values(value: Any, where: str, problems: Problems) -> None:
    # The CLI's schema: a mapping's values are strings, numbers or null (so `true`
    # must be quoted; list items are "k=v" strings).
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float | type(None)):
                problems.add(f"{where}.{k} must be a string, number or null")
