"""Upgrade checks and voted upgrades.

- plan.py: the data a check and a plan hold, and the pure decisions over them;
- render.py: the check and a plan as messages;
- service.py: `Upgrades`, the I/O (swarm listings, recipe fetches, registries, the deploy).
"""

from __future__ import annotations

from bot.features.upgrades.plan import (
    AppCheck,
    CheckReport,
    Drift,
    Problem,
    UpgradePlan,
    auto_patches,
    auto_refusal,
    drift_of,
    facts,
    is_major_step,
    newest_release,
    news,
    opted_in,
    split_pinned,
    steps_between,
)
from bot.features.upgrades.render import (
    excerpt,
    kind_label,
    plan_summary,
    render_report,
    restore_hint,
)
from bot.features.upgrades.service import AUTO_KEY, REPORTED_KEY, Upgrades

__all__ = [
    "AUTO_KEY",
    "REPORTED_KEY",
    "AppCheck",
    "CheckReport",
    "Drift",
    "Problem",
    "UpgradePlan",
    "Upgrades",
    "auto_patches",
    "auto_refusal",
    "drift_of",
    "excerpt",
    "facts",
    "is_major_step",
    "kind_label",
    "newest_release",
    "news",
    "opted_in",
    "plan_summary",
    "render_report",
    "restore_hint",
    "split_pinned",
    "steps_between",
]
