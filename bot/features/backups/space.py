"""Room on disk for a restore drill: the snapshot's own listing says how much it will
write, the file system says how much is free, and the drill refuses before it starts
when that does not fit (it used to fill the bot's data disk with whole snapshots)."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.errors import UserError
from bot.fmt import code, human_bytes

# Kept free beyond the files themselves: restic's directories, metadata and cache, and
# room for the bot's own database to keep writing meanwhile.
MARGIN = 64 * 1024 * 1024
MARGIN_SHARE = 0.05


def needed(size: int) -> int:
    """Bytes a restore of `size` bytes of files needs free to be allowed."""
    return size + max(MARGIN, int(size * MARGIN_SHARE))


def check_room(place: Path, size: int) -> None:
    """UserError with a sentence and the next step when `place` has less free space
    than a restore of `size` bytes of files needs. Blocking (statvfs): in a thread."""
    free = shutil.disk_usage(place).free
    if free < needed(size):
        raise UserError(
            f"not enough room for the drill in {code(str(place))}: the snapshot restores "
            f"{human_bytes(size)}, {human_bytes(free)} is free there (with a margin of "
            f"{human_bytes(needed(size) - size)}); free some space or set "
            "`backups.drill_dir` to a larger place"
        )
