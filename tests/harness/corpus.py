"""Real Co-op Cloud recipes, kept as git bundles beside the repository.

The bundles live in `shared/recipes/` next to the repository root (here
/work/shared beside /work/main; in CI a copy of shared/ sits beside the clone),
so the path is resolved relative to this file rather than hard-coded.
Tests clone them into a tmp dir: the bundles themselves are never modified.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# tests/harness/corpus.py: parents[2] is the repository root, parents[3] the folder
# holding it, where shared/ sits beside the repository.
BUNDLES = Path(__file__).resolve().parents[3] / "shared" / "recipes"

RECIPES = ("agora", "bonfire", "foodsharing-cms", "gaseous", "llamenos", "traefik-legacy")


def bundle_path(name: str) -> Path:
    """The bundle file of recipe `name` (it may not exist on this machine)."""
    return BUNDLES / f"{name}.bundle"


def clone_recipe(name: str, dest: Path) -> Path:
    """Clone recipe `name` from its bundle into dest/<name>; return the clone's path.

    Raises FileNotFoundError when the bundle is missing, so a caller can skip.
    """
    bundle = bundle_path(name)
    if not bundle.is_file():
        raise FileNotFoundError(f"recipe bundle not found: {bundle}")
    target = dest / name
    result = subprocess.run(
        ["git", "clone", "--quiet", str(bundle), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git clone of {bundle} failed: {result.stderr.strip()}")
    return target
