"""Backups with restic (issue 5): being written."""

from __future__ import annotations

from bot.apps import Apps
from bot.config import BackupsConfig
from bot.store import Store


class Backups:
    def __init__(self, config: BackupsConfig, apps: Apps, store: Store) -> None:
        self.config = config
        self.apps = apps
        self.store = store
