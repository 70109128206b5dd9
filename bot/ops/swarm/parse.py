"""The docker SDK's JSON (and the names a user types) as the adapter's data; pure.

The SDK returns the Engine API's JSON as dicts; everything the bot reads of it is read
here, so the client only fetches and these functions can be tested without a daemon.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.fmt import parse_rfc3339
from bot.labels import NAMESPACE_LABEL
from bot.ops.swarm.model import FAILED_STATES, RECENT_ERRORS, ServiceInfo, SwarmError, TaskInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Stack names: what the CLI accepts, and never something that looks like an option.
_STACK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_ts(text: str | None) -> datetime | None:
    """Docker's RFC 3339 timestamps (nanoseconds, "Z") as aware datetimes; None if unparsable."""
    if not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:  # no RFC 3339 shape, or no such date
        return None


def iso(text: str | None) -> str:
    """A daemon time as "YYYY-MM-DDTHH:MM:SS.ffffffZ" (sortable as text); as is if unparsable."""
    ts = parse_ts(text)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts else (text or "")


def check_stack(stack: str) -> str:
    """`stack`, if it is a valid stack name; SwarmError otherwise."""
    if not _STACK_RE.match(stack):
        raise SwarmError(f"invalid stack name {stack!r}")
    return stack


def split_ref(ref: str) -> tuple[str, str]:
    """An image ref "name[:tag][@digest]" as (name, tag); the tag defaults to latest."""
    ref = ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


def container_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A service spec's TaskTemplate.ContainerSpec (empty if absent)."""
    return dict((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {})


def task_info(raw: Mapping[str, Any], service_name: str, up_to_date: bool = True) -> TaskInfo:
    status = raw.get("Status") or {}
    spec = (raw.get("Spec") or {}).get("ContainerSpec") or {}
    return TaskInfo(
        id=raw.get("ID", ""),
        service=service_name,
        state=status.get("State", ""),
        desired_state=raw.get("DesiredState", ""),
        error=status.get("Err", "") or "",
        message=status.get("Message", "") or "",
        image=spec.get("Image", ""),
        timestamp=iso(status.get("Timestamp")),
        slot=raw.get("Slot"),
        node_id=raw.get("NodeID", "") or "",
        up_to_date=up_to_date,
    )


def service_info(raw: Mapping[str, Any], tasks: list[TaskInfo]) -> ServiceInfo:
    spec = raw.get("Spec") or {}
    labels = dict(spec.get("Labels") or {})
    name = spec.get("Name", "")
    stack = labels.get(NAMESPACE_LABEL, "")
    short = name[len(stack) + 1 :] if stack and name.startswith(stack + "_") else name
    mode = spec.get("Mode") or {}
    replicas: int | None
    if "Global" in mode:
        replicas = None
    else:
        replicas = int((mode.get("Replicated") or {}).get("Replicas", 1) or 0)
    update = raw.get("UpdateStatus") or {}
    prev = raw.get("PreviousSpec")
    prev_image = container_spec(prev).get("Image") if prev else None
    errors: list[str] = []
    for t in sorted(tasks, key=lambda t: parse_ts(t.timestamp) or EPOCH, reverse=True):
        if t.state in FAILED_STATES and t.error and t.error not in errors:
            errors.append(t.error)
    return ServiceInfo(
        id=raw.get("ID", ""),
        name=name,
        short_name=short,
        image=container_spec(spec).get("Image", ""),
        replicas_desired=replicas,
        replicas_running=sum(
            1 for t in tasks if t.state == "running" and t.desired_state == "running"
        ),
        update_state=update.get("State") or None,
        update_message=update.get("Message", "") or "",
        labels=labels,
        version=int((raw.get("Version") or {}).get("Index", 0)),
        has_previous_spec=bool(prev),
        previous_image=prev_image,
        recent_errors=errors[:RECENT_ERRORS],
        update_started_at=iso(update.get("StartedAt")) or None,
        updated_at=iso(raw.get("UpdatedAt")) or None,
    )


def group(
    raw_services: list[dict[str, Any]],
    raw_tasks: list[dict[str, Any]],
    up_to_date_ids: set[str] | None,
) -> tuple[list[ServiceInfo], dict[str, list[TaskInfo]]]:
    """One services listing and one tasks listing as ServiceInfos (sorted by name) and
    their tasks by service name. Tasks of other services are dropped. With
    `up_to_date_ids` (the daemon's `_up-to-date` task ids), the others are marked
    `up_to_date=False`; None marks all up to date."""
    names = {s["ID"]: s["Spec"]["Name"] for s in raw_services}
    by_service: dict[str, list[TaskInfo]] = {name: [] for name in names.values()}
    for raw in raw_tasks:
        name = names.get(raw.get("ServiceID", ""))
        if name is None:
            continue
        fresh = True if up_to_date_ids is None else raw.get("ID") in up_to_date_ids
        by_service[name].append(task_info(raw, name, fresh))
    infos = [service_info(s, by_service[s["Spec"]["Name"]]) for s in raw_services]
    infos.sort(key=lambda s: s.name)
    return infos, by_service
