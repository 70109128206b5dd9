"""git's failures as sentences with a next step, shaped like Swarm._why: what the bot
sees from git (fetch, tag and show in a recipe's checkout, through GitPython or the
process runner) matched on git's own stable wording, checked with git 2.39 here:

- `fatal: detected dubious ownership in repository at '/x'` (a checkout owned by
  another user; git 2.35.2+), with the `safe.directory` hint;
- `fatal: could not read Username for 'https://h': terminal prompts disabled` (the bot
  runs git without a terminal: a private remote), `Authentication failed for`,
  `Permission denied (publickey)`;
- `Could not resolve host: h` (curl) or `Could not resolve hostname h` (ssh);
- `Failed to connect to h port p … Connection refused`, `Connection timed out`,
  `No route to host`, ssh's `connect to host … Connection refused`;
- `fatal: not a git repository`, `'x' does not appear to be a git repository`,
  `repository 'u' not found`.

Anything else keeps git's own text (it is usually a sentence already)."""

from __future__ import annotations

import logging
import re

from bot.fmt import code
from bot.incident import note, report
from bot.redact import redact_url

log = logging.getLogger(__name__)

_DUBIOUS = ("detected dubious ownership",)
_AUTH = (
    "could not read username",
    "could not read password",
    "authentication failed",
    "permission denied (publickey",
    "terminal prompts disabled",
    "http basic: access denied",
)
_DNS = ("could not resolve host", "name or service not known", "temporary failure in name")
_UNREACHABLE = (
    "connection refused",
    "failed to connect to",
    "connection timed out",
    "operation timed out",
    "no route to host",
    "network is unreachable",
    "could not read from remote repository",
)
_NOT_A_REPO = (
    "not a git repository",
    "does not appear to be a git repository",
    "repository not found",
    "' not found",
)


def explain(stderr: str) -> str | None:
    """The sentence for git's stderr, or None when it is not one the bot knows."""
    low = stderr.lower()
    if any(s in low for s in _DUBIOUS):
        return (
            "git refuses the checkout: it is owned by another user than the bot's "
            "(dubious ownership); chown it to the bot's user, or add it with "
            "`git config --global --add safe.directory <path>`"
        )
    if any(s in low for s in _AUTH):
        return (
            "the recipe's remote refused the bot (authentication): is it private? "
            "Give the bot read access (a deploy key) or point `origin` at a public URL"
        )
    if any(s in low for s in _DNS):
        return (
            "the recipe's remote host name does not resolve (DNS): check `origin`'s URL "
            "and the bot's DNS"
        )
    if any(s in low for s in _NOT_A_REPO):
        return (
            "that is not a git repository (or it does not exist): check the recipe's "
            "folder and `origin`'s URL (`git -C <recipe> remote -v`)"
        )
    if any(s in low for s in _UNREACHABLE):
        return (
            "the recipe's remote cannot be reached (the host refused or did not answer): "
            "is it up, and reachable from the bot? Try again later"
        )
    return None


# Where git says it went: curl's "unable to access '<url>'" and ssh's "host <h>".
_REMOTE = re.compile(
    r"unable to access '([^']+)'|connect to host (\S+)|resolve host(?:name)?:? (\S+)"
)


def remote_of(stderr: str) -> str | None:
    """The remote git names in its error, without credentials, or None."""
    found = _REMOTE.search(stderr)
    if found is None:
        return None
    return redact_url(next(g for g in found.groups() if g).rstrip(":"))


def git_message(recipe: str, op: str, stderr: str) -> str:
    """What a RecipeError says for a failed `git <op>` in `recipe`: a sentence with an
    incident id (git's text in the log), or git's own text when it is none we know.
    The remote git tried is named (as code, without credentials): with several
    recipes on several forges, it says which one to look at."""
    detail = stderr.strip()
    sentence = explain(detail)
    if sentence is None:
        return f"recipe {recipe}: git {op} failed: {detail}"
    ident = report(log, f"recipe {recipe}: git {op} failed", detail)
    remote = remote_of(detail)
    where = f" (remote {code(remote)})" if remote else ""
    return f"recipe {recipe}: git {op} failed{where}: {sentence} ({note(ident)})"
