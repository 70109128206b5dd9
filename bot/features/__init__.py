"""What the co-op's infrastructure does: apps, backups, upgrades."""
