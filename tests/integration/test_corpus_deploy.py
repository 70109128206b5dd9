"""The corpus of real recipes deployed end to end on the test swarm, from a real room.

Each recipe is cloned from its bundle into a tmp abra folder, and its app .env is made
from the recipe's .env.sample as `abra app new` does (TYPE and DOMAIN set, nothing
else changed; the default overlay set is whatever the sample enables). No registry is
reachable: every image the recipe names is a busybox stand-in built under that exact
name and tag (tests/harness/standins.py), from a checkout of the very version that is
deployed. The external `proxy` network that web recipes join is created as an
operator does before deploying traefik: an attachable overlay network. Secrets are
generated through the bot (`!secrets <app> generate`), as an operator would.

bob (operator) asks; alice (admin) approves; approvals.required is 1. Untagged
recipes (agora, gaseous, llamenos) deploy only with `--chaos`, and say so first.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import docker
import nio
import pytest

from bot.ops.swarm import Swarm
from tests.harness import standins
from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, make_coop
from tests.harness.corpus import bundle_path, clone_recipe
from tests.harness.dockerd import Dockerd
from tests.harness.member import Member, MemberFactory
from tests.harness.recipes import git
from tests.harness.synapse import Synapse

BONFIRE_OLD, BONFIRE_NEW = "1.0.0+1.0.5-social-amd64", "2.0.0+1.0.5-social-amd64"
BONFIRE_LATEST = "2.0.1+1.0.6-social-amd64"


def stack(domain: str) -> str:
    return domain.replace(".", "_")


def new_app(abra: pathlib.Path, recipe: str, domain: str, extra: str = "") -> str:
    """servers/default/<domain>.env from the recipe's .env.sample, as `abra app new`
    writes it: the sample with its TYPE and DOMAIN lines set; `extra` lines (what an
    operator adds, such as TIMEOUT) appended. Returns the text."""
    sample = (abra / "recipes" / recipe / ".env.sample").read_text()
    text = re.sub(r"^TYPE=.*$", f"TYPE={recipe}", sample, count=1, flags=re.MULTILINE)
    text = re.sub(r"^DOMAIN=.*$", f"DOMAIN={domain}", text, count=1, flags=re.MULTILINE)
    text = text if text.endswith("\n") else text + "\n"
    text += extra
    folder = abra / "servers" / "default"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{domain}.env").write_text(text)
    return text


@dataclass
class Site:
    coop: Coop
    abra: pathlib.Path
    dockerd: Dockerd
    docker: docker.DockerClient
    tmp: pathlib.Path
    stacks: list[str]

    @property
    def room(self) -> str:
        return self.coop.room

    async def add(
        self, recipe: str, domain: str, version: str | None = None, extra: str = ""
    ) -> str:
        """Clone the recipe (once), make the app, build the stand-ins for `version`
        (a tag; None: the current commit, what --chaos deploys). Returns the commit
        that version is. Off the loop: the bot shares it, and git and docker import
        take seconds."""
        return await asyncio.to_thread(self._add, recipe, domain, version, extra)

    def _add(self, recipe: str, domain: str, version: str | None, extra: str) -> str:
        repo = self.abra / "recipes" / recipe
        if not repo.exists():
            clone_recipe(recipe, self.abra / "recipes")
        text = new_app(self.abra, recipe, domain, extra)
        self.stacks.append(stack(domain))
        return self.standins(recipe, domain, text, version)

    def env_text(self, domain: str) -> str:
        return (self.abra / "servers" / "default" / f"{domain}.env").read_text()

    def standins(self, recipe: str, domain: str, env_text: str, version: str | None) -> str:
        # A scratch clone at that version: the recipe's own clone stays untouched.
        scratch = self.tmp / "scratch" / f"{recipe}-{version or 'head'}"
        if not scratch.exists():
            clone_recipe(recipe, scratch.parent / "tmp")
            (scratch.parent / "tmp" / recipe).rename(scratch)
            if version:
                git(scratch, "checkout", "--quiet", version)
        standins.ensure(self.dockerd, scratch, env_text, domain)
        return git(scratch, "rev-parse", "HEAD").strip()

    async def said(self, *parts: str, timeout: float = 240) -> str:  # noqa: ASYNC109
        """The first bot message bob sees that contains every one of `parts`."""

        def match(room: str, event: nio.Event) -> bool:
            body = str(event.source.get("content", {}).get("body", ""))
            return (
                room == self.room
                and event.sender == self.coop.bot_id
                and isinstance(event, nio.RoomMessage)
                and all(p in body for p in parts)
            )

        event = await self.coop.bob.wait_for(match, timeout)
        content = event.source["content"]
        return str(content.get("m.new_content", content)["body"])

    async def propose(self, command: str, expect: str = "") -> tuple[str, str]:
        """bob asks; returns the proposal's id and text."""
        body = await self.coop.ask(self.coop.bob, command, "Proposal `")
        assert expect in body, body
        found = re.search(r"Proposal `(\w+)`", body)
        assert found, body
        return found.group(1), body

    async def approve(self, member: Member, proposal: str) -> None:
        await self.coop.ask(member, f"!approve {proposal}", "Counted")

    async def undeploy(self, *domains: str) -> None:
        """Voted undeploys, side by side; each removes every service of its stack."""
        for domain in domains:
            proposal, _ = await self.propose(f"!undeploy {domain}", "Volumes are kept")
            await self.approve(self.coop.alice, proposal)
        for domain in domains:
            report = await self.said(f"Undeploy {domain}", "Volumes kept")
            assert f"Removed stack {stack(domain)}" in report, report
            assert self.services(domain) == []

    def services(self, domain: str) -> list[str]:
        found = self.docker.services.list(
            filters={"label": f"com.docker.stack.namespace={stack(domain)}"}
        )
        return sorted(s.name.removeprefix(f"{stack(domain)}_") for s in found)


def spec_versions(site: Site, domain: str) -> dict[str, int]:
    """Each service's spec version: any deploy, update or rollback raises it."""
    found = site.docker.services.list(
        filters={"label": f"com.docker.stack.namespace={stack(domain)}"}
    )
    return {s.name: s.attrs["Version"]["Index"] for s in found}


def expected_services(site: Site, recipe: str, domain: str, version: str | None) -> list[str]:
    scratch = site.tmp / "scratch" / f"{recipe}-{version or 'head'}"
    return sorted(standins.render(scratch, site.env_text(domain), domain)["services"])


async def status_shows_every_service(site: Site, domain: str, services: list[str]) -> str:
    text = await site.coop.ask(site.coop.carol, f"!status {domain}", "Version:")
    for name in services:
        line = next((x for x in text.splitlines() if x.startswith(f"- {name}: ")), None)
        assert line is not None, text
        assert f"- {name}: 1/1," in line, line
    return text


def test_stand_ins_provide_what_each_recipe_runs(tmp_path: pathlib.Path) -> None:
    """The programs each corpus recipe names, found without a daemon: entrypoints,
    commands, health tools (busybox's wget shadowed), what mounted entrypoint scripts
    exec (llamenos: node, minio) or call (traefik: the image's /entrypoint.sh), and
    the "$@" of bonfire's script (./bin/bonfire from the image's workdir, /)."""
    assert bundle_path("bonfire").is_file(), f"no recipe corpus at {bundle_path('bonfire').parent}"
    found: dict[str, list[str]] = {}
    for recipe in ("bonfire", "foodsharing-cms", "llamenos", "traefik-legacy", "agora"):
        repo = clone_recipe(recipe, tmp_path)
        config = standins.render(repo, (repo / ".env.sample").read_text(), "x.coop.test")
        found |= {ref: sorted(s.files()) for ref, s in standins.plan(config).items()}
    assert found["bonfirenetworks/bonfire:1.0.6-social-amd64"] == [
        "/bin/bonfire",
        "/usr/local/bin/curl",
    ]
    assert found["ghcr.io/baosystems/postgis:17-3.5"] == [
        "/usr/local/bin/pg_isready",
        "/usr/local/bin/postgres",
    ]
    assert found["ghcr.io/wilhelmberggren/foodsharing-cms:1.0.3"] == ["/usr/local/bin/wget"]
    assert found["ghcr.io/rhonda-rodododo/llamenos:latest"] == [
        "/usr/local/bin/curl",
        "/usr/local/bin/node",
    ]
    assert found["minio/minio:RELEASE.2025-01-20T14-49-07Z"] == [
        "/usr/local/bin/mc",
        "/usr/local/bin/minio",
    ]
    assert found["traefik:v2.4.8"] == ["/entrypoint.sh", "/usr/local/bin/traefik"]
    assert found["nginx:1.27-alpine"] == []  # no entrypoint, command or healthcheck
    assert found["moonlion/agora-server:testing"] == []


@pytest.fixture
async def make_site(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    tmp_path: pathlib.Path,
) -> AsyncIterator[Callable[[], Awaitable[Site]]]:
    """A room with a bot whose abra folder is tmp/abra; apps are added with Site.add."""
    assert bundle_path("bonfire").is_file(), f"no recipe corpus at {bundle_path('bonfire').parent}"
    # The overlay network web recipes join, made as before deploying traefik.
    if not docker_client.networks.list(names=["proxy"]):
        docker_client.networks.create("proxy", driver="overlay", attachable=True, scope="swarm")
    runners: list[BotRunner] = []
    site: Site | None = None

    async def make() -> Site:
        nonlocal site
        abra = tmp_path / "abra"
        (abra / "recipes").mkdir(parents=True)
        coop = await make_coop(synapse, make_member, tmp_path)
        runner = coop.runner(
            {
                "abra_dir": str(abra),
                "servers": {"default": {"docker_host": dockerd.host}},
                "approvals": {"required": 1},
                "jobs": {"progress_interval": "1s"},
                "upgrades": {"check_schedule": None},
            }
        )
        runners.append(runner)
        await runner.start()
        site = Site(coop, abra, dockerd, docker_client, tmp_path, [])
        return site

    yield make
    for runner in runners:
        await runner.stop()
    if site is not None:  # the next test may deploy the same stacks
        swarm = Swarm(dockerd.host)
        await asyncio.gather(*(swarm.remove(name) for name in site.stacks))
        await swarm.close()
        for name in site.stacks:
            for secret in docker_client.secrets.list(filters={"name": f"{name}_"}):
                secret.remove()


async def test_untagged_and_small_recipes_deploy_converge_and_undeploy(
    make_site: Callable[[], Awaitable[Site]],
) -> None:
    """agora, gaseous and llamenos have no release tags: `--chaos` deploys their
    current commit. foodsharing-cms's tags (v1.0.3) are releases to the bot: its
    newest deploys as is. All four converge on stand-ins side by side: their
    entrypoint scripts (llamenos's, mounted as configs) run for real under busybox sh
    and read the generated secrets; healthchecks (curl, wget, pg_isready, mc) pass.

    agora and gaseous deploy as `abra app new` makes them: their labels use
    ${EXTRA_DOMAINS}, commented out in the samples (the usual Co-op Cloud pattern),
    and agora's environment $SOURCES_YML_URL, which the sample does not set. As
    `docker stack deploy` does, those are "" and the deploy says so."""
    site = await make_site()
    coop = site.coop
    apps = {
        "agora": ("agora.coop.test", None),
        "gaseous": ("gaseous.coop.test", None),
        "llamenos": ("llamenos.coop.test", None),
        "foodsharing-cms": ("cms.coop.test", "v1.0.3"),
    }
    heads = {}
    for recipe, (domain, version) in apps.items():
        heads[recipe] = await site.add(recipe, domain, version)

    await coop.bob.send(site.room, "!deploy llamenos.coop.test")
    refused = await site.said("Recipe llamenos has no release tags", timeout=30)
    assert "use `--chaos`" in refused, refused
    unset = {
        "agora.coop.test": ["EXTRA_DOMAINS", "SOURCES_YML_URL"],
        "gaseous.coop.test": ["EXTRA_DOMAINS"],
    }
    for domain in ("llamenos.coop.test", "cms.coop.test"):
        await coop.ask(coop.bob, f"!secrets {domain} generate", "Created")

    for domain, version in apps.values():
        await coop.bob.send(site.room, f"!deploy {domain} {version or '--chaos'}")
    for recipe, (domain, version) in apps.items():
        target = version or heads[recipe][:8]
        report = await site.said(f"{domain} runs {target}")
        assert "Converged" in report, report
        for name in unset.get(domain, []):
            assert f"⚠ {name} is not set in the .env: used as empty" in report, report

    for recipe, (domain, version) in apps.items():
        services = expected_services(site, recipe, domain, version)
        assert site.services(domain) == services
        text = await status_shows_every_service(site, domain, services)
        if version is None:
            assert "**chaos**" in text, text
    await site.undeploy(*(domain for domain, _ in apps.values()))


async def test_bonfire_deploys_a_release_and_upgrades_to_the_next_with_its_notes(
    make_site: Callable[[], Awaitable[Site]],
) -> None:
    """bonfire's sample chains its overlays (COMPOSE_FILE="$COMPOSE_FILE:compose.
    postgres.yml"): app and db. Its entrypoint is a config-mounted script that
    `exec "$@"`s `./bin/bonfire start`; db's healthcheck is pg_isready, app's curl.
    1.0.0 → 2.0.0 is a major step, voted, with the 2.0.0 release notes.
    EXTRA_DOMAINS is set empty in the .env, as an operator who read the sample would."""
    site = await make_site()
    coop = site.coop
    domain = "bonfire.coop.test"
    await site.add("bonfire", domain, BONFIRE_OLD, extra="EXTRA_DOMAINS=\n")
    await asyncio.to_thread(site.standins, "bonfire", domain, site.env_text(domain), BONFIRE_NEW)
    created = await coop.ask(coop.bob, f"!secrets {domain} generate", "Created")
    assert f"{stack(domain)}_postgres_password_v1" in created, created

    await coop.bob.send(site.room, f"!deploy {domain} {BONFIRE_OLD}")
    report = await site.said(f"{domain} runs {BONFIRE_OLD}")
    assert "Converged" in report, report
    services = expected_services(site, "bonfire", domain, BONFIRE_OLD)
    assert services == ["app", "db"]
    await status_shows_every_service(site, domain, services)

    # No corpus recipe's abra.sh defines a function: !cmd says so, naming none.
    await coop.bob.send(site.room, f"!cmd {domain} app migrate")
    refused = await site.said("defines no function `migrate`", timeout=60)
    assert "It defines: none." in refused, refused

    # Dry runs change nothing and propose nothing. The operator rotates a secret (its
    # version bumped in the .env, the new one generated): the plan names the bump.
    env_file = site.abra / "servers" / "default" / f"{domain}.env"
    rotated = site.env_text(domain).replace(
        "SECRET_SEEDS_PW_VERSION=v1", "SECRET_SEEDS_PW_VERSION=v2"
    )
    env_file.write_text(rotated)
    await coop.ask(coop.bob, f"!secrets {domain} generate", "Created 1")
    specs = spec_versions(site, domain)
    bump = f"`{stack(domain)}_seeds_pw_v1` → `{stack(domain)}_seeds_pw_v2`"
    await coop.bob.send(site.room, f"!upgrade {domain} {BONFIRE_NEW} --dry-run")
    dry = await site.said("Dry run", f"Upgrade **{domain}**", "📋 Plan:", timeout=60)
    plan = dry[dry.index("📋 Plan:") :].split("\n\n")[0]  # the changes, up to the notes
    assert f"📋 Plan: {BONFIRE_OLD} → **{BONFIRE_NEW}**" in plan, dry
    assert "  - `app`: image `bonfirenetworks/bonfire:1.0.5-social-amd64` (unchanged)" in plan
    assert f"    - secrets: {bump}" in plan, plan
    assert "  - unchanged: `db`" in plan, plan
    assert f"  - notes `{BONFIRE_NEW}`: `Mailisearch search backend was removed" in plan, plan
    await coop.bob.send(site.room, f"!deploy {domain} {BONFIRE_LATEST} --dry-run")
    dry_deploy = await site.said("Dry run", "📋 Plan:", f"→ **{BONFIRE_LATEST}**", timeout=60)
    assert (
        "`bonfirenetworks/bonfire:1.0.5-social-amd64` → `bonfirenetworks/bonfire:1.0.6"
        in dry_deploy
    )
    # Every problem at once, and still nothing proposed: 1.0.6 has no stand-in here.
    assert "❌ Pre-flight would fail:" in dry_deploy, dry_deploy
    assert "image bonfirenetworks/bonfire:1.0.6-social-amd64 of service app" in dry_deploy
    assert spec_versions(site, domain) == specs
    await coop.ask(coop.bob, "!proposals", "No proposal is open.")

    proposal, body = await site.propose(f"!upgrade {domain} {BONFIRE_NEW}", "major")
    assert "Mailisearch search backend was removed" in body, body
    assert plan.strip() in body, body  # the one plan text, in the proposal too
    await site.approve(coop.alice, proposal)
    report = await site.said(f"{domain} runs {BONFIRE_NEW}")
    assert f"⬆ **Upgrade {domain}**: {BONFIRE_OLD} → {BONFIRE_NEW}" in report, report
    assert "Converged" in report, report
    text = await status_shows_every_service(site, domain, services)
    assert f"Version: {BONFIRE_NEW}" in text, text
    await site.undeploy(domain)


@pytest.mark.skipif(
    os.path.exists("/var/run/docker.sock"),
    reason="this machine has /var/run/docker.sock: traefik-legacy could converge",
)
async def test_traefik_legacy_cannot_converge_without_a_docker_socket(
    make_site: Callable[[], Awaitable[Site]],
) -> None:
    """traefik-legacy (v2.4.8, a release to the bot) bind-mounts /var/run/docker.sock,
    as every traefik does to watch the swarm. The test machine has no docker socket at
    that path (the test dockerd listens elsewhere), so swarm rejects every task before
    any stand-in could start: a limit of this machine, not of the bot or the recipe.
    The bot reports swarm's own reason. TIMEOUT in the .env keeps the wait short."""
    site = await make_site()
    coop = site.coop
    domain = "traefik.coop.test"
    await site.add("traefik-legacy", domain, "v2.4.8", extra="TIMEOUT=25\n")

    await coop.bob.send(site.room, f"!deploy {domain}")
    report = await site.said(f"of {domain} v2.4.8 failed", timeout=120)
    assert "Did not converge" in report, report
    assert "bind source path does not exist: /var/run/docker.sock" in report, report
    # A failed first deploy leaves nothing behind, and says what it removed.
    assert "Removed what this first deploy created: services traefik_coop_test_app" in report
    assert "the app is not deployed (what the deploy created was removed)" in report, report
    assert site.services(domain) == []
    assert "configs traefik_coop_test_file_provider_yml_" in report, report
    owned = {"label": f"com.docker.stack.namespace={stack(domain)}"}
    assert site.docker.configs.list(filters=owned) == []
    assert site.docker.networks.list(filters=owned) == []
    assert site.docker.networks.list(names=["proxy"])  # external: not the stack's
