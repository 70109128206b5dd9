"""A job's progress message while the homeserver is away (bot/core/progress.py): a
failed update does not fail the job and its newest text lands later; the final text
is retried until it is delivered."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.core.progress import Progress
from tests.fakes import FakeChat


class AwayChat(FakeChat):
    """A FakeChat whose sends and edits fail while `away` is set."""

    away: bool = False
    failures: int = 0

    async def send(self, room_id: str, markdown: str, **kwargs: Any) -> str:
        self._fail()
        return await super().send(room_id, markdown, **kwargs)

    async def edit(self, room_id: str, event_id: str, markdown: str) -> None:
        self._fail()
        await super().edit(room_id, event_id, markdown)

    def _fail(self) -> None:
        if self.away:
            self.failures += 1
            raise ConnectionError("homeserver unreachable (the test)")


async def test_updates_during_an_outage_land_afterwards_and_the_final_text_is_delivered() -> None:
    chat = AwayChat()
    progress = Progress(chat, "!room:test", "$ask", None, interval=0.0)
    await progress.update("step 1")
    assert [s.markdown for s in chat.sent] == ["step 1"]

    chat.away = True
    await progress.update("step 2")  # does not raise: the job goes on
    await progress.update("step 3")
    assert chat.failures >= 1
    finish = asyncio.create_task(progress.finish("done: all steps"))
    await asyncio.sleep(1.2)
    assert not finish.done()  # still trying: the result is not dropped
    chat.away = False
    await asyncio.wait_for(finish, 20)
    assert chat.edits[-1].markdown == "done: all steps"
    assert "step 2" not in [e.markdown for e in chat.edits]  # newest text wins
    progress.close()


async def test_a_first_message_that_fails_is_sent_once_the_homeserver_is_back() -> None:
    chat = AwayChat()
    chat.away = True
    progress = Progress(chat, "!room:test", "$ask", None, interval=0.0)
    await progress.update("starting")
    assert chat.sent == []
    await asyncio.sleep(0.3)
    chat.away = False
    detail = await asyncio.wait_for(progress.detail("a detail"), 20)
    assert progress.event_id is not None
    assert [s.markdown for s in chat.sent] == ["starting", "a detail"]
    assert chat.sent[1].event_id == detail
    progress.close()
