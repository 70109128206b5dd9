"""Upgrades: the pure logic exhaustively, then the check, the upgrade job and the
commands over fakes of Apps, Swarm and Backups (recipes are real git repos)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.app import Bot
from bot.config import Config, parse_config
from bot.core.progress import Progress
from bot.errors import UserError
from bot.features.upgrades import (
    AppCheck,
    CheckReport,
    Drift,
    Problem,
    UpgradePlan,
    Upgrades,
    auto_patches,
    auto_refusal,
    drift_of,
    excerpt,
    facts,
    newest_release,
    news,
    opted_in,
    plan_summary,
    render_report,
    restore_hint,
    split_pinned,
    steps_between,
)
from bot.ops.abra import AppEnv
from bot.ops.recipes import RecipeError, Version, parse_version, step_kind
from bot.ops.swarm import ServiceInfo, SwarmError
from tests.fakes import FakeApps, FakeBackups, FakeChat, FakeSwarm, swap_services
from tests.harness.recipes import git, make_recipe
from tests.unit.helpers import ADMIN, OPERATOR, ROOM, VIEWER, BotFactory, chat_of, drain, message

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def v(text: str) -> Version:
    version = parse_version(text)
    assert version is not None
    return version


def vs(*texts: str) -> list[Version]:
    return [v(t) for t in texts]


# ============================================================================ pure logic


@pytest.mark.parametrize(
    ("current", "tags", "newest"),
    [
        ("1.0.0", ["1.0.0", "1.0.1", "1.1.0"], "1.1.0"),
        ("1.1.0", ["1.0.0", "1.0.1", "1.1.0"], None),  # runs the newest
        ("1.9.0", ["1.9.0", "1.10.0", "1.2.0"], "1.10.0"),  # semver, not text order
        ("2.0.0", ["1.0.0", "1.5.0"], None),  # runs something newer than any tag
        ("1.0.0+a", ["1.0.0+b"], None),  # same recipe version, other upstream
        ("1.0.0", [], None),
        ("0.9.0+x", ["1.0.0+2.0", "1.0.0+1.0"], "1.0.0+2.0"),  # ties: the last tag
    ],
)
def test_newest_release(current: str, tags: list[str], newest: str | None) -> None:
    found = newest_release(v(current), vs(*tags))
    assert (found.text if found else None) == newest


def test_steps_between_classifies_each_step() -> None:
    tags = vs("1.0.0+1", "1.0.1+1", "1.1.0+2", "2.0.0+3", "2.0.1+3", "3.0.0+4")
    steps = steps_between(v("1.0.0+1"), v("2.0.1+3"), reversed(tags))
    assert [(s.text, kind) for s, kind in steps] == [
        ("1.0.1+1", "patch"),
        ("1.1.0+2", "minor"),
        ("2.0.0+3", "major"),
        ("2.0.1+3", "patch"),
    ]


def test_steps_between_one_step_per_version_and_target_always_last() -> None:
    tags = vs("1.0.0", "1.0.1+a", "1.0.1+b", "1.2.0")
    steps = steps_between(v("1.0.0"), v("1.2.0"), tags)
    assert [(s.text, kind) for s, kind in steps] == [("1.0.1+b", "patch"), ("1.2.0", "minor")]
    # A target no longer among the tags still ends the list.
    assert [s.text for s, _ in steps_between(v("1.0.0"), v("1.3.0"), tags)][-1] == "1.3.0"
    assert steps_between(v("1.0.0"), v("1.0.1+a"), tags)[-1][0].text == "1.0.1+a"


semver = st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4))


@given(st.lists(semver, min_size=2, max_size=12, unique=True))
def test_a_move_is_major_exactly_when_one_of_its_steps_is(keys: list[tuple[int, int, int]]) -> None:
    versions = sorted(vs(*(".".join(map(str, k)) for k in keys)))
    current, target = versions[0], versions[-1]
    steps = steps_between(current, target, versions)
    assert [s for s, _ in steps] == versions[1:]
    overall = step_kind(current, target)
    kinds = {kind for _, kind in steps}
    assert (overall == "major") == ("major" in kinds)
    assert overall in ("patch", "minor", "major")
    if overall == "patch":
        assert kinds == {"patch"}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (f"127.0.0.1:5000/busybox:1.0@{A}", ("127.0.0.1:5000/busybox:1.0", A)),
        (f"nginx:1.25@{A}", ("nginx:1.25", A)),
        (f"git.coop/coop-cloud/app:2.0.1-rc@{B}", ("git.coop/coop-cloud/app:2.0.1-rc", B)),
        (f"nginx@{A}", None),  # pinned by digest alone: no tag to ask about
        (f"127.0.0.1:5000/busybox@{A}", None),  # the colon is the registry's port
        ("nginx:1.25", None),  # not pinned: nothing to compare
        ("nginx", None),
        ("nginx:1.25@sha256:abc", None),  # not a digest
        (f"nginx:@{A}", None),
    ],
)  # fmt: skip
def test_split_pinned(image: str, expected: tuple[str, str] | None) -> None:
    assert split_pinned(image) == expected


def test_drift_of() -> None:
    assert drift_of("app", f"x/y:1.0@{A}", A) is None
    assert drift_of("app", f"x/y:1.0@{A}", B) == Drift("app", "x/y:1.0", A, B)
    assert drift_of("app", "x/y:1.0", B) is None


def service(
    stack: str,
    version: str | None = "1.0.0+1.0",
    *,
    image: str = "local/busybox:1.0",
    labels: dict[str, str] | None = None,
    spec: int = 1,
    short: str = "app",
) -> ServiceInfo:
    all_labels = {"com.docker.stack.namespace": stack, **(labels or {})}
    if version is not None:
        all_labels[f"coop-cloud.{stack}.version"] = version
    return ServiceInfo(
        id=f"id-{stack}-{short}",
        name=f"{stack}_{short}",
        short_name=short,
        image=image,
        replicas_desired=1,
        replicas_running=1,
        update_state=None,
        update_message="",
        labels=all_labels,
        version=spec,
        has_previous_spec=False,
        previous_image=None,
        recent_errors=[],
    )


def test_opted_in_on_any_service() -> None:
    label = {"coop-cloud.s.autoupdate": "true"}
    assert opted_in("s", [service("s"), service("s", labels=label, short="db")])
    assert not opted_in("s", [service("s", labels={"coop-cloud.s.autoupdate": "false"})])
    assert not opted_in("s", [service("s", labels={"coop-cloud.other.autoupdate": "true"})])
    assert not opted_in("s", [])


def test_excerpt_newest_first_first_lines_escaped_and_cut() -> None:
    notes = [("1.0.1", "\n  Fixes a | pipe.\nMore."), ("1.1.0", ""), ("2.0.0", "BREAKING: db.\n")]
    assert excerpt(notes) == "`2.0.0: BREAKING: db. · 1.0.1: Fixes a \\| pipe.`"
    cut = excerpt([("1.0.0", "x" * 200)], limit=20)
    assert len(cut) == 22 and cut.endswith("…`")  # 20 characters in a code span
    assert excerpt([]) == ""


def app(
    domain: str = "a.test",
    deployed: str | None = "1.0.0",
    newest: str | None = "1.0.1",
    kind: Any = "patch",
    **more: Any,
) -> AppCheck:
    return AppCheck(domain, "default", "demo", deployed, newest, kind, **more)


def test_facts_and_news() -> None:
    first = CheckReport(
        (
            app(notes=(("1.0.1", "Fix."),)),
            app("b.test", newest=None, kind=None, drift=(Drift("web", "x:1", A, B),)),
        ),
        (Problem("fetch:demo", "recipe demo: offline"),),
    )
    assert set(facts(first)) == {
        "upgrade:a.test:1.0.0:1.0.1",
        "drift:b.test:web:" + B,
        "problem:fetch:demo",
    }
    assert news([], first) == set(facts(first))
    assert news(facts(first), first) == set()  # nothing new: no repeat
    # The same problem with another error text is the same fact.
    reworded = dataclasses.replace(first, problems=(Problem("fetch:demo", "timed out"),))
    assert news(facts(first), reworded) == set()
    # A newer release is news; so is a tag that moved again.
    moved = Drift("web", "x:1", A, A[:-1] + "c")
    later = CheckReport(
        (app(newest="1.0.2"), app("b.test", newest=None, kind=None, drift=(moved,)))
    )
    assert news(facts(first), later) == {
        "upgrade:a.test:1.0.0:1.0.2",
        "drift:b.test:web:" + A[:-1] + "c",
    }


def test_problems_shared_by_apps_are_listed_once() -> None:
    shared = Problem("registry:default:x:1", "registry down")
    report = CheckReport((app(problems=(shared,)), app("b.test", problems=(shared,))), (shared,))
    assert report.all_problems() == [shared]
    assert render_report(report).count("registry down") == 1


def test_auto_patches_only_opted_in_patch_steps_once() -> None:
    report = CheckReport(
        (
            app("p.test", autoupdate=True),
            app("m.test", newest="1.1.0", kind="minor", autoupdate=True),
            app("n.test"),  # not opted in
            app("u.test", newest=None, kind=None, autoupdate=True),  # up to date
            app("t.test", autoupdate=True),
        )
    )
    assert auto_patches(report, ["t.test@1.0.1"]) == [("p.test", "1.0.1")]


def plan(kind: Any = "patch", autoupdate: bool = True, **more: Any) -> UpgradePlan:
    env = AppEnv("a.test", "default", Path("a.test.env"), "demo", None, {})
    target = {"patch": "1.0.1", "minor": "1.1.0", "major": "2.0.0"}[kind]
    defaults: dict[str, Any] = {
        "steps": ((target, kind),),
        "notes": ((target, "Notes."),),
        "backup": "Back up first.",
    }
    defaults.update(more)
    return UpgradePlan(env, v("1.0.0"), v(target), kind, autoupdate=autoupdate, **defaults)


def test_auto_refusal_reasons() -> None:
    assert auto_refusal(plan(), auto_patch=True) is None
    assert auto_refusal(plan(), auto_patch=False) == "upgrades.auto_patch is off"
    why = auto_refusal(plan(autoupdate=False), auto_patch=True)
    assert why is not None and "coop-cloud.a_test.autoupdate=true" in why
    why = auto_refusal(plan("minor"), auto_patch=True)
    assert why is not None and "minor step" in why
    assert "major step" in (auto_refusal(plan("major"), auto_patch=True) or "")


def test_render_report_table_drift_problems_and_new_marks() -> None:
    report = CheckReport(
        (
            app(notes=(("1.0.1", "Fixes login."),)),
            app("b.test", newest="2.0.0", kind="major", notes=(("2.0.0", "BREAKING: db."),)),
            app("c.test", newest=None, kind=None, drift=(Drift("web", "reg/x:1", A, B),)),
        ),
        (Problem("fetch:demo", "recipe demo: git fetch failed: unreachable"),),
    )
    text = render_report(report, new={"upgrade:b.test:1.0.0:2.0.0"})
    assert text.splitlines()[0] == (
        "**Upgrade check**: 3 deployed app(s), 2 can be upgraded, 1 with image drift."
    )
    assert "| a.test | 1.0.0 → **1.0.1** | patch | `1.0.1: Fixes login.` |" in text
    b_row = "| 🆕 b.test | 1.0.0 → **2.0.0** | ⚠ **major** (breaking) | `2.0.0: BREAKING: db.` |"
    assert b_row in text
    assert "c.test |" not in text  # up to date: not a row
    assert (
        f"🔁 Image drift in c.test (web): `reg/x:1` runs {A[:19]}, the tag now points to {B[:19]}"
        in text
    )
    assert "`!deploy c.test` pins the new one" in text
    assert "- ⚠ recipe demo: git fetch failed: unreachable" in text
    assert "`!upgrade <app> [version]`" in text


def test_render_report_all_up_to_date() -> None:
    text = render_report(CheckReport((app(newest=None, kind=None),)))
    assert "0 can be upgraded" in text and "runs its recipe's newest release" in text
    assert "|" not in text
    assert render_report(CheckReport(())).startswith("**Upgrade check**: 0 deployed app(s)")


def test_plan_summary_lists_steps_plan_and_every_note() -> None:
    text = plan_summary(
        plan(
            "major",
            steps=(("1.0.1", "patch"), ("1.1.0", "minor"), ("2.0.0", "major")),
            notes=(
                ("1.0.1", "Fix."), ("1.1.0", "New feature.\nSecond line."), ("2.0.0", "BREAKING.")
            ),
        )
    )  # fmt: skip
    assert "1.0.0 → **2.0.0**, a major step (⚠ **major**" in text
    assert "Steps: 1.0.0 → 1.0.1 (patch) → 1.1.0 (minor) → 2.0.0 (major)" in text
    assert "1. Back up first." in text
    for line in ("**1.0.1**\n```\nFix.\n```", "```\nNew feature.\nSecond line.\n```"):
        assert line in text
    assert "No release notes" in plan_summary(plan(notes=()))


def test_plan_summary_cuts_long_notes() -> None:
    notes = tuple((f"1.0.{n}", "x" * 5000) for n in range(1, 6))
    text = plan_summary(plan(notes=notes))
    assert "(cut; the rest is in release/1.0.1)" in text
    assert "… the notes of 1.0.4 to 1.0.5 are in the recipe's release/ folder." in text
    assert len(text) < 15000


def test_restore_hint() -> None:
    assert restore_hint("a.test", "abcd1234", True) == (
        "💾 If the failed upgrade changed the data (a migration), snapshot `abcd1234` "
        "(taken before this upgrade) restores it: `!restore a.test abcd1234` (it needs a vote)."
    )
    assert "(its newest)" in restore_hint("a.test", "abcd1234", False)
    assert "No snapshot of a.test" in restore_hint("a.test", None, False)


# ============================================================================ fakes

RELEASES = [
    ("1.0.0+1.0", {"compose.yml": "v1\n", "release/1.0.0+1.0": "First release.\n"}),
    ("1.0.1+1.0", {"compose.yml": "v2\n", "release/1.0.1+1.0": "Fixes a bug.\n"}),
    ("1.1.0+1.1", {"compose.yml": "v3\n", "release/1.1.0+1.1": "New busybox.\n"}),
    ("2.0.0+2.0", {"compose.yml": "v4\n", "release/2.0.0+2.0": "BREAKING: new layout.\n"}),
]


@dataclass
class Site:
    config: Config
    apps: FakeApps
    backups: FakeBackups | None
    upgrades: Upgrades

    @property
    def swarm(self) -> FakeSwarm:
        return self.apps.swarms["default"]

    def add(
        self,
        domain: str,
        version: str | None = "1.0.0+1.0",
        recipe: str = "demo",
        *,
        deployed: bool = True,
        **kw: Any,
    ) -> AppEnv:
        env = AppEnv(domain, "default", self.apps.abra_dir / f"{domain}.env", recipe, None, {})
        self.apps.envs.append(env)
        if deployed:
            self.swarm.stacks_of[env.stack_name] = [service(env.stack_name, version, **kw)]
        return env


def make_site(
    tmp_path: Path,
    *,
    backups: FakeBackups | None = None,
    recipes: tuple[str, ...] = ("demo",),
    **upgrades: Any,
) -> Site:
    abra = tmp_path / "abra"
    for name in recipes:
        if not (abra / "recipes" / name).exists():
            make_recipe(abra / "recipes", name, RELEASES)
    config = parse_config(
        {
            "abra_dir": str(abra),
            "data_dir": str(tmp_path / "data"),
            "upgrades": {"fetch_recipes": False, **upgrades},
        },
        tmp_path,
    )
    apps = FakeApps({"default": FakeSwarm()}, abra_dir=abra)
    from bot.core.store import Store

    store = Store(tmp_path / "upgrades.sqlite")
    return Site(config, apps, backups, Upgrades(config, apps, store, backups))  # type: ignore[arg-type]


# ============================================================================ the check


async def test_check_reports_steps_notes_drift_and_keeps_going(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.add("old.test", image=f"reg/x:1@{A}")
    site.add("minor.test", "1.0.1+1.0")
    site.add("new.test", "2.0.0+2.0", image=f"reg/y:1@{A}")
    site.add("chaos.test", "deadbeef", labels={"coop-cloud.chaos_test.chaos": "true"})
    site.add("bare.test", None, short="web", spec=3)  # deployed without labels
    site.add("gone.test", deployed=False)  # not deployed: not checked
    site.swarm.digests = {
        "reg/x:1": B,
        "reg/y:1": SwarmError("registry lookup of reg/y:1 failed: connection refused"),
    }
    report = await site.upgrades.check()
    by = {a.domain: a for a in report.apps}
    assert sorted(by) == ["bare.test", "chaos.test", "minor.test", "new.test", "old.test"]
    old = by["old.test"]
    assert (old.deployed, old.newest, old.kind) == ("1.0.0+1.0", "2.0.0+2.0", "major")
    assert [n for n, _ in old.notes] == ["1.0.1+1.0", "1.1.0+1.1", "2.0.0+2.0"]
    assert old.drift == (Drift("app", "reg/x:1", A, B),)
    assert by["minor.test"].kind == "major" and by["minor.test"].drift == ()
    assert by["new.test"].newest is None
    assert [p.text for p in by["new.test"].problems] == [
        "registry lookup of reg/y:1 failed: connection refused"
    ]
    assert "chaos deploy" in by["chaos.test"].problems[0].text
    assert "has no version label" in by["bare.test"].problems[0].text
    assert sorted(site.swarm.asked) == ["reg/x:1", "reg/y:1"]  # local images: no lookup


async def test_check_is_concurrent_within_the_limit_and_asks_each_image_once(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path, concurrency=3)
    for n in range(8):
        site.add(f"a{n}.test", image=f"reg/x{n % 6}:1@{A}")
    report = await site.upgrades.check()
    assert len(report.apps) == 8 and all(a.newest == "2.0.0+2.0" for a in report.apps)
    assert sorted(site.swarm.asked) == sorted(f"reg/x{n}:1" for n in range(6))
    assert 1 < site.swarm.most_in_flight <= 3


async def test_check_reports_fetch_failures_once_per_recipe_and_unreachable_servers(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path, recipes=("demo", "offline", "local"), fetch_recipes=True)
    git(tmp_path / "abra/recipes/offline", "remote", "add", "origin", str(tmp_path / "nowhere"))
    upstream = make_recipe(tmp_path / "upstream", "local", RELEASES)
    local = tmp_path / "abra/recipes/local"
    git(local, "remote", "add", "origin", str(upstream))
    git(upstream, "tag", "2.0.1+2.0")  # only upstream has it: the fetch brings it
    site.add("a.test", recipe="offline")
    site.add("b.test", recipe="offline")
    site.add("c.test", recipe="demo")
    site.add("d.test", recipe="local")
    site.apps.swarms["far"] = FakeSwarm(unreachable="unix:///nowhere")
    site.apps.envs.append(AppEnv("far.test", "far", tmp_path / "far.env", "demo", None, {}))
    report = await site.upgrades.check()
    texts = [p.text for p in report.all_problems()]
    assert texts[0] == "server far: server unreachable: unix:///nowhere"
    offline = [t for t in texts if t.startswith("recipe offline:")]
    assert len(offline) == 1 and "git fetch failed" in offline[0]
    assert any(t.startswith("recipe demo:") and "no `origin` remote" in t for t in texts)
    by = {a.domain: a for a in report.apps}
    assert by["a.test"].newest == "2.0.0+2.0"  # checked with what is there
    assert by["d.test"].newest == "2.0.1+2.0"


async def test_unexpected_errors_of_one_app_do_not_stop_the_check(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.add("a.test")
    site.add("b.test", recipe="missing")
    report = await site.upgrades.check()
    by = {a.domain: a for a in report.apps}
    assert by["a.test"].newest == "2.0.0+2.0"
    assert "is not a git repository" in by["b.test"].problems[0].text


async def test_remember_says_only_what_is_new(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.add("a.test")
    first = await site.upgrades.check()
    assert site.upgrades.remember(first) == set(facts(first))
    assert site.upgrades.remember(await site.upgrades.check()) == set()
    # Upgraded: the fact goes; an older version coming back is news again.
    site.swarm.stacks_of["a_test"] = [service("a_test", "2.0.0+2.0")]
    assert site.upgrades.remember(await site.upgrades.check()) == set()
    site.swarm.stacks_of["a_test"] = [service("a_test", "1.0.0+1.0")]
    assert site.upgrades.remember(await site.upgrades.check()) == {
        "upgrade:a.test:1.0.0+1.0:2.0.0+2.0"
    }


# ============================================================================ prepare


async def test_prepare_default_newest_with_steps_notes_and_backup(tmp_path: Path) -> None:
    site = make_site(tmp_path, backups=FakeBackups())
    env = site.add("a.test", labels={"coop-cloud.a_test.autoupdate": "true"})
    p = await site.upgrades.prepare(env, None)
    assert (p.current.text, p.target.text, p.kind) == ("1.0.0+1.0", "2.0.0+2.0", "major")
    assert p.steps == (("1.0.1+1.0", "patch"), ("1.1.0+1.1", "minor"), ("2.0.0+2.0", "major"))
    assert [n for n, _ in p.notes] == ["1.0.1+1.0", "1.1.0+1.1", "2.0.0+2.0"]
    assert p.autoupdate and p.will_back_up
    assert p.fingerprint == "1.0.0+1.0→2.0.0+2.0"
    patch = await site.upgrades.prepare(env, "1.0.1+1.0")
    assert (patch.kind, patch.notes) == ("patch", (("1.0.1+1.0", "Fixes a bug.\n"),))


@pytest.mark.parametrize(
    ("backups", "backup_first", "expected"),
    [
        (FakeBackups(), True, "Back up the app's data first"),
        (FakeBackups(labelled=False), True, "no `backupbot.backup=true` label"),
        (None, True, "no `backups:` section"),
        (FakeBackups(), False, "upgrades.backup_first is off"),
    ],
)
async def test_prepare_says_whether_it_backs_up(
    tmp_path: Path, backups: FakeBackups | None, backup_first: bool, expected: str
) -> None:
    site = make_site(tmp_path, backups=backups, backup_first=backup_first)
    p = await site.upgrades.prepare(site.add("a.test"), None)
    assert expected in p.backup
    assert p.will_back_up == (expected == "Back up the app's data first")


@pytest.mark.parametrize(
    ("deployed", "version", "error"),
    [
        ("1.1.0+1.1", "1.1.0+1.1", "already runs 1.1.0+1.1; `!deploy a.test` redeploys it"),
        ("1.1.0+1.1", "1.0.1+1.0", "`!rollback a.test 1.0.1+1.0` goes back"),
        ("2.0.0+2.0", None, "already runs 2.0.0+2.0, the newest release of demo"),
        ("1.0.0+1.0", "9.9.9", "unknown version 9.9.9 of recipe demo"),
        ("cafebabe", None, "which is not a release; `!deploy a.test <version>`"),
    ],
)
async def test_prepare_refuses_what_is_not_an_upgrade(
    tmp_path: Path, deployed: str, version: str | None, error: str
) -> None:
    site = make_site(tmp_path)
    env = site.add("a.test", deployed)
    with pytest.raises(UserError) as caught:
        await site.upgrades.prepare(env, version)
    assert error in str(caught.value)


async def test_prepare_refuses_an_app_that_is_not_deployed(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = site.add("a.test", deployed=False)
    with pytest.raises(UserError, match=r"a\.test is not deployed; `!deploy a\.test` deploys it"):
        await site.upgrades.prepare(env, None)
    with pytest.raises(RecipeError):
        site.add("b.test")
        await site.upgrades.prepare(site.apps.envs[-1], "1.0.0;rm")


# ============================================================================ the upgrade job


def progress() -> tuple[Progress, FakeChat]:
    chat = FakeChat()
    return Progress(chat, ROOM, "$ask", None, 0.0), chat


async def test_upgrade_backs_up_then_deploys_in_one_message(tmp_path: Path) -> None:
    backups = FakeBackups()
    site = make_site(tmp_path, backups=backups)
    env = site.add("a.test")
    p, chat = progress()
    report = await site.upgrades.upgrade(await site.upgrades.prepare(env, None), p, OPERATOR, 7)
    assert backups.taken == ["a.test"]
    assert site.apps.deploys == [("a.test", "2.0.0+2.0", "upgrade")]
    assert report.splitlines()[:2] == [
        "⬆ **Upgrade a.test**: 1.0.0+1.0 → 2.0.0+2.0, ⚠ **major** (breaking)",
        "✅ Backed up first: snapshot `01234567`",
    ]
    assert report.endswith("✅ a.test runs 2.0.0+2.0.")
    assert len(chat.sent) == 1  # one progress message, edited
    shown = [chat.sent[0].markdown, *chat.edits_of(chat.sent[0].event_id)]
    assert any("⏳ Backing up first" in t for t in shown)
    assert any(t.startswith("⬆ **Upgrade a.test**") and "💾 Backing up" in t for t in shown)
    deploying = next(t for t in shown if "⏳ deploying" in t)
    assert deploying.index("Backed up first") < deploying.index("**Upgrade a.test**\n⏳")


async def test_a_failed_backup_aborts_the_upgrade(tmp_path: Path) -> None:
    site = make_site(tmp_path, backups=FakeBackups(fails="pre-hook in app failed: exit 1"))
    env = site.add("a.test")
    p, _ = progress()
    with pytest.raises(UserError) as caught:
        await site.upgrades.upgrade(await site.upgrades.prepare(env, None), p, OPERATOR)
    text = str(caught.value)
    assert "The backup failed, so the upgrade did not start; a.test still runs 1.0.0+1.0" in text
    assert "pre-hook in app failed: exit 1" in text
    assert site.apps.deploys == []
    (entry, *_) = site.upgrades.store.audit_log("a.test")
    assert entry.action == "upgrade.aborted"


async def test_a_failed_deploy_names_the_snapshot_taken_first(tmp_path: Path) -> None:
    site = make_site(tmp_path, backups=FakeBackups())
    site.apps.deploy_fails = "Did not converge; rolled back"
    env = site.add("a.test")
    p, _ = progress()
    with pytest.raises(UserError) as caught:
        await site.upgrades.upgrade(await site.upgrades.prepare(env, None), p, OPERATOR)
    text = str(caught.value)
    assert "❌ Did not converge; rolled back" in text
    assert "`!restore a.test 01234567` (it needs a vote)" in text
    assert "taken before this upgrade" in text


@pytest.mark.parametrize(
    ("backups", "backup_first", "hint"),
    [
        (FakeBackups(), False, "`!restore a.test feedbeef`"),  # the newest there is
        (FakeBackups(newest=None), False, "No snapshot of a.test exists"),
        (FakeBackups(labelled=False), True, "a.test has no backups"),
        (None, True, "a.test has no backups"),
    ],
)
async def test_a_failed_deploy_without_a_backup_first(
    tmp_path: Path, backups: FakeBackups | None, backup_first: bool, hint: str
) -> None:
    site = make_site(tmp_path, backups=backups, backup_first=backup_first)
    site.apps.deploy_fails = "Did not converge"
    env = site.add("a.test")
    p, _ = progress()
    with pytest.raises(UserError) as caught:
        await site.upgrades.upgrade(await site.upgrades.prepare(env, "1.0.1+1.0"), p, OPERATOR)
    assert hint in str(caught.value)
    assert backups is None or backups.taken == []


async def test_a_deploy_that_changed_nothing_needs_no_restore(tmp_path: Path) -> None:
    site = make_site(tmp_path, backups=FakeBackups())
    site.apps.deploy_fails = "Pre-flight failed for a.test; nothing was created"
    site.apps.deploy_changes_spec = False
    env = site.add("a.test")
    p, _ = progress()
    with pytest.raises(UserError) as caught:
        await site.upgrades.upgrade(await site.upgrades.prepare(env, None), p, OPERATOR)
    assert "Nothing was changed: a.test still runs 1.0.0+1.0." in str(caught.value)
    assert "!restore" not in str(caught.value)


# ============================================================================ the commands


def wire(bot: Bot, site: Site) -> None:
    """The bot's commands on the fakes (Apps and Upgrades are built in bot/app.py)."""
    site.upgrades.store = bot.store
    swap_services(bot.services, apps=site.apps, upgrades=site.upgrades)


async def ask(bot: Bot, body: str, sender: str = OPERATOR) -> list[str]:
    msg = message(body, sender)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    chat = chat_of(bot)
    ids = [s.event_id for s in chat.sent if s.reply_to == msg.event_id]
    return [chat.shown(i) for i in ids]


async def test_upgrades_command_for_members(tmp_path: Path, make_bot: BotFactory) -> None:
    site = make_site(tmp_path)
    site.add("a.test")
    bot = make_bot()
    wire(bot, site)
    (text,) = await ask(bot, "!upgrades", VIEWER)
    assert "| a.test | 1.0.0+1.0 → **2.0.0+2.0** | ⚠ **major** (breaking) |" in text
    assert "🆕" not in text
    (again,) = await ask(bot, "!upgrades", VIEWER)  # members always get the answer
    assert again == text


async def test_scheduled_check_posts_only_news_and_starts_auto_patches(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = make_site(tmp_path, auto_patch=True)
    site.add("auto.test", "1.1.0+1.1", labels={"coop-cloud.auto_test.autoupdate": "true"})
    site.add("manual.test", "1.1.0+1.1")
    git(tmp_path / "abra/recipes/demo", "tag", "1.1.1+1.1")  # a patch, but 2.0.0 is newer
    bot = make_bot(upgrades={"auto_patch": True})
    wire(bot, site)
    chat = chat_of(bot)
    await bot.dispatcher.run_scheduled("upgrades")
    await drain(bot)
    (report,) = [s.markdown for s in chat.sent if s.markdown.startswith("**Upgrade check**")]
    assert "🆕 auto.test" in report and "🆕 manual.test" in report
    assert site.apps.deploys == []  # newest is a major step: no auto-patch
    # Nothing new: nothing posted.
    before = len(chat.sent)
    await bot.dispatcher.run_scheduled("upgrades")
    await drain(bot)
    assert len(chat.sent) == before
    # 2.0.0 withdrawn upstream: the newest step is now a patch.
    git(tmp_path / "abra/recipes/demo", "tag", "-d", "2.0.0+2.0")
    await bot.dispatcher.run_scheduled("upgrades")
    await drain(bot)
    assert site.apps.deploys == [("auto.test", "1.1.1+1.1", "upgrade")]  # no vote
    texts = chat.texts()[before:]
    assert any("🆕 auto.test" in t for t in texts)
    assert not any("Proposal" in t for t in texts)
    assert any("auto.test runs 1.1.1+1.1" in chat.shown(s.event_id) for s in chat.sent[before:])
    # A failed or done auto-patch is not started again.
    await bot.dispatcher.run_scheduled("upgrades")
    await drain(bot)
    assert len(site.apps.deploys) == 1


async def test_the_scheduler_never_opens_proposals(tmp_path: Path, make_bot: BotFactory) -> None:
    site = make_site(tmp_path, auto_patch=True)
    site.add("a.test", labels={"coop-cloud.a_test.autoupdate": "true"})
    site.add("b.test")  # not opted in
    bot = make_bot(upgrades={"auto_patch": True})
    wire(bot, site)
    chat = chat_of(bot)
    for command, why in [
        ("upgrade a.test", "is a major step; only patch steps run without a vote"),
        ("upgrade b.test 1.0.1+1.0", "not labelled `coop-cloud.b_test.autoupdate=true`"),
    ]:
        await bot.dispatcher.run_scheduled(command)
        await drain(bot)
        assert why in chat.texts()[-1] and "Not upgraded automatically" in chat.texts()[-1]
    assert not any("Proposal" in t for t in chat.texts())
    assert site.apps.deploys == []


async def test_upgrade_is_proposed_with_the_major_quorum(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = make_site(tmp_path)
    site.add("a.test")
    bot = make_bot(approvals={"required": 1, "policies": {"major_upgrade": {"required": 3}}})
    wire(bot, site)
    (major,) = await ask(bot, "!upgrade a.test")
    assert "Proposal" in major and "Needs **3** approvals" in major
    assert "BREAKING: new layout.\n```" in major and "```\nFixes a bug." in major
    (patch,) = await ask(bot, "!upgrade a.test 1.0.1+1.0")
    assert "Needs **1** approval " in patch
    (row,) = [r for r in bot.store.proposals() if r.text == "!upgrade a.test"]
    assert row.policy == "major_upgrade"
    assert site.apps.deploys == []


async def test_upgrade_refusals_and_roles(tmp_path: Path, make_bot: BotFactory) -> None:
    site = make_site(tmp_path)
    site.add("a.test", "1.1.0+1.1")
    bot = make_bot()
    wire(bot, site)
    (down,) = await ask(bot, "!upgrade a.test 1.0.0+1.0")
    assert "not an upgrade" in down and "`!rollback a.test 1.0.0+1.0`" in down
    (viewer,) = await ask(bot, "!upgrade a.test", VIEWER)
    assert viewer.startswith("🔒 `!upgrade` needs the operator role")
    (bad,) = await ask(bot, "!upgrade a.test '$(reboot)'", ADMIN)
    assert "Usage" in bad
    (unknown,) = await ask(bot, "!upgrade nowhere.test")
    assert "No app nowhere.test" in unknown
    assert bot.store.proposals() == [] and site.apps.deploys == []


async def test_an_approved_upgrade_checks_the_app_did_not_change_while_it_waited(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = make_site(tmp_path)
    site.add("a.test")
    bot = make_bot(approvals={"required": 1})
    wire(bot, site)
    (proposal,) = await ask(bot, "!upgrade a.test 1.1.0+1.1")
    found = re.search(r"Proposal `(\w+)`", proposal)
    assert found
    locks = bot.jobs.locks
    await locks.acquire("a.test")  # another job works on the app
    await bot.dispatcher.handle(message(f"!approve {found.group(1)}", ADMIN))
    site.swarm.stacks_of["a_test"] = [service("a_test", "1.0.1+1.0")]  # that job's doing
    locks.release("a.test")
    await drain(bot)
    chat = chat_of(bot)
    assert any(
        "Not run: things changed since the vote" in chat.shown(s.event_id)
        and "1.0.1+1.0 → 1.1.0+1.1" in chat.shown(s.event_id)
        for s in chat.sent
    )
    assert site.apps.deploys == []


# ================================================================ votes mean what was voted


@dataclass
class VersionedApps(FakeApps):
    """FakeApps with what the deploy and rollback planners read: the recipe's newest
    release and HEAD, and the deploy history."""

    history: list[str] = dataclasses.field(default_factory=list)  # ok deploys, oldest first

    async def newest(self, env: AppEnv) -> Version | None:
        return self.recipe(env.recipe).newest()

    async def head(self, env: AppEnv) -> str:
        return self.recipe(env.recipe).head()

    def previous_version(self, env: AppEnv, current: str | None) -> str | None:
        return next((v for v in reversed(self.history) if v != current), None)


def votes_site(tmp_path: Path, releases: int = len(RELEASES)) -> Site:
    recipes = tmp_path / "abra" / "recipes"
    make_recipe(recipes, "demo", RELEASES[:releases])
    site = make_site(tmp_path, backups=FakeBackups())
    apps = VersionedApps(site.apps.swarms, abra_dir=site.apps.abra_dir)
    site.apps = apps
    site.upgrades.apps = apps  # type: ignore[assignment]
    return site


async def propose(bot: Bot, body: str) -> str:
    (text,) = await ask(bot, body)
    found = re.search(r"Proposal `(\w+)`", text)
    assert found, text
    return found.group(1)


async def approve(bot: Bot, proposal: str) -> None:
    await bot.dispatcher.handle(message(f"!approve {proposal}", ADMIN))
    await drain(bot)


def shown(bot: Bot) -> list[str]:
    chat = chat_of(bot)
    return [chat.shown(s.event_id) for s in chat.sent]


async def test_a_deploy_plan_pins_the_newest_and_a_tag_during_the_vote_changes_nothing(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = votes_site(tmp_path, releases=3)  # up to 1.1.0+1.1
    site.add("a.test", "1.0.0+1.0")
    bot = make_bot(approvals={"required": 1})
    wire(bot, site)
    proposal = await propose(bot, "!deploy a.test")
    (row,) = bot.store.proposals()
    assert row.plan.pins == {"version": "1.1.0+1.1"}
    assert row.plan.fingerprint == "1.0.0+1.0|False|1.1.0+1.1"
    assert row.policy == "deploy_version_change"
    git(tmp_path / "abra/recipes/demo", "tag", "1.2.0+1.2")  # a viewer's !upgrades fetched it
    await approve(bot, proposal)
    assert site.apps.deploys == [("a.test", "1.1.0+1.1", "deploy")]


async def test_a_major_step_through_deploy_needs_the_major_quorum_and_backs_up_first(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = votes_site(tmp_path)
    site.add("a.test", "1.1.0+1.1")
    bot = make_bot(approvals={"required": 1})
    wire(bot, site)
    proposal = await propose(bot, "!deploy a.test 2.0.0+2.0")
    (row,) = bot.store.proposals()
    assert row.policy == "major_upgrade"
    assert row.plan.pins == {"version": "2.0.0+2.0"}
    assert "A **major** step" in row.plan.summary
    await approve(bot, proposal)
    assert site.backups is not None and site.backups.taken == ["a.test"]
    assert site.apps.deploys == [("a.test", "2.0.0+2.0", "deploy")]


async def test_a_rollback_to_a_newer_major_is_a_major_step(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = votes_site(tmp_path)
    site.add("a.test", "1.1.0+1.1")
    bot = make_bot(approvals={"required": 1})
    wire(bot, site)
    proposal = await propose(bot, "!rollback a.test 2.0.0+2.0")
    (row,) = bot.store.proposals()
    assert (row.policy, row.plan.pins) == ("major_upgrade", {"version": "2.0.0+2.0"})
    assert row.plan.fingerprint == "1.1.0+1.1→2.0.0+2.0"
    await approve(bot, proposal)
    assert site.backups is not None and site.backups.taken == ["a.test"]
    assert site.apps.deploys == [("a.test", "2.0.0+2.0", "rollback")]


async def test_a_rollback_pins_its_target_and_goes_stale_if_the_app_moved(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = votes_site(tmp_path)
    assert isinstance(site.apps, VersionedApps)
    site.apps.history = ["1.0.0+1.0", "1.1.0+1.1"]
    site.add("a.test", "1.1.0+1.1")
    bot = make_bot(approvals={"required": 1})
    wire(bot, site)
    proposal = await propose(bot, "!rollback a.test")
    (row,) = bot.store.proposals()
    assert (row.policy, row.plan.pins) == ("rollback", {"version": "1.0.0+1.0"})
    assert row.plan.fingerprint == "1.1.0+1.1→1.0.0+1.0"
    locks = bot.jobs.locks
    await locks.acquire("a.test")  # an upgrade works on the app
    await bot.dispatcher.handle(message(f"!approve {proposal}", ADMIN))
    site.swarm.stacks_of["a_test"] = [service("a_test", "1.0.1+1.0")]  # that upgrade's doing
    locks.release("a.test")
    await drain(bot)
    assert any("Not run: things changed since the vote" in t for t in shown(bot))
    assert site.apps.deploys == []


async def test_a_no_vote_redeploy_that_waited_behind_a_deploy_is_refused(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = votes_site(tmp_path)
    site.add("a.test", "1.0.0+1.0")
    bot = make_bot(approvals={"required": 1})
    wire(bot, site)
    locks = bot.jobs.locks
    await locks.acquire("a.test")  # an approved deploy to 1.1.0 runs
    await bot.dispatcher.handle(message("!deploy a.test 1.0.0+1.0", OPERATOR))  # "a redeploy"
    site.swarm.stacks_of["a_test"] = [service("a_test", "1.1.0+1.1")]
    locks.release("a.test")
    await drain(bot)
    assert any("it now needs a vote" in t for t in shown(bot))
    assert site.apps.deploys == []
    assert bot.store.proposals() == []


async def test_a_chaos_deploy_pins_the_commit_and_a_new_commit_makes_it_stale(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = votes_site(tmp_path)
    site.add("a.test", "1.0.0+1.0")
    recipe = tmp_path / "abra/recipes/demo"
    head = site.apps.recipe("demo").head()
    bot = make_bot(approvals={"required": 1})
    wire(bot, site)
    proposal = await propose(bot, "!deploy a.test --chaos")
    (row,) = bot.store.proposals()
    assert row.plan.pins == {"commit": head}
    assert row.plan.fingerprint == f"1.0.0+1.0|False|chaos@{head}"
    (recipe / "compose.yml").write_text("v5\n")
    git(recipe, "commit", "-qam", "unreleased")
    await approve(bot, proposal)
    assert any(f"Proposal `{proposal}` is stale" in t for t in shown(bot))
    assert site.apps.deploys == []


async def test_an_upgrade_plan_pins_its_target(tmp_path: Path, make_bot: BotFactory) -> None:
    site = votes_site(tmp_path, releases=3)
    site.add("a.test", "1.0.0+1.0")
    bot = make_bot(approvals={"required": 1})
    wire(bot, site)
    proposal = await propose(bot, "!upgrade a.test")
    (row,) = bot.store.proposals()
    assert row.plan.pins == {"version": "1.1.0+1.1"}
    git(tmp_path / "abra/recipes/demo", "tag", "1.2.0+1.2")
    await approve(bot, proposal)
    assert site.apps.deploys == [("a.test", "1.1.0+1.1", "upgrade")]


def test_is_major_step() -> None:
    from bot.features.upgrades import is_major_step

    assert is_major_step("1.1.0+1.1", "2.0.0+2.0")
    assert not is_major_step("2.0.0+2.0", "1.1.0+1.1")  # a downgrade
    assert not is_major_step("1.0.0+1.0", "1.9.0+1.0")
    assert not is_major_step("deadbeef", "2.0.0+2.0")  # a chaos deploy: unversioned
    assert not is_major_step(None, "2.0.0+2.0")  # a first deploy
