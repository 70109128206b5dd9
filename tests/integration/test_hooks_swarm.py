"""Webhooks on the bot's real aiohttp server: a signed Forgejo-style push of a new
tag to a recipe's repository runs the upgrade check at once, and the room hears the
news; unsigned, badly signed, oversized, unknown-recipe and replayed deliveries are
refused with a 4xx and start nothing. The app runs on the private swarm; its
recipe is a clone of an upstream repository on this machine, as abra makes them."""

from __future__ import annotations

import hashlib
import hmac
import json
import pathlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import docker
import pytest

from bot.ops.swarm import Swarm
from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, bot_messages, make_coop
from tests.harness.dockerd import Dockerd, free_port
from tests.harness.member import MemberFactory
from tests.harness.recipes import commit_files, git, make_app_env, make_recipe
from tests.harness.synapse import Synapse

DOMAIN = "hooked.coop.test"
STACK = "hooked_coop_test"
SECRET = "forgejo-hook-secret"
ZERO = "0" * 40


def compose(release: str) -> str:
    return f"""version: "3.8"
services:
  app:
    image: local/busybox:1.0
    command: sleep 3600
    stop_grace_period: 1s
    environment: [RELEASE={release}]
    deploy:
      endpoint_mode: dnsrr
      labels:
        - "coop-cloud.${{STACK_NAME}}.timeout=60"
"""


@dataclass
class Site:
    coop: Coop
    runner: BotRunner
    upstream: pathlib.Path
    url: str

    async def post(
        self, payload: dict[str, Any] | bytes, *, secret: str | None = SECRET, delivery: str = ""
    ) -> int:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"X-Forgejo-Event": "push", "X-Forgejo-Delivery": delivery or uuid.uuid4().hex}
        if secret is not None:
            headers["X-Forgejo-Signature"] = hmac.new(
                secret.encode(), body, hashlib.sha256
            ).hexdigest()
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/hooks/forgejo", data=body, headers=headers) as response,
        ):
            return response.status


def push(tag: str, repo: str = "hooked") -> dict[str, Any]:
    return {
        "ref": f"refs/tags/{tag}",
        "before": ZERO,
        "after": "1" * 40,
        "created": True,
        "repository": {"name": repo, "clone_url": f"https://git.test/coop-cloud/{repo}.git"},
    }


@pytest.fixture
async def site(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    tmp_path: pathlib.Path,
) -> AsyncIterator[Site]:
    dockerd.import_image("local/busybox:1.0")
    abra = tmp_path / "abra"
    releases = [
        ("1.0.0+1.0", {"compose.yml": compose("1.0.0"), "release/1.0.0+1.0": "First.\n"}),
        ("1.1.0+1.0", {"compose.yml": compose("1.1.0"), "release/1.1.0+1.0": "Minor.\n"}),
    ]
    upstream = make_recipe(tmp_path / "upstream", "hooked", releases)
    (abra / "recipes").mkdir(parents=True)
    git(abra / "recipes", "clone", "--quiet", str(upstream), "hooked")
    make_app_env(abra, "default", DOMAIN, "hooked")
    (tmp_path / "hook-secret").write_text(SECRET + "\n")
    port = free_port()
    coop = await make_coop(synapse, make_member, tmp_path)
    runner = coop.runner(
        {
            "abra_dir": str(abra),
            "servers": {"default": {"docker_host": dockerd.host}},
            "jobs": {"progress_interval": "0.5s"},
            "upgrades": {"check_schedule": None},
            "web": {
                "listen": f"127.0.0.1:{port}",
                "hooks": {
                    "forgejo": {"secret_file": str(tmp_path / "hook-secret")},
                    "max_body": 4096,
                },
            },
        }
    )
    await runner.start()
    try:
        yield Site(coop, runner, upstream, f"http://127.0.0.1:{port}")
    finally:
        await runner.stop()
        swarm = Swarm(dockerd.host)
        await swarm.remove(STACK)
        await swarm.close()


async def test_a_signed_tag_push_runs_the_check_and_bad_ones_are_refused(site: Site) -> None:
    coop = site.coop
    await coop.bob.send(coop.room, f"!deploy {DOMAIN} 1.0.0+1.0")
    await coop.bob.wait_for_reply(coop.room, coop.bot_id, "runs 1.0.0+1.0", 120)
    # What is already known is news once (the scheduled check), then not again.
    bot = site.runner.bot
    assert bot is not None
    await bot.dispatcher.run_scheduled("upgrades")
    await bot.dispatcher.drain()
    await coop.carol.wait_for_reply(coop.room, coop.bot_id, "Upgrade check", 60)
    await coop.carol.drain()

    # A new release upstream; Forgejo tells the bot.
    commit_files(site.upstream, {"release/1.2.0+1.0": "Another minor.\n"}, "release 1.2.0")
    git(site.upstream, "tag", "1.2.0+1.0")
    refused = [
        await site.post(push("1.2.0+1.0"), secret=None),  # unsigned
        await site.post(push("1.2.0+1.0"), secret="not-the-secret"),  # badly signed
        await site.post(json.dumps(push("1.2.0+1.0")).encode() + b" " * 5000),  # oversized
        await site.post(push("1.2.0+1.0", repo="nobody-knows")),  # unknown recipe
    ]
    assert refused == [401, 401, 413, 404]
    await coop.ask(coop.carol, "!ping", "pong")
    assert bot_messages(coop, await coop.carol.drain()) == []  # nothing started

    delivery = uuid.uuid4().hex
    assert await site.post(push("1.2.0+1.0"), delivery=delivery) == 202
    news = await coop.carol.wait_for_reply(coop.room, coop.bot_id, "Upgrade check", 120)
    body = str(news.source["content"]["body"])
    assert "1.2.0+1.0" in body, body
    assert f"🆕 {DOMAIN}" in body, body
    await bot.dispatcher.drain()
    # The same delivery again: a replay, refused, and no second check.
    assert await site.post(push("1.2.0+1.0"), delivery=delivery) == 409
    await coop.ask(coop.carol, "!ping", "pong")
    assert bot_messages(coop, await coop.carol.drain()) == []
