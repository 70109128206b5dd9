"""Every command the modules under commands/ declare: help, an example that parses
with its own spec (subcommands included), and a vote policy the config knows."""

from __future__ import annotations

import pytest

from bot.config import POLICY_NAMES
from bot.core.context import CommandSpec, split_reason
from bot.core.registry import Registry
from commands import GROUPS

REGISTRY = Registry(GROUPS)
SPECS = [spec for group in GROUPS for spec in group.specs]
FORMS = [form for spec in SPECS for form in (spec, *spec.subcommands)]


def test_there_are_commands_and_families() -> None:
    assert len(SPECS) > 15
    assert any(spec.subcommands for spec in SPECS)


@pytest.mark.parametrize("form", FORMS, ids=lambda s: s.name)
def test_every_form_has_help_and_an_example(form: CommandSpec) -> None:
    assert form.summary, f"{form.name} has no help text"
    assert form.example, f"{form.name} has no example"
    assert not form.example.startswith("!"), "examples are written without the prefix"


@pytest.mark.parametrize("form", FORMS, ids=lambda s: s.name)
def test_every_example_parses_with_its_own_spec(form: CommandSpec) -> None:
    word, _, rest = form.example.partition(" ")
    spec = REGISTRY.get(word)
    assert spec is not None, f"{form.example!r} names no registered command"
    if spec.vote_policy is not None or spec.reason:
        rest, _ = split_reason(rest)  # the dispatcher takes ` -- why` off first
    args = spec.parse(rest)  # raises UsageError when the example does not fit
    # A subcommand's example reaches that subcommand; a command's, its own form.
    assert spec.chosen(args) is form


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_vote_policy_is_none_or_a_policy_the_config_knows(spec: CommandSpec) -> None:
    assert spec.vote_policy is None or spec.vote_policy in POLICY_NAMES
    for sub in spec.subcommands:
        assert sub.vote_policy is None, "subcommands run with their family's vote"


def test_policy_names_are_the_documented_ones() -> None:
    expected = {
        "upgrade",
        "major_upgrade",
        "rollback",
        "undeploy",
        "restore",
        "deploy_version_change",
        "confirm_urgent",
    }
    assert expected == POLICY_NAMES
