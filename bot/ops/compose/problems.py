"""What goes wrong while loading compose files, gathered before giving up."""

from __future__ import annotations

from bot.errors import UserError


class ComposeError(UserError):
    """The compose files are not valid; the message lists every problem."""


class Problems:
    """Everything wrong with a set of compose files, each said once, in order."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.missing: dict[str, str] = {}  # variable -> first place it is used

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


def path_str(path: tuple[str, ...]) -> str:
    return ".".join(path).replace(".[]", "[]")
