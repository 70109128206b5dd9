"""The baseline: a bare matrix-nio client that answers every `!ping` with a notice reply.

    python -m bench.echo_client HOMESERVER USER PASSWORD ROOM STATE_DIR

No encryption, no store, no access checks: nio's `sync_forever` plus one response
callback. It has the same catch-up ability as the bot, so the backlog benchmark
compares like with like: the access token and the last `next_batch` are kept in
STATE_DIR/state.json, and a `limited` sync timeline is filled from /messages back
to the previous token (the same 50-event sync filter and 100-event pages as
bot/ops/matrix.py). The first start answers nothing that was sent before it joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    Event,
    JoinError,
    LoginResponse,
    MessageDirection,
    RoomMessagesError,
    RoomMessageText,
    SyncResponse,
)

SYNC_FILTER = {"room": {"timeline": {"limit": 50}}}
GAP_PAGE = 100
SYNC_TIMEOUT_MS = 30_000  # the bot's default sync_timeout


class Echo:
    def __init__(self, homeserver: str, user: str, password: str, room: str, state: Path) -> None:
        self.client = AsyncClient(homeserver, user)
        self.user, self.password, self.room, self.state_path = user, password, room, state
        self.since = ""

    def _save(self) -> None:
        state = {
            "device_id": self.client.device_id,
            "access_token": self.client.access_token,
            "since": self.since,
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    async def start(self) -> None:
        if self.state_path.exists():
            saved = json.loads(self.state_path.read_text())
            self.client.restore_login(self.user, saved["device_id"], saved["access_token"])
            self.since = saved["since"]
            return
        login = await self.client.login(self.password, device_name="echo")
        if not isinstance(login, LoginResponse):
            raise SystemExit(f"echo: login failed: {login}")
        joined = await self.client.join(self.room)
        if isinstance(joined, JoinError):
            raise SystemExit(f"echo: join failed: {joined.message}")
        first = await self.client.sync(timeout=0, sync_filter=SYNC_FILTER)
        if not isinstance(first, SyncResponse):
            raise SystemExit(f"echo: first sync failed: {first}")
        self.since = first.next_batch  # everything before this is history
        self._save()

    async def on_sync(self, response: SyncResponse) -> None:
        info = response.rooms.join.get(self.room)
        if info is not None:
            events = list(info.timeline.events)
            if info.timeline.limited and self.since:
                events = await self._fill_gap(info.timeline.prev_batch, self.since) + events
            for event in events:
                await self._answer(event)
        self.since = response.next_batch
        self._save()

    async def _fill_gap(self, prev_batch: str, since: str) -> list[Event]:
        events: list[Event] = []
        token = prev_batch
        while True:
            page = await self.client.room_messages(
                self.room, start=token, end=since, direction=MessageDirection.back, limit=GAP_PAGE
            )
            if isinstance(page, RoomMessagesError):
                print(f"echo: /messages failed: {page.message}", file=sys.stderr)
                break
            events.extend(page.chunk)
            if not page.chunk or not page.end or page.end == token:
                break
            token = page.end
        events.reverse()
        return events

    async def _answer(self, event: Event) -> None:
        if not isinstance(event, RoomMessageText) or event.sender == self.user:
            return
        if not event.body.startswith("!ping"):
            return
        content: dict[str, Any] = {
            "msgtype": "m.notice",
            "body": "pong (echo)",
            "m.relates_to": {"m.in_reply_to": {"event_id": event.event_id}},
        }
        await self.client.room_send(self.room, "m.room.message", content)

    async def run(self) -> None:
        await self.start()
        self.client.add_response_callback(self.on_sync, SyncResponse)
        try:
            await self.client.sync_forever(
                timeout=SYNC_TIMEOUT_MS, sync_filter=SYNC_FILTER, since=self.since
            )
        finally:
            await self.client.close()


async def _main(homeserver: str, user: str, password: str, room: str, state: Path) -> None:
    echo = Echo(homeserver, user, password, room, state)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    await echo.run()


def main() -> None:
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    homeserver, user, password, room, state_dir = sys.argv[1:]
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    state = Path(state_dir) / "state.json"
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(_main(homeserver, user, password, room, state))


if __name__ == "__main__":
    main()
