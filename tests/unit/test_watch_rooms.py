"""Per-server incident rooms (servers.<name>.room): a server's incidents, their
updates, recoveries and quiet-hours digest go to the room that watches it; the
others to the main room. Reporter over FakeChat, pure rules, a real store."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from bot.config import ServerConfig
from bot.core.store import Store
from bot.features.watch import Reporter, Rules
from tests.fakes import FakeChat
from tests.unit.test_watch import T, fails, snap

OPS = "!ops:test"


async def test_incidents_go_to_the_room_of_their_server(tmp_path: Path) -> None:
    chat, store = FakeChat(), Store(tmp_path / "s.sqlite")
    reporter = Reporter(chat, store, [], zone=UTC, rooms={"far": OPS})
    rules = Rules(T)
    await reporter.apply(rules.snapshot("far", snap(12, running=0, failed=fails(1, 5, 11))))
    await reporter.apply(rules.snapshot("near", snap(12, running=0, failed=fails(1, 5, 11))))
    far, near = chat.sent
    assert (far.room, near.room) == (OPS, chat.home)
    assert "on **far**" in far.markdown
    assert "on **near**" in near.markdown
    # The update is an edit in that room, the recovery a reply there.
    await reporter.apply(rules.snapshot("far", snap(20, running=0, failed=fails(5, 11, 19))))
    await reporter.apply(rules.snapshot("far", snap(70, running=1, failed=fails(5, 11, 19))))
    await reporter.apply(rules.snapshot("far", snap(80, running=1, failed=fails(5, 11, 19))))
    recovered = chat.sent[-1]
    assert recovered.room == OPS
    assert recovered.markdown.startswith("✅ Recovered: incident #1 on **far**")
    assert recovered.reply_to == far.event_id
    store.close()


async def test_the_digest_is_split_by_room(tmp_path: Path) -> None:
    chat, store = FakeChat(), Store(tmp_path / "s.sqlite")
    reporter = Reporter(
        chat, store, ["@a:test"], zone=UTC, quiet_hours="00:00-06:00", rooms={"far": OPS}
    )
    rules = Rules(T)
    night = 3600.0
    await reporter.apply(rules.snapshot("far", snap(night, node=("ready", "drain"))))
    await reporter.apply(rules.snapshot("near", snap(night, node=("ready", "drain"))))
    assert chat.sent == []
    assert await reporter.digest(7 * 3600.0) is not None
    by_room = {s.room: s.markdown for s in chat.sent}
    assert chat.home is not None
    assert set(by_room) == {OPS, chat.home}
    assert "#1 far" in by_room[OPS]
    assert "near" not in by_room[OPS]
    assert "#2 near" in by_room[chat.home]
    store.close()


def test_the_room_must_be_a_room_id() -> None:
    assert ServerConfig(room=OPS).room == OPS
    with pytest.raises(ValueError, match="room"):
        ServerConfig(room="#ops:test")  # an alias: the bot posts to ids
