"""Shared vocabulary of Docker Swarm: label names and service update states.

A leaf module (imports nothing of the bot) so that commands, features and adapters
all spell these the same way.
"""

from __future__ import annotations

from enum import StrEnum

# --------------------------------------------------------------------------- labels

# Set by `docker stack deploy` on every service, network, volume, secret and config
# of a stack; the value is the stack name.
NAMESPACE_LABEL = "com.docker.stack.namespace"
# Set by swarm on every task container; the value is the service's full name.
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"


def namespace_filter(stack: str | None) -> str:
    """The docker `label` filter for one stack's objects, or for any stack's (None)."""
    return NAMESPACE_LABEL if stack is None else f"{NAMESPACE_LABEL}={stack}"


def service_filter(service: str) -> str:
    """The docker `label` filter for the containers of a service ("<stack>_<svc>")."""
    return f"{SERVICE_NAME_LABEL}={service}"


# Co-op Cloud recipe labels (abra reads and writes the same names).


def version_label(stack: str) -> str:
    return f"coop-cloud.{stack}.version"


def chaos_label(stack: str) -> str:
    return f"coop-cloud.{stack}.chaos"


def timeout_label(stack: str) -> str:
    return f"coop-cloud.{stack}.timeout"


def autoupdate_label(stack: str) -> str:
    return f"coop-cloud.{stack}.autoupdate"


# --------------------------------------------------------------------------- update states


class UpdateState(StrEnum):
    """A service's `UpdateStatus.State` as swarm reports it (absent for a service that
    was created and never updated). StrEnum: members compare equal to the daemon's
    strings, so plain `str` fields can be checked against them."""

    UPDATING = "updating"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_PAUSED = "rollback_paused"
    ROLLBACK_COMPLETED = "rollback_completed"


# Still changing (a poll later may tell more), and stopped half-way (needs a person).
MOVING_STATES = frozenset({UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED})
STUCK_STATES = frozenset({UpdateState.PAUSED, UpdateState.ROLLBACK_PAUSED})


def is_rollback(state: str | None) -> bool:
    """Any rollback state: swarm is restoring, or has restored, the previous spec."""
    return (state or "").startswith("rollback")
