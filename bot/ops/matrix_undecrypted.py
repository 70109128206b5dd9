"""Commands the bot could not decrypt: counted, reported as a problem, keys asked for.

A member whose client does not share its room keys with the bot's device (Element
excludes devices it does not trust, a member who ignores the bot's device, a key
backup gone wrong) is not heard at all: the bot sees only `m.room.encrypted` events.
Without this count nobody would know. Per sender the bot keeps how many of their
events it could not read and when the last was; a later event of theirs that it
does decrypt clears them (their client shares keys again), and an entry older than
`WINDOW` is dropped. The counts are kept in the store, so `coopbot check` (another
process) reads what the running bot saw.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bot.fmt import utc_time

log = logging.getLogger(__name__)

STORE_KEY = "matrix.undecrypted"
WINDOW = 24 * 3600.0  # seconds an undecryptable event stays a problem


class _KeyStore(Protocol):
    def get_json(self, key: str) -> Any: ...

    def put_json(self, key: str, value: Any) -> None: ...


class _Requester(Protocol):
    async def request_room_key(self, event: Any) -> Any: ...


class Undecrypted:
    def __init__(self, store: _KeyStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        saved = store.get_json(STORE_KEY)
        self._by_sender: dict[str, dict[str, Any]] = saved if isinstance(saved, dict) else {}
        self._requested: set[str] = set()  # session ids asked for since start
        self._wanted: list[Any] = []  # events whose keys are still to be asked for
        self._seen: set[str] = set()  # a gap filled again brings the same events

    def saw(self, room_id: str, event: Any) -> None:
        """A MegolmEvent in `room_id` that no key the bot holds decrypts."""
        sender, event_id = event.sender, event.event_id
        if event_id in self._seen:
            return
        self._seen.add(event_id)
        self._wanted.append(event)
        entry = self._by_sender.setdefault(sender, {"count": 0, "rooms": []})
        entry["count"] += 1
        entry["last"] = self._clock()
        if room_id not in entry["rooms"]:
            entry["rooms"].append(room_id)
        log.warning("cannot decrypt %s from %s in %s", event_id, sender, room_id)
        self._save()

    def decrypted(self, sender: str) -> None:
        """The bot read an encrypted event of `sender`: their keys reach it again."""
        if self._by_sender.pop(sender, None) is not None:
            log.info("events from %s decrypt again", sender)
            self._save()

    async def request_keys(self, client: _Requester) -> None:
        """Ask the senders' devices for each missing session, once per session (nio
        refuses a second request for one session anyway). A member's client answers
        only a device it trusts, which is what cross-signing gives."""
        wanted, self._wanted = self._wanted, []
        for event in wanted:
            session = getattr(event, "session_id", None)
            if session is None or session in self._requested:
                continue
            self._requested.add(session)
            try:
                await client.request_room_key(event)
            except Exception as exc:  # a courtesy: it must never stop the sync loop
                log.info("could not request the room key of %s: %s", session, exc)

    def problems(self) -> list[str]:
        return problems_of(self._by_sender, self._clock())

    def _save(self) -> None:
        self._store.put_json(STORE_KEY, self._by_sender)


def problems_of(by_sender: dict[str, Any], now: float) -> list[str]:
    """One problem line per sender whose events the bot could not decrypt lately."""
    lines = []
    for sender, entry in sorted(by_sender.items()):
        last = float(entry.get("last", 0))
        if now - last > WINDOW:
            continue
        lines.append(
            f"{entry.get('count', 0)} encrypted message(s) from {sender} could not be "
            f"decrypted (last at {utc_time(last)}), so their commands were not heard. "
            f"Next step: in Element, {sender} verifies the bot's user (its profile → "
            "Verify) so their client shares room keys with its cross-signed device, "
            "or turns off 'only send to verified sessions' for this room; then they "
            "send the command again."
        )
    return lines


def recorded_problems(database: Path, now: float | None = None) -> list[str]:
    """What the bot last recorded, read from its store without changing it (for
    `coopbot check`, which runs beside the bot); none when there is no store."""
    if not database.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM kv WHERE key = ?", (STORE_KEY,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.info("cannot read %s: %s", database, exc)
        return []
    if row is None:
        return []
    saved = json.loads(row[0])
    return problems_of(saved if isinstance(saved, dict) else {}, now or time.time())
