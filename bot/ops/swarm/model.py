"""The swarm adapter's data: what a service and a task look like to the bot, and its
error. Plain frozen dataclasses, no I/O; parse.py builds them from the SDK's JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.errors import UserError
from bot.labels import UpdateState

__all__ = [
    "ACTIVE_STATES",
    "FAILED_STATES",
    "RECENT_ERRORS",
    "STATE_ORDER",
    "Convergence",
    "ServiceInfo",
    "Status",
    "SwarmError",
    "TaskInfo",
    "UpdateState",
]

# How many distinct task errors ServiceInfo.recent_errors keeps.
RECENT_ERRORS = 5

# Task states in lifecycle order (the docker CLI's progress code orders them the same).
ACTIVE_STATES = (
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
)
FAILED_STATES = ("failed", "rejected")
STATE_ORDER = {
    s: i for i, s in enumerate((*ACTIVE_STATES, "complete", "shutdown", *FAILED_STATES), 1)
}


class SwarmError(UserError):
    """A swarm operation failed; the message is shown to the room as is."""


@dataclass(frozen=True)
class TaskInfo:
    id: str
    service: str  # the service's full name, "<stack>_<svc>"
    state: str
    desired_state: str
    error: str
    message: str
    image: str
    timestamp: str  # ISO 8601, UTC, "YYYY-MM-DDTHH:MM:SS.ffffffZ"
    # Beyond the brief's fields (defaults keep hand-built values short):
    slot: int | None = None  # replicated services; None for global ones
    node_id: str = ""
    up_to_date: bool = True  # the task runs the service's current spec


@dataclass(frozen=True)
class ServiceInfo:
    id: str
    name: str  # "<stack>_<svc>"
    short_name: str  # "<svc>"
    image: str  # as in the spec, may include @sha256:...
    replicas_desired: int | None  # None = global
    replicas_running: int
    # The daemon's string (compare with UpdateState members), or None for a service
    # never updated; kept a str so that a state newer than this code still shows.
    update_state: str | None
    update_message: str
    labels: dict[str, str]
    version: int
    has_previous_spec: bool
    previous_image: str | None
    recent_errors: list[str]  # distinct errors of failed/rejected tasks, newest first
    # Beyond the brief's fields: the daemon's times (ISO, UTC), which tell task errors
    # of this deploy from older ones.
    update_started_at: str | None = None  # UpdateStatus.StartedAt
    updated_at: str | None = None  # the spec's last change (each deploy changes it)


@dataclass(frozen=True)
class Convergence:
    ok: bool
    rolled_back_by_swarm: bool
    failures: list[str]
    services: list[ServiceInfo]


Status = Literal["converged", "pending", "failed", "rolled_back"]
