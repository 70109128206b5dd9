"""Recipe repos and abra app files for tests, made the way abra lays them out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Git needs an identity to commit and there is no global config here.
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Coopbot Tests",
    "GIT_AUTHOR_EMAIL": "tests@coopbot.invalid",
    "GIT_COMMITTER_NAME": "Coopbot Tests",
    "GIT_COMMITTER_EMAIL": "tests@coopbot.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo`; return stdout, raising with git's stderr on failure."""
    result = subprocess.run(
        ["git", "-C", str(repo), *args], env=GIT_ENV, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def commit_files(repo: Path, files: dict[str, str], message: str) -> None:
    """Write `files` (path -> content) into `repo` and commit them (all changes)."""
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", message)


def make_recipe(root: Path, name: str, releases: list[tuple[str, dict[str, str]]]) -> Path:
    """root/<name> as a recipe repo: one commit and tag per (tag, files), in order.

    Files are cumulative (each commit adds or overwrites on top of the last),
    like real releases. Returns the repo path.
    """
    repo = root / name
    repo.mkdir(parents=True)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "config", "user.name", GIT_ENV["GIT_AUTHOR_NAME"])
    git(repo, "config", "user.email", GIT_ENV["GIT_AUTHOR_EMAIL"])
    for tag, files in releases:
        commit_files(repo, files, f"release {tag}")
        git(repo, "tag", tag)
    return repo


def make_app_env(
    abra_dir: Path,
    server: str,
    domain: str,
    recipe: str,
    version: str | None = None,
    extra: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
) -> Path:
    """abra_dir/servers/<server>/<domain>.env as abra writes it.

    `secrets` maps a secret name to its length hint: {"db_password": "32"}
    gives `SECRET_DB_PASSWORD_VERSION=v1  # length=32` (an empty hint, none).
    """
    folder = abra_dir / "servers" / server
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"TYPE={recipe}:{version}" if version else f"TYPE={recipe}", f"DOMAIN={domain}"]
    lines += [f"{key}={_quote(value)}" for key, value in (extra or {}).items()]
    for name, length in (secrets or {}).items():
        hint = f"  # length={length}" if length else ""
        lines.append(f"SECRET_{name.upper()}_VERSION=v1{hint}")
    path = folder / f"{domain}.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def _quote(value: str) -> str:
    return f'"{value}"' if any(c in value for c in " #'") else value
