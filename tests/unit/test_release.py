"""One version, released consistently: the CHANGELOG has a section for bot.__version__
under an (empty or growing) Unreleased one, and the recipe's release note of the version
its compose.yml labels names that coopbot version."""

from __future__ import annotations

import re
from pathlib import Path

from bot import __version__

REPO = Path(__file__).resolve().parents[2]


def test_the_changelog_has_a_dated_section_for_this_version_below_unreleased() -> None:
    headings = re.findall(r"^## \[([^\]]+)\](.*)$", (REPO / "CHANGELOG.md").read_text(), re.M)
    names = [name for name, _ in headings]
    assert names[0] == "Unreleased"
    assert __version__ in names
    (date,) = [rest for name, rest in headings if name == __version__]
    assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", date), date


def test_the_recipe_s_release_note_names_this_version() -> None:
    compose = (REPO / "recipe" / "compose.yml").read_text()
    found = re.search(r"coop-cloud\.\$\{STACK_NAME\}\.version=(\S+?)\"", compose)
    assert found, "no version label in recipe/compose.yml"
    recipe_version = found.group(1)
    assert recipe_version.endswith(f"+{__version__}")
    note = (REPO / "recipe" / "release" / recipe_version).read_text()
    assert f"coopbot {__version__}" in note
