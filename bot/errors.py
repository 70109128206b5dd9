"""The small error hierarchy. `UserError` text is shown to the room verbatim;
anything else is logged with its traceback and reported by incident id."""


class CoopbotError(Exception):
    """Base of every error coopbot raises on purpose."""


class ConfigError(CoopbotError):
    """The configuration is invalid; the message names every problem by key path."""


class AlreadyRunning(CoopbotError):
    """Another coopbot holds the data folder."""


class UserError(CoopbotError):
    """Something the member can fix: the message is posted to the room as is."""


class UsageError(UserError):
    """Arguments did not match the command's spec; carries the usage line."""

    def __init__(self, problem: str, usage: str) -> None:
        super().__init__(f"{problem}\nUsage: `{usage}`")
        self.problem = problem
        self.usage = usage


class PermissionDenied(UserError):
    """The member's role is too low for what they asked."""


class StalePlan(UserError):
    """What was planned (or voted for) no longer matches the world: nothing ran."""
