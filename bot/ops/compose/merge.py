"""Overlays merged onto the base, in COMPOSE_FILE order, by the docker CLI's rules
(cli/compose/loader/merge.go): services with mergo's WithOverride and
WithAppendSlice plus the CLI's special cases; top-level entries replaced whole."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.ops.compose.schema import SECTIONS


def _order_key(value: Any) -> tuple[int, int, str]:
    # Unset sorts as Go's zero value (0 or ""): first.
    if value is None:
        return (0, 0, "")
    if isinstance(value, int):
        return (0, value, "")
    return (1, 0, str(value))


def _merge_keyed(base: list[Any], over: list[Any], key: Callable[[Any], Any]) -> list[Any]:
    """Merge two lists of mappings by `key`, the override winning, sorted by it (the
    CLI keys and sorts volumes by target, secrets/configs by source, ports by the
    published port: an overlay's "80" replaces the base's "80:80")."""
    merged = {key(i): i for i in base}
    merged.update({key(i): i for i in over})
    return sorted(merged.values(), key=lambda i: _order_key(key(i)))


def _deep_merge(base: Any, over: Any) -> Any:
    """mergo's WithOverride + WithAppendSlice: mappings merge key by key, lists are
    appended, a set value replaces (an unset one doesn't)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _deep_merge(base.get(k), v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return base if over is None else over


def _merge_networks(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    # mergeServiceNetworkConfig: an overlay's settings for a network replace the
    # aliases (even with none) and set the addresses it gives; a bare name keeps
    # the base's settings.
    out = dict(base)
    for name, value in over.items():
        old = out.get(name)
        if not isinstance(old, dict) or not isinstance(value, dict) or not value:
            out[name] = value if (value or name not in out) else old
            continue
        merged = {**old, "aliases": value.get("aliases")}
        for key in ("ipv4_address", "ipv6_address"):
            if value.get(key):
                merged[key] = value[key]
        out[name] = {k: v for k, v in merged.items() if v is not None}
    return out


def _merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key not in out:
            out[key] = value
        elif key in ("command", "entrypoint"):
            if value:  # the CLI's mergeShellCommand: a non-empty override replaces
                out[key] = value
        elif key in ("secrets", "configs"):
            out[key] = _merge_keyed(out[key] or [], value or [], lambda i: i.get("source"))
        elif key == "volumes":
            out[key] = _merge_keyed(out[key] or [], value or [], lambda i: i.get("target"))
        elif key == "ports":
            out[key] = _merge_keyed(out[key] or [], value or [], lambda i: i.get("published"))
        elif key == "networks" and isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _merge_networks(out[key], value)
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


def merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The files' normalised documents merged in order; services sorted by name."""
    merged = docs[0]
    for over in docs[1:]:
        merged["version"] = over["version"] or merged["version"]
        for name, svc in over["services"].items():
            base = merged["services"].get(name)
            merged["services"][name] = svc if base is None else _merge_service(base, svc)
        for section in SECTIONS:
            if section in over:
                merged[section] = {**merged.get(section, {}), **over[section]}
    merged["services"] = dict(sorted(merged["services"].items()))
    return merged
