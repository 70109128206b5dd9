"""Shared vocabulary for showing and reading times (a leaf: imports nothing of the bot)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# --------------------------------------------------------------------------- RFC 3339
# Docker and restic both write Go's RFC 3339 with nanoseconds ("...:22.144768178Z" or
# an offset); datetime.fromisoformat in 3.11 takes at most microseconds, so the
# fraction is cut to six digits before it is parsed.

_RFC3339_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 time (any fraction, "Z" or an offset; none means UTC) as an aware
    UTC datetime. ValueError when `text` is not one."""
    m = _RFC3339_RE.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base, frac, zone = m.groups()
    micro = (frac or "").ljust(6, "0")[:6]
    zone = "+00:00" if zone in (None, "Z") else zone
    return datetime.fromisoformat(f"{base}.{micro}{zone}").astimezone(UTC)


# --------------------------------------------------------------------------- ages


def human_age(seconds: float) -> str:
    """3s, 12m, 2h 5m, 3d 4h (whole units, rounded down; negative counts as 0)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h {m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d {h}h" if h else f"{d}d"
