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


def human_bytes(n: float) -> str:
    """512 B, 1.5 KiB, 3.2 GiB (binary units, as restic and du -h show them)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- times for people
# Every UTC time the bot shows a person has this one shape, whatever the source
# (a datetime from docker or restic, or a store timestamp).


def utc_time(moment: datetime | float, *, seconds: bool = False, date: bool = True) -> str:
    """A time as people read it, e.g. 2026-03-01 14:05 UTC, from an aware datetime or a
    Unix timestamp; `seconds` adds them (the audit log), `date=False` leaves the day
    out (a deadline today)."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    shape = ("%Y-%m-%d " if date else "") + ("%H:%M:%S" if seconds else "%H:%M")
    return moment.astimezone(UTC).strftime(shape) + " UTC"


def code(text: str) -> str:
    """Text a member typed (or a log, a release note) as an inline code span, so none
    of it is read as Markdown: no link, image, mention or emphasis can ride along.
    The fence is one backtick longer than the longest run inside (CommonMark)."""
    flat = " ".join(text.split())
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def code_block(text: str) -> str:
    """Many lines of text from outside (logs, hook output, release notes) as a fenced
    code block, shown as typed and read as no Markdown. The fence is longer than any
    backtick run inside, so no line of the text can close it early (CommonMark)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"
