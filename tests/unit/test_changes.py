"""The deploy plan (bot/features/apps/changes.py): the diff of running specs against the
rendered target, and the one text that dry runs, proposals and deploys show."""

from __future__ import annotations

import pytest

from bot.features.apps.changes import (
    NameChanges,
    diff,
    first_line,
    name_changes,
    render_changes,
    short_image,
    target_specs,
)
from bot.ops.swarm import SpecSummary, spec_summary

STACK = "s_coop_test"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("before", "after", "versioned", "expected"),
    [
        ({"a"}, {"a"}, True, NameChanges()),
        (set(), {"s_x_v1"}, True, NameChanges(added=("s_x_v1",))),
        ({"s_x_v1"}, set(), True, NameChanges(removed=("s_x_v1",))),
        ({"s_x_v1"}, {"s_x_v2"}, True, NameChanges(bumped=(("s_x_v1", "s_x_v2"),))),
        # env keys are not versioned: a renamed key is one gone and one new
        ({"DB_V1"}, {"DB_V2"}, False, NameChanges(added=("DB_V2",), removed=("DB_V1",))),
        # two candidates for one base: not guessed as a bump
        (
            {"s_x_v1"},
            {"s_x_v2", "s_x_v3"},
            True,
            NameChanges(added=("s_x_v2", "s_x_v3"), removed=("s_x_v1",)),
        ),
        (
            {"s_a_v1", "s_b_v1"},
            {"s_a_v2", "s_c_v1"},
            True,
            NameChanges(added=("s_c_v1",), removed=("s_b_v1",), bumped=(("s_a_v1", "s_a_v2"),)),
        ),
    ],
)
def test_name_changes(
    before: set[str], after: set[str], versioned: bool, expected: NameChanges
) -> None:
    assert name_changes(frozenset(before), frozenset(after), versioned=versioned) == expected


CONFIG = {
    "services": {
        "app": {
            "image": "example/app:2.0",
            "environment": {"DOMAIN": "x.coop.test", "NEW_KEY": None, "DB_PASSWORD_FILE": "/r"},
            "secrets": [{"source": "db_password"}, {"source": "fresh"}],
            "configs": [{"source": "entry", "target": "/e.sh"}],
            "volumes": [
                {"type": "volume", "source": "data", "target": "/data"},
                {"type": "bind", "source": "/etc/hosts", "target": "/h"},
                {"type": "volume", "source": "shared", "target": "/s"},
            ],
        },
        "search": {"image": "example/search:1", "environment": ["A=1", "B"]},
    },
    "secrets": {
        "db_password": {"external": True, "name": f"{STACK}_db_password_v2"},
        "fresh": {"external": True, "name": f"{STACK}_fresh_v1"},
    },
    "configs": {"entry": {"name": f"{STACK}_entry_v5", "file": "entry.sh"}},
    "volumes": {"data": None, "shared": {"external": True}},
}


def test_target_specs_use_the_names_docker_stack_deploy_gives() -> None:
    specs = target_specs(STACK, CONFIG, {"app": f"example/app:2.0@{DIGEST}"})
    assert specs["app"] == SpecSummary(
        image=f"example/app:2.0@{DIGEST}",
        env_keys=frozenset({"DOMAIN", "NEW_KEY", "DB_PASSWORD_FILE"}),
        secrets=frozenset({f"{STACK}_db_password_v2", f"{STACK}_fresh_v1"}),
        configs=frozenset({f"{STACK}_entry_v5"}),
        volumes=frozenset({f"{STACK}_data", "shared"}),
    )
    assert specs["search"] == SpecSummary("example/search:1", env_keys=frozenset({"A", "B"}))


def running_app() -> dict[str, object]:
    """A service Spec as the SDK returns it (values in Env must never reach the plan)."""
    return {
        "Name": f"{STACK}_app",
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": f"example/app:1.0@{DIGEST}",
                "Env": [
                    "DOMAIN=x.coop.test",
                    "OLD_KEY=hunter2-secret-value",
                    "DB_PASSWORD_FILE=/r",
                ],
                "Secrets": [{"SecretName": f"{STACK}_db_password_v1", "File": {}}],
                "Configs": [{"ConfigName": f"{STACK}_entry_v4"}],
                "Mounts": [
                    {"Type": "volume", "Source": f"{STACK}_data", "Target": "/data"},
                    {"Type": "bind", "Source": "/etc/hosts", "Target": "/h"},
                ],
            }
        },
    }


def test_diff_and_render_name_every_change_but_never_a_value() -> None:
    before = {
        "app": spec_summary(running_app()),
        "worker": SpecSummary("example/worker:1"),
        "db": SpecSummary("postgres:16"),
    }
    after = target_specs(STACK, CONFIG, {}) | {"db": SpecSummary("postgres:16")}
    changes = diff(before, after)
    assert [(s.name, s.kind) for s in changes.services] == [
        ("app", "changed"),
        ("db", "same"),
        ("search", "added"),
        ("worker", "removed"),
    ]
    text = render_changes("1.0.0+1.0", "2.0.0+2.0", changes, [("2.0.0+2.0", "\nBREAKING: x\n")])
    assert text.splitlines() == [
        "📋 Plan: 1.0.0+1.0 → **2.0.0+2.0**",
        "  - `app`: image `example/app:1.0@sha256:abababababab` → `example/app:2.0`",
        "    - environment: + `NEW_KEY`, − `OLD_KEY`",
        f"    - secrets: + `{STACK}_fresh_v1`, `{STACK}_db_password_v1` → `{STACK}_db_password_v2`",
        f"    - configs: `{STACK}_entry_v4` → `{STACK}_entry_v5`",
        "    - volumes: + `shared`",
        "  - `search`: added, image `example/search:1`",
        "    - environment: + `A`, + `B`",
        "  - `worker`: removed (was `example/worker:1`)",
        "  - unchanged: `db`",
        "  - notes `2.0.0+2.0`: `BREAKING: x`",
    ]
    assert "hunter2" not in text


def test_a_first_deploy_adds_every_service_and_warnings_follow() -> None:
    text = render_changes(
        None, "1.0.0", diff({}, {"app": SpecSummary("a:1")}), warnings=["X is not set"]
    )
    assert text.splitlines() == [
        "📋 Plan: not deployed → **1.0.0**",
        "  - `app`: added, image `a:1`",
        "⚠ X is not set",
    ]


def test_a_redeploy_of_the_same_spec_shows_nothing_changed() -> None:
    same = {"app": SpecSummary("a:1", env_keys=frozenset({"A"}))}
    assert render_changes("1.0.0", "1.0.0", diff(same, same)).splitlines() == [
        "📋 Plan: 1.0.0 → **1.0.0**",
        "  - unchanged: `app`",
    ]


def test_recipe_text_is_inert_and_notes_are_capped() -> None:
    evil = "[click](https://evil.example) @room `x`"
    assert first_line(f"\n\n{evil}\nmore") == "`` [click](https://evil.example) @room `x` ``"
    long = first_line("y" * 500)
    assert len(long) <= 202
    assert long.endswith("…`")
    assert first_line("  \n") == "(empty)"
    text = render_changes("1", "2", diff({}, {"we`ird": SpecSummary("i:1")}))
    assert "``we`ird``" in text


def test_short_image_cuts_the_digest_as_docker_shows_ids() -> None:
    assert short_image(f"a/b:1@{DIGEST}") == "a/b:1@sha256:abababababab"
    assert short_image("a/b:1") == "a/b:1"
