"""bot/ops/matrix_undecrypted.py: counting what the bot could not decrypt, asking for
keys once per session, clearing a member whose events decrypt again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bot.core.store import Store
from bot.ops.matrix_undecrypted import WINDOW, Undecrypted, recorded_problems

ALICE, BOB = "@alice:hs.test", "@bob:hs.test"
NOW = 1_800_000_000.0


def event(event_id: str, sender: str = ALICE, session: str = "s1") -> Any:
    return SimpleNamespace(event_id=event_id, sender=sender, session_id=session)


class Client:
    def __init__(self, fail: bool = False) -> None:
        self.asked: list[str] = []
        self.fail = fail

    async def request_room_key(self, event: Any) -> None:
        self.asked.append(event.session_id)
        if self.fail:
            raise RuntimeError("A key sharing request is already sent out")


async def test_counts_per_sender_and_asks_each_session_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    clock = [NOW]
    seen = Undecrypted(store, clock=lambda: clock[0])
    assert seen.problems() == []
    seen.saw("!r:hs.test", event("$1"))
    seen.saw("!r:hs.test", event("$2"))
    seen.saw("!r:hs.test", event("$2"))  # the same event again (a gap filled twice)
    seen.saw("!r:hs.test", event("$3", BOB, "s2"))
    client = Client()
    await seen.request_keys(client)
    await seen.request_keys(client)  # nothing new: nothing asked
    assert client.asked == ["s1", "s2"]
    seen.saw("!r:hs.test", event("$4", session="s1"))
    await seen.request_keys(client)
    assert client.asked == ["s1", "s2"]  # s1 was asked for already
    problems = seen.problems()
    assert len(problems) == 2
    assert problems[0].startswith(f"3 encrypted message(s) from {ALICE} could not be decrypted")
    assert "Next step" in problems[0]
    assert "Verify" in problems[0]
    assert problems[1].startswith(f"1 encrypted message(s) from {BOB}")
    # Another process (coopbot check) reads what was recorded.
    assert recorded_problems(tmp_path / "s.sqlite", now=NOW) == problems
    # alice's client shares keys again: she is cleared, bob is not.
    seen.decrypted(ALICE)
    assert [p.split(" from ")[1].split()[0] for p in seen.problems()] == [BOB]
    assert len(recorded_problems(tmp_path / "s.sqlite", now=NOW)) == 1
    # A restart keeps the count; after the window it is no longer a problem.
    again = Undecrypted(store, clock=lambda: clock[0])
    assert len(again.problems()) == 1
    clock[0] = NOW + WINDOW + 1
    assert again.problems() == []
    store.close()


async def test_a_failed_key_request_does_not_raise(tmp_path: Path) -> None:
    store = Store(":memory:")
    seen = Undecrypted(store, clock=lambda: NOW)
    seen.saw("!r:hs.test", event("$1"))
    client = Client(fail=True)
    await seen.request_keys(client)
    assert client.asked == ["s1"]
    store.close()


def test_no_store_means_no_recorded_problems(tmp_path: Path) -> None:
    assert recorded_problems(tmp_path / "missing.sqlite") == []
    Store(tmp_path / "empty.sqlite").close()
    assert recorded_problems(tmp_path / "empty.sqlite") == []
