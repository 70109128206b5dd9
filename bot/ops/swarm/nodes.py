"""The nodes of a swarm, through the manager: list them, drain or re-activate one, and
where each service may run and runs now. A mixin of `Swarm` (client.py is at its size
limit): it goes through the same SDK shell, `Swarm._sdk` (worker thread, docker errors
as SwarmError). What the JSON means is read in placement.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from bot.labels import namespace_filter
from bot.ops.swarm.model import SwarmError
from bot.ops.swarm.parse import check_stack
from bot.ops.swarm.placement import (
    NodeInfo,
    Placement,
    Stranded,
    compose_placements,
    find_node,
    node_info,
    service_placement,
    stranded,
)

T = TypeVar("T")

AVAILABILITIES = ("active", "pause", "drain")


class NodeCalls:
    """What `Swarm` can tell and do about nodes."""

    if TYPE_CHECKING:

        async def _sdk(self, fn: Callable[[Any], T]) -> T: ...

    async def nodes(self) -> list[NodeInfo]:
        """Every node, managers first, then by hostname. Only a manager answers."""
        raw = await self._sdk(lambda c: c.api.nodes())
        found = [node_info(n) for n in raw or []]
        return sorted(found, key=lambda n: (n.role != "manager", n.hostname, n.id))

    async def down_nodes(self) -> dict[str, str]:
        """The nodes that are not ready (down, disconnected, unknown), id -> hostname:
        what their tasks last reported is stale (a convergence watch does not count it)."""
        return {n.id: n.hostname or n.id for n in await self.nodes() if n.state != "ready"}

    async def placements(self, stack: str | None = None) -> list[Placement]:
        """Each service (of one stack, or of every stack) with its constraints, its
        node-local volumes and the nodes its running tasks are on."""
        label = namespace_filter(None if stack is None else check_stack(stack))

        def fetch(c: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            services = c.api.services(filters={"label": label})
            if not services:
                return [], []
            filters: dict[str, Any] = {"desired-state": "running"}
            if stack is not None:
                filters["service"] = [s["ID"] for s in services]
            return services, c.api.tasks(filters=filters)

        services, tasks = await self._sdk(fetch)
        running: dict[str, list[str]] = {}
        for task in tasks:
            if (task.get("Status") or {}).get("State") == "running" and task.get("NodeID"):
                running.setdefault(task.get("ServiceID", ""), []).append(task["NodeID"])
        result = [service_placement(s, running.get(s["ID"], ())) for s in services]
        return sorted(result, key=lambda p: (p.stack, p.service))

    async def set_availability(self, name: str, availability: str) -> NodeInfo:
        """Drain, pause or re-activate a node (by hostname or id); the node after it."""
        if availability not in AVAILABILITIES:
            raise SwarmError(f"availability must be one of {', '.join(AVAILABILITIES)}")

        def update(c: Any) -> dict[str, Any]:
            node = find_node([node_info(n) for n in c.api.nodes()], name)
            if node is None:
                raise SwarmError(f"no node {name!r} in this swarm")
            raw = c.api.inspect_node(node.id)
            spec = dict(raw.get("Spec") or {})
            spec["Availability"] = availability
            c.api.update_node(node.id, raw["Version"]["Index"], spec)
            result: dict[str, Any] = c.api.inspect_node(node.id)
            return result

        return node_info(await self._sdk(update))

    async def stranded_by(self, config: Mapping[str, Any], stack: str) -> list[Stranded]:
        """Pre-flight of a deploy: the services of the rendered compose file that mount
        a node-local volume and may be scheduled on more than one node (so none on a
        single-node swarm); the pin suggested is the node a task runs on now."""
        nodes = await self.nodes()
        if len(nodes) < 2:
            return []
        current = {p.service: p.nodes for p in await self.placements(stack)}
        return stranded(compose_placements(config, stack), nodes, current)

    async def volume_dir(self, name: str) -> str:
        """The folder of a named volume on this daemon's own node (the parent of its
        `_data`); ask a node's own endpoint, a manager knows no other node's volumes."""

        def look(c: Any) -> str:
            return str(c.api.inspect_volume(name)["Mountpoint"]).rsplit("/_data", 1)[0]

        return await self._sdk(look)
