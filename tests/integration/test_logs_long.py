"""`!logs --tail 2000` of long lines on the real swarm and Synapse: the room gets the
last lines that fit one message with a note, the whole masked log comes as a file, and
no secret is in either (the masking runs in a thread and is linear, so the bot answers
a `!ping` meanwhile)."""

from __future__ import annotations

import asyncio

import nio

from tests.integration.test_apps_swarm import DOMAIN, STACK, Site
from tests.integration.test_apps_swarm import images as images
from tests.integration.test_apps_swarm import site as site

LINES = 300
WIDE = 15_000


async def test_long_logs_come_as_excerpt_note_and_masked_file(site: Site) -> None:
    coop = site.coop
    await coop.ask(coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    await site.run(coop.bob, f"!deploy {DOMAIN} 1.0.0+1.0", "runs 1.0.0+1.0")
    script = (
        f"W=$(head -c {WIDE} /dev/zero | tr '\\0' K); i=0; "
        f'while [ $i -lt {LINES} ]; do echo "DB_PASSWORD=hunter2 n=$i $W"; i=$((i+1)); done; '
        "echo END; sleep 3600"
    )
    site.docker.services.list(filters={"name": f"{STACK}_app"})[0].update(args=["sh", "-c", script])
    for _ in range(60):
        event_id = await coop.bob.send(coop.room, f"!logs {DOMAIN} app --tail 2000")

        def reply_to(room: str, event: nio.Event, event_id: str = event_id) -> bool:
            content = event.source.get("content", {})
            return (
                room == coop.room
                and event.sender == coop.bot_id
                and (content.get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
                == event_id
            )

        first = await coop.bob.wait_for(reply_to, 60)
        body = str(first.source["content"]["body"])
        if "END" in body:
            break
        await asyncio.sleep(1)
    assert "showing the last" in body, body[:300]
    assert "lines; full log attached as a file" in body
    assert "hunter2" not in body
    assert len(body) < 5000
    pong = await coop.ask(coop.carol, "!ping", "")  # the bot still answers
    assert pong
    file_event = await coop.bob.wait_for(reply_to, 60)
    content = file_event.source["content"]
    assert content["msgtype"] == "m.file"
    assert content["filename"] == f"{STACK}.log"
    downloaded = await coop.bob.client.download(content["url"])
    assert isinstance(downloaded, nio.DownloadResponse), downloaded
    text = downloaded.body.decode()
    assert "hunter2" not in text
    assert text.count("DB_PASSWORD=****") >= LINES
    assert text.rstrip().endswith("END")
