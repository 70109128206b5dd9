"""The nodes of each swarm: !nodes, !node drain|active."""

from __future__ import annotations

from bot.core.approvals import Plan
from bot.core.context import Arg, CommandContext
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.features.nodes import Nodes

group = CommandGroup("nodes")

SERVER = Arg("server", "a configured server (needed when there are several)", required=False)


def _nodes(ctx: CommandContext) -> Nodes:
    # Stateless: built per command from the Apps feature, whose adapters bot/app.py built.
    return Nodes(ctx.services.apps, list(ctx.services.config.servers))


@group.command(
    "nodes",
    help="Every node of the swarm: role, availability, state, engine version, labels, "
    "and which apps run there.",
    args=(SERVER,),
    quick=True,
    example="nodes",
)
async def nodes(ctx: CommandContext) -> None:
    await ctx.reply(await _nodes(ctx).listing(ctx.args["server"]))


async def _node_plan(ctx: CommandContext) -> Plan:
    plan = await _nodes(ctx).plan_availability(
        ctx.args["server"], ctx.args["node"], ctx.args["availability"]
    )
    # The node's id and availability now: if either changed before the vote ended, the
    # vote is stale and nothing is done.
    return Plan(plan.summary, fingerprint=plan.fingerprint, needs_vote=plan.needed)


@group.command(
    "node",
    help="Drain a node (swarm moves its tasks to other nodes) or make it active again.",
    args=(
        Arg("availability", "drain or active", choices=("drain", "active")),
        Arg("node", "the node's hostname or id (see !nodes)"),
        SERVER,
    ),
    role=Role.OPERATOR,
    vote_policy="undeploy",
    lock_arg="node",
    plan=_node_plan,
    timeout=600,
    example="node drain worker-1",
)
async def node(ctx: CommandContext) -> None:
    await ctx.progress.update(f"Setting the node to {ctx.args['availability']}…")
    report = await _nodes(ctx).set_availability(
        ctx.args["server"], ctx.args["node"], ctx.args["availability"]
    )
    await ctx.progress.finish(report)
