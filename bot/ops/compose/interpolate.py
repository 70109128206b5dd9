"""Variables in compose files, substituted and type-cast as the docker CLI does."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from bot.ops.compose.problems import Problems, path_str

# The docker CLI's template pattern (cli/compose/template), quirks included: an
# unbraced "$VAR-x" is VAR with the default "x", up to the next "}"; defaults do
# not nest ("${A:-${B}}" is A, else the text "${B}").
_SUBST = r"[_a-z][_a-z0-9]*(?::?[-?][^}]*)?"
_VAR_RE = re.compile(
    rf"\$(?i:(?P<escaped>\$)|(?P<named>{_SUBST})|\{{(?P<braced>{_SUBST})\}}|(?P<invalid>))"
)


class TemplateError(Exception):
    pass


def substitute(text: str, env: Mapping[str, str], missing: set[str]) -> str:
    """Interpolate one string as the docker CLI does; unset plain variables are
    collected in `missing` (and become "")."""

    def repl(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        sub = m.group("named") or m.group("braced")
        if not sub:
            raise TemplateError(f"invalid interpolation format: {text!r}")
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
                    raise TemplateError(f"required variable {name} is missing a value: {message}")
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


def interpolate(
    value: Any, path: tuple[str, ...], env: Mapping[str, str], fname: str, problems: Problems
) -> Any:
    """Substitute every string under `value` (mapping keys are left alone, as the CLI
    does), then cast the typed ones."""
    if isinstance(value, str):
        missing: set[str] = set()
        try:
            new = substitute(value, env, missing)
        except TemplateError as e:
            problems.add(f"{fname}: {path_str(path)}: {e}")
            return value
        for name in sorted(missing):
            problems.missing.setdefault(name, f"{fname}: {path_str(path)}")
        cast = _cast_for(path)
        if cast is None:
            return new
        kind = cast.__name__[4:]
        try:
            typed = cast(new)
        except ValueError:
            problems.add(f"{fname}: {path_str(path)}: {new!r} is not a valid {kind}")
            return new
        if new == value:
            # The CLI casts only what interpolation changed: a quoted "3" written as
            # such stays a string, which its schema then refuses.
            problems.add(f"{fname}: {path_str(path)}: {new!r} must be a {kind}, not a string")
            return new
        return typed
    if isinstance(value, dict):
        return {k: interpolate(v, (*path, str(k)), env, fname, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, (*path, "[]"), env, fname, problems) for v in value]
    return value
