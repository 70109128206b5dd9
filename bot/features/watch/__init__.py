"""The swarm watch: incidents from the servers' events, told once, closed on recovery.

- rules.py: pure decisions (open, update, close) from snapshots, disks and alerts;
- report.py: the room's messages and the store's rows, quiet hours and the digest;
- watcher.py: `Watch`, the loops that feed the rules.
"""

from bot.features.watch.report import Reporter, in_span, parse_span
from bot.features.watch.rules import Decision, Disk, Incident, Rules, Thresholds, key_of
from bot.features.watch.watcher import Watch, disk_usage, thresholds

__all__ = [
    "Decision",
    "Disk",
    "Incident",
    "Reporter",
    "Rules",
    "Thresholds",
    "Watch",
    "disk_usage",
    "in_span",
    "key_of",
    "parse_span",
    "thresholds",
]
