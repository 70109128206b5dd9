"""YAML read the way the docker CLI's Go YAML library (gopkg.in/yaml.v3) reads it.

PyYAML follows YAML 1.1, where `yes`, `on` and `off` are booleans, `12:30` is a
base-60 number and `1e3` is a string; yaml.v3 reads those as the strings "yes",
"on", "off", "12:30" and the number 1000 (checked against `docker stack config`).
So plain scalars are resolved here as yaml.v3's resolve.go does: the true/false/
null words, Go's integer syntax (0x, 0o, 0b, a leading 0 for octal, `_` ignored),
then YAML 1.2 floats; timestamps become the text Go prints for a time.Time, which
is what the CLI renders. A key given twice in one mapping is an error, as in
yaml.v3. `go_str` turns a parsed number into the text Go's fmt would print.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

import yaml

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_GOTIME_TAG = "tag:coopbot,2026:gotime"

_WORDS = {
    **dict.fromkeys(("true", "True", "TRUE"), (_BOOL_TAG, True)),
    **dict.fromkeys(("false", "False", "FALSE"), (_BOOL_TAG, False)),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), (_NULL_TAG, None)),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), (_FLOAT_TAG, math.inf)),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), (_FLOAT_TAG, -math.inf)),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), (_FLOAT_TAG, math.nan)),
    "<<": (_MERGE_TAG, None),
}
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DIGITS = {16: "0123456789abcdefABCDEF", 8: "01234567", 2: "01", 10: "0123456789"}
# yaml.v3's allowedTimestampFormats: a date, a date with a time and a zone after a T,
# or a date with a time and no zone after a space.
_TIMESTAMP = re.compile(
    r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?:"
    r"[Tt](?P<H>\d{1,2}):(?P<M>\d{1,2}):(?P<S>\d{1,2})(?:\.(?P<f>\d+))?(?P<z>Z|[-+]\d{2}:\d{2})"
    r"| (?P<H2>\d{1,2}):(?P<M2>\d{1,2}):(?P<S2>\d{1,2})(?:\.(?P<f2>\d+))?)?"
)
_INT64 = 2**63


def _go_int(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 0, 64), then ParseUint: None if neither reads it."""
    sign, s = 1, text
    if s[:1] in "+-":
        sign, s = (-1 if s[0] == "-" else 1), s[1:]
    base = 10
    if len(s) > 1 and s[0] == "0":
        base, s = {"x": 16, "X": 16, "o": 8, "O": 8, "b": 2, "B": 2}.get(s[1], 8), s[1:]
        if base != 8 or s[0] in "oO":
            s = s[1:]
    if not s or any(c not in _DIGITS[base] for c in s):
        return None
    value = sign * int(s, base)
    return value if -_INT64 <= value < 2 * _INT64 else None  # int64, else uint64


def _resolve_plain(text: str) -> tuple[str, Any]:
    if text in _WORDS:
        return _WORDS[text]
    if text[:1] in "+-.0123456789":
        plain = text.replace("_", "")
        number = _go_int(plain)
        if number is not None:
            return _INT_TAG, number
        if _FLOAT.fullmatch(plain):
            return _FLOAT_TAG, float(plain)
    return _STR_TAG, text


def _go_time(m: re.Match[str]) -> str:
    """time.Time.String() of what yaml.v3 parses: "2006-01-02 15:04:05.999999999 -0700 MST"."""
    hour, minute, second = (
        (m["H"] or m["H2"] or 0),
        (m["M"] or m["M2"] or 0),
        (m["S"] or m["S2"] or 0),
    )
    fraction = (m["f"] or m["f2"] or "")[:9].rstrip("0")
    stamp = f"{int(m['y']):04d}-{int(m['m']):02d}-{int(m['d']):02d}"
    stamp += f" {int(hour):02d}:{int(minute):02d}:{int(second):02d}"
    if fraction:
        stamp += "." + fraction
    zone = m["z"]
    if zone is None or zone == "Z":
        return stamp + " +0000 UTC"
    offset = zone.replace(":", "")
    return f"{stamp} {offset} {offset}"


# libyaml's parser when PyYAML has it (several times faster); the resolver and the
# constructors stay the Python ones below either way.
_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BASE):  # type: ignore[valid-type,misc]
    """SafeLoader with yaml.v3's resolution of plain scalars."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            if value[:1].isdigit() and _TIMESTAMP.fullmatch(value):
                return _GOTIME_TAG
            return _resolve_plain(value)[0]
        return super().resolve(kind, value, implicit)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, dict | list):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"mapping key {key!r} already defined", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_plain(loader: _Loader, node: Any) -> Any:
    text = loader.construct_scalar(node)
    tag, value = _resolve_plain(text)
    # Quoted (style set; libyaml says "" for plain, PyYAML None) or explicitly tagged:
    # PyYAML's own reading of the tag.
    if node.style or tag != node.tag:
        return yaml.SafeLoader.yaml_constructors[node.tag](loader, node)
    return value


def _construct_time(loader: _Loader, node: Any) -> str:
    m = _TIMESTAMP.fullmatch(loader.construct_scalar(node))
    assert m is not None
    return _go_time(m)


for _tag in (_INT_TAG, _FLOAT_TAG, _BOOL_TAG, _NULL_TAG):
    _Loader.add_constructor(_tag, _construct_plain)
_Loader.add_constructor(_GOTIME_TAG, _construct_time)


def load_yaml(text: str) -> Any:
    """One YAML document as the CLI reads it; raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)


def _go_float(value: float) -> str:
    """fmt's %v of a float64 (strconv's shortest 'g'): the exponent form below 1e-4
    and from 1e6 on, e.g. 1.23456789e+08 (checked against the CLI)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exponent, int)
    point = len(digits) + exponent  # digits[:point] are the integer part
    exp = point - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def go_str(value: Any) -> str | None:
    """A parsed scalar as the CLI turns it into a string (environment, labels...)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)
