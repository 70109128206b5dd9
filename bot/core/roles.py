"""Who may do what: the three roles a member can have in a room."""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    VIEWER = 0
    OPERATOR = 1
    ADMIN = 2

    @property
    def label(self) -> str:
        return self.name.lower()
