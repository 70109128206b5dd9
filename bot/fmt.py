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
