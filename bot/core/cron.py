"""Crontab lines read as crontab reads them, for the scheduler and the config check."""

from __future__ import annotations

import re
from datetime import tzinfo

from apscheduler.triggers.cron import CronTrigger

_NUMERIC_DAYS = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")


def crontab_trigger(expr: str, zone: tzinfo) -> CronTrigger:
    """CronTrigger.from_crontab, with crontab's weekday numbers (0 or 7 = Sunday):
    APScheduler 3 counts 0 as Monday (its issue 286), so "0 5 * * 0" would fire on
    Mondays. Numeric weekdays are expanded and renumbered; names are left alone."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"Wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekdays = fields
    parts: list[str] = []
    for part in weekdays.split(","):
        m = _NUMERIC_DAYS.match(part)
        if m is None or part == "*":
            parts.append(part)  # *, mon, sat-sun, ...: APScheduler reads these right
            continue
        first, last, step = m.groups()
        start = 0 if first == "*" else int(first)
        end = int(last) if last is not None else (6 if step or first == "*" else start)
        if end > 7:
            raise ValueError(f"day of week {part!r}: 0-7 (0 and 7 are Sunday)")
        parts += [str((d + 6) % 7) for d in range(start, end + 1, int(step or 1))]
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=",".join(dict.fromkeys(parts)),
        timezone=zone,
    )
