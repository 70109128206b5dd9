"""Every corpus recipe, with every overlay combination its .env.sample mentions, driven
through the bot in-process (FakeChat, a fake swarm whose compose rendering is the bot's
real loader) and held to the docker 28 CLI's `docker stack config` (the oracle):

- `!secrets` lists exactly the secrets the CLI's rendering makes the services use
  (names with an empty version are named as the .env's problem);
- `!secrets … generate` creates those, honouring the .env's length/charset hints;
- `!apps` shows each app, an untagged recipe as deployable with `--chaos` only;
- a dry run's pre-flight reports every problem at once (each missing secret, each image).

The app .env is the combination's sample as `abra app new` writes it. The bot renders
the version a deploy would use (the newest release, else the recipe's current tree);
the oracle renders a clone checked out at that same version.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.config import parse_config
from bot.ops.abra import CHARSETS, DEFAULT_SECRET_LENGTH, new_app_env, parse_env
from bot.ops.compose import load_compose
from bot.ops.recipes import parse_version
from tests.fakes import FakeChat, FakeSwarm
from tests.harness import compose_oracle as oracle
from tests.harness.corpus import RECIPES, bundle_path, clone_recipe
from tests.unit.helpers import ADMIN, OPERATOR, VIEWER, chat_of, drain, message

UNTAGGED = {"agora", "gaseous", "llamenos"}


@dataclass
class RenderingSwarm(FakeSwarm):
    """A fake swarm that renders compose with the bot's real loader, keeps the secrets it
    is given, and has no image at all (nothing can be pulled here)."""

    created: dict[str, str] = field(default_factory=dict)

    async def config(
        self,
        compose_files: list[Path],
        env: dict[str, str],
        cwd: Path,
        *,
        allow_missing: bool = False,
        unset: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        files = [cwd / f for f in compose_files]
        return load_compose(files, env, allow_missing=allow_missing, unset=unset)

    async def create_secret(self, name: str, value: str, labels: dict[str, str]) -> None:
        self.created[name] = value
        self.secret_names.add(name)

    async def image_available(self, ref: str) -> tuple[bool, str | None, str]:
        return False, None, "no registry is reachable from the tests"


@dataclass(frozen=True)
class App:
    recipe: str
    domain: str
    label: str
    env_text: str
    expected: frozenset[str]  # the secret names the CLI's rendering references
    undefined: frozenset[str]  # secrets services use that no top-level entry defines
    images: frozenset[tuple[str, str]]  # (service, image) of the CLI's rendering


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


def _deployed_ref(repo: Path) -> str | None:
    """The newest release tag by recipe semver (what a deploy takes), or None."""
    tags = [t for t in _git(repo, "tag").split() if parse_version(t)]
    return max(tags, key=lambda t: parse_version(t).key) if tags else None  # type: ignore[union-attr]


def _used(config: Mapping[str, Any]) -> set[str]:
    return {
        str(s["source"] if isinstance(s, dict) else s)
        for svc in (config.get("services") or {}).values()
        for s in (svc or {}).get("secrets") or []
    }


def _referenced(config: Mapping[str, Any]) -> frozenset[str]:
    used = _used(config)
    top = config.get("secrets") or {}
    return frozenset(
        str(top[k]["name"]) for k in used if isinstance(top.get(k), dict) and not top[k].get("file")
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[App]]:
    assert bundle_path("bonfire").is_file(), f"no recipe corpus at {bundle_path('bonfire').parent}"
    assert oracle.cli_has_stack_config(), f"no docker 28 CLI at {oracle.DOCKER_28}"
    root = tmp_path_factory.mktemp("corpus")
    abra = root / "abra"
    (abra / "servers" / "default").mkdir(parents=True)
    apps: list[App] = []
    for recipe in RECIPES:
        clone_recipe(recipe, abra / "recipes")
        at = clone_recipe(recipe, root / "oracle")
        ref = _deployed_ref(at)
        if ref:
            _git(at, "checkout", "--quiet", ref)
        if not (at / ".env.sample").is_file():
            continue
        for index, combo in enumerate(oracle.combinations(at)):
            domain = f"{recipe}-{index}.coop.test"
            text = new_app_env(combo.env_text, recipe, domain)
            env = oracle.app_env(at, text, domain)
            rendering = oracle.docker_stack_config(
                at, oracle.compose_files(env), oracle.process_env(env, root)
            )
            assert rendering.config is not None, (recipe, combo.label, rendering.error)
            (abra / "servers" / "default" / f"{domain}.env").write_text(text)
            services = rendering.config.get("services") or {}
            images = frozenset((str(n), str(s.get("image"))) for n, s in services.items())
            used, top = _used(rendering.config), rendering.config.get("secrets") or {}
            apps.append(
                App(
                    recipe,
                    domain,
                    combo.label,
                    text,
                    _referenced(rendering.config),
                    frozenset(used - set(top)),
                    images,
                )
            )
    return abra, apps


@pytest.fixture
async def site(
    corpus: tuple[Path, list[App]], tmp_path: Path
) -> AsyncIterator[tuple[Bot, RenderingSwarm, list[App]]]:
    abra, apps = corpus
    config = parse_config(
        {
            "abra_dir": str(abra),
            "servers": {"default": {}},
            "data_dir": str(tmp_path / "data"),
            # every combination of every recipe is asked about, one after another
            "jobs": {"progress_interval": 0.01, "member_rate": 10000},
        },
        tmp_path,
    )
    swarm = RenderingSwarm()
    chat = FakeChat({ADMIN: (True, 100), OPERATOR: (True, 50), VIEWER: (True, 0)})
    bot = Bot(config, chat=chat, swarms={"default": swarm})  # type: ignore[dict-item]
    try:
        yield bot, swarm, apps
    finally:
        await bot.dispatcher.shutdown()
        bot.recipes.close()
        bot.store.close()


async def ask(bot: Bot, body: str, sender: str = OPERATOR) -> str:
    msg = message(body, sender)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    chat = chat_of(bot)
    replies = [chat.shown(s.event_id) for s in chat.sent if s.reply_to == msg.event_id]
    assert replies, body
    return replies[-1]


def _listed(text: str) -> dict[str, str]:
    return dict(re.findall(r"^- `([^`]+)`: (.*)$", text, flags=re.MULTILINE))


async def test_secrets_list_exactly_what_docker_stack_config_references(
    site: tuple[Bot, RenderingSwarm, list[App]],
) -> None:
    bot, _, apps = site
    assert {a.recipe for a in apps} == {"bonfire", "foodsharing-cms", "gaseous", "llamenos",
                                        "traefik-legacy", "agora"}  # fmt: skip
    assert len(apps) > 20  # every combination of every sample
    for app in apps:
        answer = await ask(bot, f"!secrets {app.domain}")
        if app.undefined:
            # `docker stack config` renders it, `docker stack deploy` would refuse it
            # (convert: undefined secret): the bot says so instead of guessing a list.
            for key in app.undefined:
                assert f"undefined secret {key}" in answer, (app.label, answer)
            continue
        listed = _listed(answer)
        assert set(listed) == app.expected, (app.recipe, app.label, answer)
        for name, state in listed.items():
            if name.endswith("_"):  # the sample's version line is still commented out
                assert "its version is empty: set SECRET_" in state, (app.label, state)
            else:
                assert state == "❌ missing", (app.label, name, state)


async def test_generate_makes_them_with_the_env_hints(
    site: tuple[Bot, RenderingSwarm, list[App]], tmp_path: Path
) -> None:
    bot, swarm, apps = site
    checked = 0
    for app in apps:
        answer = await ask(bot, f"!secrets {app.domain} generate")
        if app.undefined:
            assert "undefined secret" in answer, answer
            continue
        assert answer.startswith("Created "), answer
        makeable = {n for n in app.expected if not n.endswith("_")}
        made = {n for n in swarm.created if n.startswith(app.domain.replace(".", "_") + "_")}
        assert made == makeable, (app.recipe, app.label)
        env = tmp_path / f"{app.domain}.env"
        env.write_text(app.env_text)
        hints = {s.name: s for s in parse_env(env, "default").secrets}
        stack = app.domain.replace(".", "_")
        for name in makeable:
            key = name.removeprefix(f"{stack}_").rpartition("_")[0]
            spec = hints.get(key)
            value = swarm.created[name]
            length = spec.length if spec and spec.length is not None else DEFAULT_SECRET_LENGTH
            assert len(value) == length, (name, spec)
            charset = (spec.charset if spec else None) or "default"
            assert set(value) <= set(CHARSETS[charset]), (name, charset)
            checked += 1
    assert checked > 20
    # length=128 (bonfire) and charset=hex (llamenos) among them
    assert any(len(v) == 128 for v in swarm.created.values())


async def test_apps_shows_every_app_and_untagged_recipes_need_chaos(
    site: tuple[Bot, RenderingSwarm, list[App]],
) -> None:
    bot, _, apps = site
    table = await ask(bot, "!apps", VIEWER)
    for app in apps:
        row = next(line for line in table.splitlines() if line.startswith(f"| {app.domain} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:4] == ["default", app.recipe, "not deployed"], row
        if app.recipe in UNTAGGED:
            assert cells[5] == "untagged: `--chaos` only", row
        else:
            assert parse_version(cells[5]) is not None, row


async def test_pre_flight_reports_every_problem_at_once(
    site: tuple[Bot, RenderingSwarm, list[App]],
) -> None:
    bot, _, apps = site
    for app in (a for a in apps if a.label == "as shipped"):
        chaos = " --chaos" if app.recipe in UNTAGGED else ""
        text = await ask(bot, f"!deploy {app.domain}{chaos} --dry-run")
        assert "**Dry run**: nothing was proposed or changed." in text, text
        makeable = sorted(n for n in app.expected if not n.endswith("_"))
        if makeable:
            assert f"- missing secrets: {', '.join(makeable)} (" in text, (app.recipe, text)
        for service, image in app.images:
            assert f"- image {image} of service {service} is not available" in text, text
