"""`!cmd`: a function of the recipe's `abra.sh`, run inside the app's container as
`abra app cmd` runs it.

abra copies the recipe's `abra.sh` into the service's container and runs
`/bin/sh -c "TARGET=<service>; APP_NAME=<app>; STACK_NAME=<stack>; . /tmp/abra.sh;
<function> <args>"` there (abra's cli/app/cmd.go; the same variables are set here).
Only a function that `abra.sh` defines may be called, so `!cmd` is no general shell:
the function name is checked against the file, and every argument is shell-quoted
(`shlex.quote`) into the one `sh -c` string, so no argument can end the call and
start another command. The `abra.sh` is the one of the deployed version (its tag or
chaos commit), as the running containers were made from it.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import UserError
from bot.features.apps.inventory import Inventory
from bot.fmt import code
from bot.ops.abra import AppEnv
from bot.ops.recipes import RecipeError, RecipeRepo
from bot.ops.swarm import SwarmError, exec_with_files

DEFAULT_SERVICE = "app"  # abra's convention: the main service of a recipe is `app`
SCRIPT_FOLDER = "/tmp"
TIMEOUT = 600.0  # seconds a function may run (the job's own limit applies too)

# `name() {`, `name () {`, `function name {`, `function name() {`: POSIX sh and the
# bash form recipes use; a name is what sh accepts as a function name.
_DEFINITION = re.compile(
    r"^[ \t]*(?:function[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*(?:\([ \t]*\))?"
    r"|([A-Za-z_][A-Za-z0-9_]*)[ \t]*\([ \t]*\))",
    re.MULTILINE,
)


def abra_functions(script: str) -> list[str]:
    """The functions `script` defines, in order, each once. Comment lines do not count."""
    found: list[str] = []
    for match in _DEFINITION.finditer(script):
        name = match.group(1) or match.group(2)
        if name not in found:
            found.append(name)
    return found


def command_line(
    function: str, args: Sequence[str], *, service: str, domain: str, stack: str
) -> list[str]:
    """The argument list run in the container: one `sh -c` string in which every value
    from outside (service, app, arguments) is quoted; `function` is a checked name."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", function):
        raise UserError(f"{code(function)} is not a function name.")
    call = " ".join([function, *(shlex.quote(a) for a in args)])
    script = (
        f"TARGET={shlex.quote(service)}; APP_NAME={shlex.quote(domain)}; "
        f"STACK_NAME={shlex.quote(stack)}; . {SCRIPT_FOLDER}/abra.sh; {call}"
    )
    return ["/bin/sh", "-c", script]


def split_call(tokens: Sequence[str], services: Sequence[str]) -> tuple[str, str, list[str]]:
    """(service, function, args) from `[service] function [args…]`: the first token is
    a service when it names one of the app's services and a function follows it."""
    if not tokens:
        raise UserError("Name a function of the recipe's abra.sh.")
    if len(tokens) >= 2 and tokens[0] in services:
        return tokens[0], tokens[1], list(tokens[2:])
    return DEFAULT_SERVICE, tokens[0], list(tokens[1:])


@dataclass(frozen=True)
class CmdResult:
    service: str
    function: str
    arguments: int  # how many were passed (for the audit line)
    exit_code: int
    output: str  # raw: the command masks it before anyone sees it


def _script_at(repo: RecipeRepo, ref: str) -> str | None:
    """abra.sh as committed at `ref`; the recipe folder's when `ref` is not a commit of it
    (abra itself reads the folder as it is)."""
    try:
        with repo.worktree(ref) as tree:
            return _read(tree / "abra.sh")
    except RecipeError:
        return _read(repo.path / "abra.sh")


def _read(path: Path) -> str | None:
    return path.read_text(errors="replace") if path.is_file() else None


async def run_function(apps: Inventory, env: AppEnv, tokens: Sequence[str]) -> CmdResult:
    """Run `[service] function [args…]` of the deployed recipe's abra.sh in the app's
    running container. UserError for an app not deployed, an unknown service or
    function, or no running container."""
    deployed = await apps.deployed(env)
    if not deployed.exists or not deployed.version:
        raise UserError(f"{env.domain} is not deployed: there is no container to run in.")
    services = [s.short_name for s in deployed.services]
    service, function, args = split_call(tokens, services)
    if service not in services:
        raise UserError(
            f"{env.domain} has no service {code(service)}; its services: "
            + ", ".join(code(s) for s in services)
        )
    repo = await asyncio.to_thread(apps.recipe, env.recipe)
    script = await asyncio.to_thread(_script_at, repo, deployed.version)
    if script is None:
        raise UserError(f"The recipe {env.recipe} has no abra.sh, so it defines no commands.")
    defined = abra_functions(script)
    if function not in defined:
        known = ", ".join(code(f) for f in defined) or "none"
        raise UserError(
            f"The abra.sh of {env.recipe} ({deployed.version}) defines no function "
            f"{code(function)}. It defines: {known}."
        )
    argv = command_line(function, args, service=service, domain=env.domain, stack=env.stack_name)
    try:
        exit_code, output = await exec_with_files(
            apps.swarm(env.server),
            env.stack_name,
            service,
            {"abra.sh": script.encode()},
            argv,
            folder=SCRIPT_FOLDER,
            timeout=TIMEOUT,
        )
    except SwarmError as exc:
        raise UserError(f"Running {code(function)} in {env.domain}: {exc}") from None
    return CmdResult(service, function, len(args), exit_code, output)
