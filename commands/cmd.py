"""!cmd: run a function of an app's recipe abra.sh inside its container (abra app cmd)."""

from __future__ import annotations

from bot.core.context import Arg, CommandContext
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.errors import UserError
from bot.features.apps import check_domain, run_function
from bot.fmt import code, code_block
from bot.redact import log_excerpt, mask_secrets

group = CommandGroup("cmd")


@group.command(
    "cmd",
    help="Run a function of the recipe's abra.sh inside the app's running container, as "
    "`abra app cmd` does (service default: app); only functions abra.sh defines. The "
    "output is masked like !logs; the call and its exit code are audited. Arguments that "
    "start with -- follow a lone `--`.",
    args=(
        Arg("app", "the app's domain, e.g. cloud.example.coop", type=check_domain),
        Arg("call", "[service] function [args...] (quote an argument with spaces)", many=True),
    ),
    role=Role.OPERATOR,
    lock_arg="app",
    recorded_words=1,  # the app: the function's arguments may be passwords
    example="cmd cloud.example.coop app set_admin_pass alice",
)
async def cmd(ctx: CommandContext) -> None:
    apps = ctx.services.apps
    env = await apps.find(ctx.args["app"])
    try:
        result = await run_function(apps, env, ctx.args["call"])
    except UserError as exc:
        ctx.services.store.audit(ctx.sender, "cmd.refused", str(exc)[:300], app=env.domain)
        raise
    ctx.services.store.audit(
        ctx.sender,
        "cmd",
        f"{result.function} in {result.service} ({result.arguments} argument(s)): "
        f"exit {result.exit_code}",
        app=env.domain,
    )
    shown, note = log_excerpt(mask_secrets(result.output))
    mark = "✅" if result.exit_code == 0 else "❌"
    head = (
        f"{mark} {code(result.function)} in {env.domain} ({code(result.service)}) "
        f"exited with {result.exit_code}"
    )
    body = code_block(shown) if shown.strip() else "(no output)"
    cut = f"\n{note.split(';')[0]}" if note else ""  # no file: the tail is what is kept
    await ctx.progress.finish(f"{head}\n{body}{cut}")
