"""Upgrade checks and voted upgrades (issue 6): being written."""

from __future__ import annotations

from bot.apps import Apps
from bot.backups import Backups
from bot.config import Config
from bot.store import Store


class Upgrades:
    def __init__(self, config: Config, apps: Apps, store: Store, backups: Backups | None) -> None:
        self.config = config
        self.apps = apps
        self.store = store
        self.backups = backups
