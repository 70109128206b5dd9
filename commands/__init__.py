"""What members can do: one module per family. Each module declares a CommandGroup."""

from bot.core.registry import CommandGroup
from commands import (
    approvals,
    apps,
    audit,
    backup,
    cmd,
    create,
    help,
    incidents,
    jobs,
    nodes,
    upgrade,
)

GROUPS: list[CommandGroup] = [
    help.group,
    apps.group,
    cmd.group,
    nodes.group,
    create.group,
    jobs.group,
    approvals.group,
    audit.group,
    backup.group,
    upgrade.group,
    incidents.group,
]
