"""!new: an app from a recipe, as `abra app new` makes it."""

from __future__ import annotations

from bot.core.context import Arg, CommandContext
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.features.apps import check_domain, check_recipe

group = CommandGroup("create")


@group.command(
    "new",
    help="Make a new app from a recipe: `servers/<server>/<domain>.env` from the recipe's "
    ".env.sample with DOMAIN and TYPE set, as `abra app new` does. Nothing is deployed.",
    args=(
        Arg("recipe", "a recipe in the abra folder", type=check_recipe),
        Arg("domain", "the new app's domain", type=check_domain),
        Arg("server", "the server folder (needed when there are several)", required=False),
    ),
    role=Role.ADMIN,
    example="new bonfire social.example.coop",
)
async def new(ctx: CommandContext) -> None:
    apps = ctx.services.apps
    env = await apps.create(ctx.args["recipe"], ctx.args["domain"], ctx.args["server"])
    p = ctx.prefix
    await ctx.reply(
        f"✅ Made {env.domain} on {env.server} from the {env.recipe} recipe: `{env.path}`.\n"
        f"Next: look over the file (the optional overlays are the commented COMPOSE_FILE "
        f"lines), then `{p}secrets {env.domain} generate` and `{p}deploy {env.domain}`."
    )
