"""What a stack consists of on the swarm: the objects `docker stack deploy` made for it.

`docker stack deploy` labels everything it creates with `com.docker.stack.namespace`
(services, networks, and the configs and secrets a compose file defines with `file:`),
and `docker stack rm` removes exactly those. Secrets the operator created beforehand
(`!secrets … generate`, `abra app secret generate`) are external to the compose file
and carry no namespace label: they are neither listed here nor removed with the stack.
Kept apart from client.py (at its size limit); it runs through the client's SDK shell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.labels import namespace_filter
from bot.ops.swarm.client import Swarm
from bot.ops.swarm.parse import check_stack


@dataclass(frozen=True)
class StackParts:
    """The names of a stack's swarm objects, each list sorted."""

    services: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()

    def empty(self) -> bool:
        return not (self.services or self.networks or self.configs or self.secrets)

    def describe(self) -> str:
        """'services a, b; networks n; …' (only the kinds there are), or 'nothing'."""
        kinds = [
            (kind, names)
            for kind, names in (
                ("services", self.services),
                ("networks", self.networks),
                ("configs", self.configs),
                ("secrets", self.secrets),
            )
            if names
        ]
        return "; ".join(f"{kind} {', '.join(names)}" for kind, names in kinds) or "nothing"


async def stack_parts(swarm: Swarm, stack: str) -> StackParts:
    """The services, networks, configs and secrets labelled as the stack's."""
    label = {"label": namespace_filter(check_stack(stack))}

    def fetch(c: Any) -> StackParts:
        api = c.api
        return StackParts(
            services=_names(api.services(filters=label), lambda o: o["Spec"]["Name"]),
            networks=_names(api.networks(filters=label), lambda o: o["Name"]),
            configs=_names(api.configs(filters=label), lambda o: o["Spec"]["Name"]),
            secrets=_names(api.secrets(filters=label), lambda o: o["Spec"]["Name"]),
        )

    return await swarm._sdk(fetch)


def _names(objects: list[dict[str, Any]] | None, name: Any) -> tuple[str, ...]:
    return tuple(sorted(str(name(o)) for o in objects or []))


@dataclass(frozen=True)
class SpecSummary:
    """What a plan compares of one service: its image, the NAMES of its environment
    variables (never their values), and the swarm names of its secrets, configs and
    named volumes."""

    image: str
    env_keys: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()
    configs: frozenset[str] = frozenset()
    volumes: frozenset[str] = frozenset()


def spec_summary(spec: dict[str, Any]) -> SpecSummary:
    """A service's Spec (the SDK's JSON) as a SpecSummary."""
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return SpecSummary(
        image=str(container.get("Image", "")),
        env_keys=frozenset(str(e).split("=", 1)[0] for e in container.get("Env") or []),
        secrets=frozenset(str(s["SecretName"]) for s in container.get("Secrets") or []),
        configs=frozenset(str(c["ConfigName"]) for c in container.get("Configs") or []),
        volumes=frozenset(
            str(m["Source"])
            for m in container.get("Mounts") or []
            if m.get("Type", "volume") == "volume" and m.get("Source")
        ),
    )


async def stack_specs(swarm: Swarm, stack: str) -> dict[str, SpecSummary]:
    """Per service of the stack (short name): its current spec, summarised."""
    label = {"label": namespace_filter(check_stack(stack))}
    raw = await swarm._sdk(lambda c: c.api.services(filters=label))
    return {str(s["Spec"]["Name"]).removeprefix(f"{stack}_"): spec_summary(s["Spec"]) for s in raw}
