"""One-offs a stopped bot left on the swarm (a backup's restic task and its secrets,
which hold the repository password) are swept once their task has ended; a one-off
still running is left alone (bot/ops/swarm/oneoff.py, called by the housekeeping)."""

from __future__ import annotations

import asyncio
import time

from bot.ops.swarm import Swarm
from bot.ops.swarm.oneoff import ONEOFF_LABEL
from tests.harness.dockerd import Dockerd

IMAGE = "local/busybox:1.0"


def _one_off(dockerd: Dockerd, name: str, command: list[str]) -> None:
    label = f"{ONEOFF_LABEL}={name}"
    dockerd.cli("secret", "create", "--label", label, f"{name}-password", "-", input="hunter2")
    dockerd.cli(
        "service", "create", "--detach", "--name", name, "--label", label,
        "--secret", f"{name}-password", "--restart-condition", "none",
        "--endpoint-mode", "dnsrr", IMAGE, *command,
    )  # fmt: skip


def _services(dockerd: Dockerd) -> set[str]:
    out = dockerd.cli("service", "ls", "--format", "{{.Name}}").stdout
    return {line for line in out.splitlines() if line.startswith("coopbot-")}


def _secrets(dockerd: Dockerd) -> set[str]:
    out = dockerd.cli("secret", "ls", "--format", "{{.Name}}").stdout
    return {line for line in out.splitlines() if line.startswith("coopbot-")}


async def test_ended_one_offs_and_their_secrets_are_swept_running_ones_stay(
    dockerd: Dockerd,
) -> None:
    dockerd.import_image(IMAGE, ["/bin/sh"])
    _one_off(dockerd, "coopbot-backup-ended", ["true"])
    _one_off(dockerd, "coopbot-backup-running", ["sleep", "600"])
    deadline = time.monotonic() + 60
    while (
        "Complete"
        not in dockerd.cli(
            "service", "ps", "--format", "{{.CurrentState}}", "coopbot-backup-ended"
        ).stdout
    ):
        assert time.monotonic() < deadline, "the ended one-off never completed"
        await asyncio.sleep(0.5)
    swarm = Swarm(dockerd.host)
    try:
        assert await swarm.remove_ended_oneoffs() == ["coopbot-backup-ended"]
        assert _services(dockerd) == {"coopbot-backup-running"}
        assert _secrets(dockerd) == {"coopbot-backup-running-password"}
    finally:
        await swarm.close()
        dockerd.cli("service", "rm", "coopbot-backup-running", check=False)
        dockerd.cli("service", "rm", "coopbot-backup-ended", check=False)
        for _ in range(50):  # a secret stays in use until the task is gone
            if not dockerd.cli("secret", "rm", *_secrets(dockerd), check=False).returncode:
                break
            await asyncio.sleep(0.2)
