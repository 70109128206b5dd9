"""The nodes of each swarm: what runs where, draining and re-activating a node, and the
services that would lose their data by moving (a node-local volume, no pin).

Everything is read through the server's Swarm adapter (`Apps.swarm`), from the manager:
nodes, services and tasks. Node names, labels and versions come from the daemons and
are shown as inert code spans.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.errors import UserError
from bot.fmt import code
from bot.ops.abra import AppEnv
from bot.ops.swarm import NodeInfo, Placement, find_node, stranded


class NodeSwarm(Protocol):
    """What this feature uses of one server's Swarm adapter."""

    async def nodes(self) -> list[NodeInfo]: ...

    async def placements(self, stack: str | None = None) -> list[Placement]: ...

    async def set_availability(self, name: str, availability: str) -> NodeInfo: ...


class NodeApps(Protocol):
    async def inventory(self) -> tuple[list[AppEnv], list[str]]: ...

    def swarm(self, server: str) -> NodeSwarm: ...


@dataclass(frozen=True)
class AvailabilityPlan:
    node: NodeInfo
    availability: str
    summary: str  # markdown
    fingerprint: str  # what the vote stands on: the node and its availability now
    needed: bool = True  # False: the node is so already (nothing to vote on)


def _node_line(node: NodeInfo, apps: Sequence[str]) -> str:
    role = "manager, leader" if node.leader else node.role
    labels = ", ".join(code(f"{k}={v}") for k, v in sorted(node.labels.items())) or "none"
    mark = "✅" if node.state == "ready" and node.availability == "active" else "⚠"
    running = ", ".join(apps) or "nothing"
    return (
        f"- {mark} {code(node.hostname)} ({role}): {node.availability}, {node.state}, "
        f"engine {code(node.engine_version)}, address {code(node.address)}; "
        f"labels {labels}; runs {running}"
    )


def _apps_by_node(placements: Sequence[Placement], domains: dict[str, str]) -> dict[str, list[str]]:
    """Node id → the apps (domains, else stack names) with a running task there."""
    found: dict[str, set[str]] = {}
    for p in placements:
        for node_id in p.nodes:
            found.setdefault(node_id, set()).add(domains.get(p.stack, p.stack or p.service))
    return {node: sorted(apps) for node, apps in found.items()}


class Nodes:
    def __init__(self, apps: NodeApps, servers: Sequence[str]) -> None:
        self.apps = apps
        self.servers = list(servers)

    def server(self, name: str | None) -> str:
        """The server a node command is about: the one named, or the only one."""
        if name is not None:
            if name not in self.servers:
                raise UserError(f"No server {code(name)}; configured: {', '.join(self.servers)}.")
            return name
        if len(self.servers) != 1:
            raise UserError(
                "Name the server: " + (", ".join(self.servers) or "none is configured") + "."
            )
        return self.servers[0]

    async def _domains(self, server: str) -> dict[str, str]:
        envs, _ = await self.apps.inventory()
        return {e.stack_name: e.domain for e in envs if e.server == server}

    async def listing(self, server: str | None = None) -> str:
        """`!nodes`: every node of each server (or of one), with what runs there."""
        lines = []
        for name in [self.server(server)] if server else self.servers:
            swarm = self.apps.swarm(name)
            nodes, placements = await asyncio.gather(swarm.nodes(), swarm.placements())
            domains = await self._domains(name)
            by_node = _apps_by_node(placements, domains)
            lines.append(f"**{name}**: {len(nodes)} node(s)")
            lines += [_node_line(n, by_node.get(n.id, [])) for n in nodes]
            risky = stranded(placements, nodes)
            if risky:
                lines.append(f"⚠ {len(risky)} service(s) could lose data by moving:")
                lines += [f"  - {domains.get(s.stack, s.stack)}: {s.describe()}" for s in risky]
        return "\n".join(lines)

    async def status_lines(self, env: AppEnv) -> list[str]:
        """For `!status`: the node of each running task, and a mark on each service
        that could lose its node-local volume by moving."""
        swarm = self.apps.swarm(env.server)
        nodes, placements = await asyncio.gather(swarm.nodes(), swarm.placements(env.stack_name))
        if not placements:
            return []
        names = {n.id: n.hostname for n in nodes}
        lines = ["Nodes:"]
        for p in placements:
            where = ", ".join(code(names.get(i, i[:12])) for i in p.nodes) or "no running task"
            lines.append(f"- {p.service}: {where}")
        lines += [f"- ⚠ {s.describe()}" for s in stranded(placements, nodes)]
        return lines

    async def plan_availability(
        self, server: str | None, name: str, availability: str
    ) -> AvailabilityPlan:
        server = self.server(server)
        swarm = self.apps.swarm(server)
        nodes, placements = await asyncio.gather(swarm.nodes(), swarm.placements())
        node = find_node(nodes, name)
        if node is None:
            known = ", ".join(code(n.hostname) for n in nodes)
            raise UserError(f"No node {code(name)} on {server}; its nodes: {known}.")
        fingerprint = f"{node.id}:{node.availability}"
        if node.availability == availability:
            # Not an error: when the vote's plan is checked again, a changed fingerprint
            # makes the proposal stale ("nothing ran"), which is what happened.
            summary = f"{code(node.hostname)} on {server} is already {availability}."
            return AvailabilityPlan(node, availability, summary, fingerprint, needed=False)
        apps = _apps_by_node(placements, await self._domains(server)).get(node.id, [])
        if availability == "drain":
            summary = (
                f"Drain node {code(node.hostname)} ({node.role}, {node.availability} now) "
                f"on {server}: swarm moves its tasks to other nodes "
                f"({', '.join(apps) or 'none run there'})."
            )
            moving = [s for s in stranded(placements, nodes) if s.on == node.hostname]
            if node.role == "manager":
                summary += " It stays a manager (a drained manager still votes in raft)."
            for s in moving:
                summary += f"\n⚠ {s.describe()}"
        else:
            summary = (
                f"Make node {code(node.hostname)} ({node.role}, {node.availability} now) "
                f"on {server} {availability}: swarm may schedule new tasks there "
                "(running tasks are not moved back by themselves)."
            )
        return AvailabilityPlan(node, availability, summary, fingerprint)

    async def set_availability(
        self,
        server: str | None,
        name: str,
        availability: str,
        wait: float = 120,  # how long a drain may take to empty the node
    ) -> str:
        """Change the node's availability; after a drain, wait until no task of a
        service runs there any more (or say which still do)."""
        server = self.server(server)
        swarm = self.apps.swarm(server)
        node = await swarm.set_availability(name, availability)
        if availability != "drain":
            return f"✅ {code(node.hostname)} on {server} is {node.availability}."
        deadline = time.monotonic() + wait
        while True:
            placements = await swarm.placements()
            left = sorted({p.stack or p.service for p in placements if node.id in p.nodes})
            if not left:
                return f"✅ {code(node.hostname)} on {server} is drained: no task runs there."
            if time.monotonic() >= deadline:
                return (
                    f"⚠ {code(node.hostname)} on {server} is set to drain, but tasks of "
                    f"{', '.join(left)} still run there after {wait:g}s."
                )
            await asyncio.sleep(1)
