"""The restic adapter: `client` runs the binary (through `bot.ops.process`), `json`
parses what it prints. The names other modules import are re-exported here."""

from bot.fmt import human_age
from bot.ops.restic.client import Restic, check_snapshot_id, check_tag, mask_url
from bot.ops.restic.json import (
    BackupSummary,
    Progress,
    ResticError,
    Snapshot,
    classify_failure,
    locked_message,
    parse_backup_line,
    parse_forget,
    parse_go_duration,
    parse_lock,
    parse_lock_message,
    parse_ls,
    parse_ls_line,
    parse_snapshots,
    parse_stats,
    parse_version,
)

__all__ = [
    "BackupSummary",
    "Progress",
    "Restic",
    "ResticError",
    "Snapshot",
    "check_snapshot_id",
    "check_tag",
    "classify_failure",
    "human_age",  # moved to bot.fmt; re-exported until its users import it from there
    "locked_message",
    "mask_url",
    "parse_backup_line",
    "parse_forget",
    "parse_go_duration",
    "parse_lock",
    "parse_lock_message",
    "parse_ls",
    "parse_ls_line",
    "parse_snapshots",
    "parse_stats",
    "parse_version",
]
