"""!help and !ping."""

from __future__ import annotations

from bot import __version__
from bot.core.context import Arg, CommandContext
from bot.core.registry import CommandGroup
from bot.errors import UserError

group = CommandGroup("help")


@group.command(
    "help",
    help="List the commands you may run, or explain one.",
    args=(Arg("command", "a command name", required=False),),
    aliases=("h",),
    quick=True,
    example="help deploy",
)
async def help_command(ctx: CommandContext) -> None:
    registry = ctx.services.registry
    prefix = ctx.prefix
    word = ctx.args["command"]
    if word:
        spec = registry.get(word.removeprefix(prefix))
        if spec is None or spec.role > ctx.role:
            raise UserError(f"No command `{prefix}{word}` that you may run. Try `{prefix}help`.")
        lines = [f"**`{spec.usage(prefix)}`**", "", spec.help.strip(), ""]
        lines += [f"- `<{a.name}>` {a.help}" for a in spec.args if a.help]
        lines += [f"- `--{o.name}` {o.help}" for o in spec.options if o.help]
        if spec.subcommands:
            lines += ["", "Subcommands:"]
            lines += [f"- `{sub.usage(prefix)}`: {sub.summary}" for sub in spec.subcommands]
        examples = [s.example for s in (spec, *spec.subcommands) if s.example]
        if examples:
            lines.append("Example: " + ", ".join(f"`{prefix}{e}`" for e in examples))
        if spec.aliases:
            lines.append("Also: " + ", ".join(f"`{prefix}{a}`" for a in spec.aliases))
        lines.append(f"Family: {registry.family_of(spec)} (what matrix.rooms[].hears names)")
        lines.append(f"Needs: {spec.role.label}" + (", and a vote" if spec.vote_policy else ""))
        await ctx.reply("\n".join(lines).strip())
        return
    lines = [f"Commands you ({ctx.role.label}) may run here:", ""]
    room_id = ctx.message.room_id
    # Only what this room hears (matrix.rooms[].hears): the rest is asked elsewhere.
    heard = [s for s in registry.visible_to(ctx.role) if await ctx.control.hears(room_id, s)]
    for spec in heard:
        vote = " 🗳 *needs a vote*" if spec.vote_policy else ""
        lines.append(f"- `{spec.usage(prefix)}`: {spec.summary}{vote}")
        lines += [f"  - `{sub.usage(prefix)}`: {sub.summary}" for sub in spec.subcommands]
    lines += ["", f"`{prefix}help <command>` explains one."]
    await ctx.reply("\n".join(lines))


@group.command("ping", help="Check that the bot hears you.", quick=True, example="ping")
async def ping(ctx: CommandContext) -> None:
    await ctx.reply(f"pong (coopbot {__version__})")
