"""Nodes and where services may run; pure (no I/O).

- `NodeInfo`: one swarm node as the bot shows it (parsed from the Engine API's node JSON);
- `Placement`: what decides where a service's tasks run and what they keep on the
  node (constraints, node-local named volumes), read from a swarm service or from a
  rendered compose file alike, plus the nodes its tasks run on now;
- `eligible()`: the nodes a set of placement constraints allows, evaluated as swarm's
  scheduler does (`==`/`!=` over node.id, node.hostname, node.role, node.labels.*,
  engine.labels.*, node.platform.os/arch);
- `stranded()`: services whose node-local volume would be left behind (a task moved
  to another node starts with a fresh, empty volume of the same name), and the
  constraint that would pin each one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.labels import NAMESPACE_LABEL

# Swarm's constraint operators; `!=` is checked first ("a != b" contains no "==").
_OPERATORS = ("!=", "==")


@dataclass(frozen=True)
class NodeInfo:
    id: str
    hostname: str
    role: str  # "manager" | "worker"
    availability: str  # "active" | "pause" | "drain"
    state: str  # "ready" | "down" | "disconnected" | "unknown"
    engine_version: str
    labels: dict[str, str]
    address: str
    leader: bool = False
    engine_labels: dict[str, str] = field(default_factory=dict)
    os: str = ""
    arch: str = ""
    version: int = 0  # the node object's version (an update must name it)


def node_info(raw: Mapping[str, Any]) -> NodeInfo:
    spec = raw.get("Spec") or {}
    desc = raw.get("Description") or {}
    status = raw.get("Status") or {}
    engine = desc.get("Engine") or {}
    platform = desc.get("Platform") or {}
    manager = raw.get("ManagerStatus") or {}
    return NodeInfo(
        id=str(raw.get("ID", "")),
        hostname=str(desc.get("Hostname", "")),
        role=str(spec.get("Role", "")),
        availability=str(spec.get("Availability", "")),
        state=str(status.get("State", "")),
        engine_version=str(engine.get("EngineVersion", "")),
        labels=dict(spec.get("Labels") or {}),
        address=str(status.get("Addr", "")),
        leader=bool(manager.get("Leader")),
        engine_labels=dict(engine.get("Labels") or {}),
        os=str(platform.get("OS", "")),
        arch=str(platform.get("Architecture", "")),
        version=int((raw.get("Version") or {}).get("Index", 0)),
    )


def find_node(nodes: Sequence[NodeInfo], name: str) -> NodeInfo | None:
    """A node by hostname, full id or unique id prefix (as the docker CLI accepts)."""
    for node in nodes:
        if name in (node.hostname, node.id):
            return node
    prefixed = [n for n in nodes if len(name) >= 4 and n.id.startswith(name)]
    return prefixed[0] if len(prefixed) == 1 else None


def _node_value(node: NodeInfo, key: str) -> str | None:
    """The node's value for a constraint key; None when the node has no such value
    (a label it lacks), which `==` never matches and `!=` always does."""
    simple = {
        "node.id": node.id,
        "node.hostname": node.hostname,
        "node.role": node.role,
        "node.platform.os": node.os,
        "node.platform.arch": node.arch,
    }
    if key in simple:
        return simple[key]
    for prefix, labels in (("node.labels.", node.labels), ("engine.labels.", node.engine_labels)):
        if key.startswith(prefix):
            return labels.get(key[len(prefix) :])
    return None


def matches(constraint: str, node: NodeInfo) -> bool:
    """Whether one constraint ("node.role == worker") allows the node. Keys are
    case-insensitive, values are compared as written (as swarm does)."""
    for op in _OPERATORS:
        if op in constraint:
            key, _, value = (part.strip() for part in constraint.partition(op))
            have = _node_value(node, key.lower())
            return (have == value) if op == "==" else (have != value)
    return True  # not a constraint swarm would accept; it refuses such a service itself


def eligible(constraints: Iterable[str], nodes: Sequence[NodeInfo]) -> list[NodeInfo]:
    wanted = list(constraints)
    return [n for n in nodes if all(matches(c, n) for c in wanted)]


@dataclass(frozen=True)
class Placement:
    """One service as the scheduler sees it."""

    service: str  # the short name
    stack: str
    constraints: tuple[str, ...]
    local_volumes: tuple[str, ...]  # named volumes of the local driver, full names
    global_mode: bool = False
    nodes: tuple[str, ...] = ()  # ids of the nodes its running tasks are on


def _is_local(driver: str | None) -> bool:
    return driver in (None, "", "local")


def service_placement(raw: Mapping[str, Any], running_nodes: Iterable[str] = ()) -> Placement:
    """From a swarm service's JSON (the Engine API's)."""
    spec = raw.get("Spec") or {}
    template = spec.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    stack = str((spec.get("Labels") or {}).get(NAMESPACE_LABEL, ""))
    name = str(spec.get("Name", ""))
    short = name[len(stack) + 1 :] if stack and name.startswith(stack + "_") else name
    volumes = tuple(
        sorted(
            str(m["Source"])
            for m in container.get("Mounts") or []
            if m.get("Type", "volume") == "volume"
            and m.get("Source")
            and _is_local(((m.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name"))
        )
    )
    return Placement(
        service=short,
        stack=stack,
        constraints=tuple((template.get("Placement") or {}).get("Constraints") or ()),
        local_volumes=volumes,
        global_mode="Global" in (spec.get("Mode") or {}),
        nodes=tuple(sorted(set(running_nodes))),
    )


def compose_placements(config: Mapping[str, Any], stack: str) -> list[Placement]:
    """From a rendered compose file (what `docker stack config` prints), before deploy:
    a volume without `name:` becomes `<stack>_<volume>`, as the CLI names it."""
    declared = config.get("volumes") or {}
    result = []
    for short, service in sorted((config.get("services") or {}).items()):
        if not isinstance(service, dict):
            continue
        local = []
        for mount in service.get("volumes") or []:
            source = _compose_volume_source(mount)
            if source is None or source not in declared:
                continue  # a bind mount, tmpfs or anonymous volume
            decl = declared.get(source) or {}
            if _is_local(decl.get("driver")):
                external = decl.get("external")
                local.append(decl.get("name") or (source if external else f"{stack}_{source}"))
        deploy = service.get("deploy") or {}
        result.append(
            Placement(
                service=short,
                stack=stack,
                constraints=tuple((deploy.get("placement") or {}).get("constraints") or ()),
                local_volumes=tuple(sorted(local)),
                global_mode=deploy.get("mode") == "global",
            )
        )
    return result


def _compose_volume_source(mount: Any) -> str | None:
    if isinstance(mount, dict):
        if mount.get("type", "volume") != "volume":
            return None
        source = mount.get("source")
        return str(source) if source else None
    if isinstance(mount, str) and ":" in mount:
        source = mount.split(":", 1)[0]
        return None if source.startswith((".", "/", "~", "$")) else source
    return None


@dataclass(frozen=True)
class Stranded:
    """A service whose node-local volumes stay behind if its task moves."""

    service: str
    volumes: tuple[str, ...]
    eligible: tuple[str, ...]  # hostnames of the nodes it may be scheduled on
    pin: str  # the constraint that would pin it, e.g. "node.hostname == worker-1"
    on: str = ""  # hostname of the node its task runs on now ("" if none)
    stack: str = ""

    def describe(self) -> str:
        where = f" (runs on {self.on} now)" if self.on else ""
        return (
            f"{self.service} keeps its data in node-local volume(s) "
            f"{', '.join(self.volumes)} but may run on {len(self.eligible)} nodes "
            f"({', '.join(self.eligible)}){where}: moved to another node it starts with "
            f"an empty volume. Pin it with the placement constraint `{self.pin}`."
        )


def stranded(
    placements: Iterable[Placement],
    nodes: Sequence[NodeInfo],
    current: Mapping[str, Sequence[str]] | None = None,
) -> list[Stranded]:
    """The services that mount a node-local named volume and may be scheduled on
    more than one node. `current`: per service, node ids its tasks run on now (for a
    compose file not yet deployed: the running service of the same name). Global
    services are left out: each node has its own task and its own volume by design."""
    by_id = {n.id: n for n in nodes}
    found = []
    for p in placements:
        if not p.local_volumes or p.global_mode:
            continue
        allowed = eligible(p.constraints, nodes)
        if len(allowed) <= 1:
            continue
        running = [by_id[i] for i in (*(current or {}).get(p.service, ()), *p.nodes) if i in by_id]
        on = running[0] if running else allowed[0]
        found.append(
            Stranded(
                service=p.service,
                volumes=p.local_volumes,
                eligible=tuple(sorted(n.hostname for n in allowed)),
                pin=f"node.hostname == {on.hostname}",
                on=running[0].hostname if running else "",
                stack=p.stack,
            )
        )
    return found
