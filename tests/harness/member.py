"""A co-op member: a real matrix-nio client that tests use to type and react.

Event delivery model (read this before writing a test):

* `login()` performs an initial sync whose timeline is discarded, so a Member
  only ever sees events that reach it in later syncs.
* Every later sync (whether from `wait_for`, or the quick syncs that
  `create_room`/`join`/`send` do to learn room state) appends its timeline
  events to a per-Member buffer, in server order. Nothing is dropped between
  two `wait_for` calls.
* `wait_for(predicate)` first scans that buffer, then keeps syncing; the first
  matching event is *removed* from the buffer and returned. Events that did
  not match stay buffered for later `wait_for` calls. Use `drain()` to forget
  everything seen so far, e.g. before waiting for a reply whose text could also
  match an older message.
* The buffer includes the Member's own events (filter on `event.sender`), and
  when a Member joins a room, the room's recent history (state events and any
  earlier messages) as Synapse delivers it in the join sync.
* If Synapse ever truncates ("limited") the timeline of a room we were already
  following, `MemberError` is raised rather than silently losing events.

Failed requests raise `MemberError` (nio's `ErrorResponse`s are never ignored);
nio itself raises `LocalProtocolError` e.g. when sending to an unknown room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

import nio

Predicate = Callable[[str, nio.Event], bool]
_R = TypeVar("_R")

# Ask for plenty of timeline per sync so a burst of events between two syncs
# is not cut short ("limited" timeline), which would silently lose events.
_SYNC_FILTER: dict[str, Any] = {"room": {"timeline": {"limit": 500}}}
# The initial sync only needs room state; its timeline is discarded anyway.
_FIRST_SYNC_FILTER: dict[str, Any] = {"room": {"timeline": {"limit": 1}}}
_POLL_MS = 500
# How many unconsumed events a TimeoutError lists.
_MAX_SHOWN = 40


DEFAULT_PASSWORD = "correct-horse-battery-staple"


class MemberFactory(Protocol):
    """Type of the `make_member` fixture (tests/integration/conftest.py)."""

    def __call__(
        self,
        localpart: str | None = None,
        *,
        encrypted: bool = False,
        admin: bool = False,
        password: str = DEFAULT_PASSWORD,
    ) -> Awaitable[Member]: ...


class MemberError(RuntimeError):
    """A Matrix request made by a Member failed."""


def _check(resp: Any, expected: type[_R], what: str) -> _R:
    """Return `resp` if it is the expected response type, else raise."""
    if isinstance(resp, expected):
        return resp
    if isinstance(resp, nio.ErrorResponse):
        raise MemberError(f"{what} failed: {resp.status_code or ''} {resp.message}".strip())
    raise MemberError(f"{what} returned unexpected {type(resp).__name__}: {resp!r}")


def describe(room_id: str, event: nio.Event) -> str:
    """One-line human description of an event, for timeout messages."""
    body = getattr(event, "body", None)
    if body is None:
        if isinstance(event, nio.ReactionEvent):
            body = f"reaction {event.key} -> {event.reacts_to}"
        elif isinstance(event, nio.RedactionEvent):
            body = f"redaction of {event.redacts}"
        else:
            body = f"<{event.source.get('type', type(event).__name__)}>"
    return f"{room_id} {event.sender}: {body}"


class Member:
    """One logged-in Matrix user.

    With `store_dir` the client is E2EE-capable (olm/megolm keys persisted in
    that directory, which must be unique per Member); without it, it can only
    read unencrypted rooms.
    """

    def __init__(
        self,
        homeserver_url: str,
        user_id: str,
        password: str,
        store_dir: pathlib.Path | None = None,
    ) -> None:
        self.user_id = user_id
        self.password = password
        self.encrypted = store_dir is not None
        if store_dir is not None:
            store_dir.mkdir(parents=True, exist_ok=True)
            config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
            self.client = nio.AsyncClient(
                homeserver_url, user_id, store_path=str(store_dir), config=config
            )
        else:
            self.client = nio.AsyncClient(homeserver_url, user_id)
        # Unconsumed (room_id, event) pairs from every sync after login().
        self._buffer: list[tuple[str, nio.Event]] = []
        # Joined rooms whose timeline we have been receiving continuously.
        self._followed: set[str] = set()

    def __repr__(self) -> str:
        return f"Member({self.user_id!r})"

    # ------------------------------------------------------------- lifecycle

    async def login(self) -> None:
        _check(
            await self.client.login(self.password, device_name="coopbot-tests"),
            nio.LoginResponse,
            f"login {self.user_id}",
        )
        first = _check(
            await self.client.sync(timeout=0, sync_filter=_FIRST_SYNC_FILTER),
            nio.SyncResponse,
            f"initial sync {self.user_id}",
        )
        self._followed.update(first.rooms.join)
        await self._maintain_keys()

    async def close(self) -> None:
        await self.client.close()

    # ----------------------------------------------------------------- rooms

    async def create_room(
        self,
        *,
        name: str = "ops",
        invite: Iterable[str] = (),
        encrypted: bool = False,
        power_users: dict[str, int] | None = None,
        room_version: str | None = None,
    ) -> str:
        """Create a private room and return its id.

        `power_users` are merged into the room's power-level `users` map after
        creation (read-modify-write), so the creator keeps whatever the room
        version gives it: level 100 in the map for rooms < v12, implicit
        "infinite" power (and *absent* from the map) in v12+, Synapse's default.
        """
        initial_state: list[dict[str, Any]] = []
        if encrypted:
            initial_state.append(
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            )
        resp = _check(
            await self.client.room_create(
                name=name,
                invite=list(invite),
                initial_state=initial_state,
                room_version=room_version,
            ),
            nio.RoomCreateResponse,
            f"create room {name!r}",
        )
        room_id = str(resp.room_id)
        if power_users:
            await self.set_power_levels(room_id, power_users)
        await self._sync(0)
        return room_id

    async def set_power_levels(self, room_id: str, users: dict[str, int]) -> None:
        """Merge `users` into the room's m.room.power_levels `users` map."""
        current = _check(
            await self.client.room_get_state_event(room_id, "m.room.power_levels"),
            nio.RoomGetStateEventResponse,
            f"get power levels of {room_id}",
        )
        content = dict(current.content)
        content["users"] = {**content.get("users", {}), **users}
        _check(
            await self.client.room_put_state(room_id, "m.room.power_levels", content),
            nio.RoomPutStateResponse,
            f"set power levels in {room_id}",
        )

    async def join(self, room_id: str) -> None:
        _check(await self.client.join(room_id), nio.JoinResponse, f"join {room_id}")
        # Learn the room's state (members, encryption) before anyone sends.
        await self._sync(0)

    async def invite(self, room_id: str, user_id: str) -> None:
        _check(
            await self.client.room_invite(room_id, user_id),
            nio.RoomInviteResponse,
            f"invite {user_id} to {room_id}",
        )

    # ---------------------------------------------------------------- events

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        """Send any room event (encrypted if the room is); return its id."""
        if self.encrypted:
            # Pick up membership and device-list changes first, otherwise the
            # megolm session may not be shared with someone who just joined.
            await self._sync(0)
        resp = _check(
            await self.client.room_send(
                room_id, event_type, content, ignore_unverified_devices=True
            ),
            nio.RoomSendResponse,
            f"send {event_type} to {room_id}",
        )
        return str(resp.event_id)

    async def send(self, room_id: str, body: str, *, msgtype: str = "m.text") -> str:
        return await self.send_event(room_id, "m.room.message", {"msgtype": msgtype, "body": body})

    async def edit(self, room_id: str, event_id: str, new_body: str) -> str:
        content = {
            "msgtype": "m.text",
            "body": f"* {new_body}",
            "m.new_content": {"msgtype": "m.text", "body": new_body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
        }
        return await self.send_event(room_id, "m.room.message", content)

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        # Note: nio never encrypts m.reaction, even in encrypted rooms.
        content = {
            "m.relates_to": {
                "rel_type": "m.annotation",
                "event_id": event_id,
                "key": key,
            }
        }
        return await self.send_event(room_id, "m.reaction", content)

    async def redact(self, room_id: str, event_id: str, reason: str | None = None) -> None:
        _check(
            await self.client.room_redact(room_id, event_id, reason),
            nio.RoomRedactResponse,
            f"redact {event_id} in {room_id}",
        )

    # ------------------------------------------------------------- raw calls

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A client-server API call nio has no method for; the JSON answer (raises on
        any status but 200)."""
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        data = json.dumps(body) if body is not None else None
        response = await self.client.send(method, path, data, headers)
        answer = await response.json(content_type=None)
        if response.status != 200:
            raise MemberError(f"{method} {path} failed: {response.status} {answer}")
        return answer

    async def keys_query(self, user_id: str) -> dict[str, Any]:
        """/keys/query for one user: devices, master and self-signing keys."""
        answer: dict[str, Any] = await self.api(
            "POST", "/_matrix/client/v3/keys/query", {"device_keys": {user_id: []}}
        )
        return answer

    async def notifications(self) -> list[dict[str, Any]]:
        """What Synapse's push rules notified this member of (newest first)."""
        answer = await self.api("GET", "/_matrix/client/v3/notifications?limit=100")
        return list(answer.get("notifications", []))

    # --------------------------------------------------------------- waiting

    # The deadline spans many syncs, so an explicit timeout beats asyncio.timeout.
    async def wait_for(self, predicate: Predicate, timeout: float = 30) -> nio.Event:  # noqa: ASYNC109
        """Return (and consume) the first buffered or newly synced event matching.

        See the module docstring for the buffering rules. Raises TimeoutError
        listing what was seen (and left unconsumed) if nothing matched.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._retry_decrypt()
            for index, (room_id, event) in enumerate(self._buffer):
                if predicate(room_id, event):
                    del self._buffer[index]
                    return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                shown = self._buffer[-_MAX_SHOWN:]
                seen = "\n  ".join(describe(r, e) for r, e in shown) or "nothing"
                if len(self._buffer) > len(shown):
                    seen += f"\n  (and {len(self._buffer) - len(shown)} earlier)"
                raise TimeoutError(
                    f"{self.user_id}: no matching event within {timeout}s; "
                    f"unconsumed events:\n  {seen}"
                )
            await self._sync(min(_POLL_MS, max(int(remaining * 1000), 0)))

    async def wait_for_reply(
        self,
        room_id: str,
        sender: str,
        contains: str = "",
        timeout: float = 30,  # noqa: ASYNC109
    ) -> nio.RoomMessage:
        """First m.room.message from `sender` in `room_id` whose body contains `contains`.

        Matches any message type (text, notice, emote, ...). Edits match on
        their "* ..." fallback body.
        """

        def match(rid: str, event: nio.Event) -> bool:
            return (
                rid == room_id
                and event.sender == sender
                and isinstance(event, nio.RoomMessage)
                and contains in str(event.source.get("content", {}).get("body", ""))
            )

        event = await self.wait_for(match, timeout)
        assert isinstance(event, nio.RoomMessage)
        return event

    async def drain(self) -> list[tuple[str, nio.Event]]:
        """Sync once, then empty and return the buffer of unconsumed events."""
        await self._sync(0)
        self._retry_decrypt()
        drained, self._buffer = self._buffer, []
        return drained

    @property
    def pending(self) -> list[tuple[str, nio.Event]]:
        """Read-only view of the unconsumed events (no sync)."""
        return list(self._buffer)

    # ------------------------------------------------------------- internals

    async def _sync(self, timeout_ms: int) -> None:
        resp = _check(
            await self.client.sync(timeout=timeout_ms, sync_filter=_SYNC_FILTER),
            nio.SyncResponse,
            f"sync {self.user_id}",
        )
        # nio has already decrypted what it could in resp (room keys arriving
        # as to-device events in the same sync are processed first).
        for room_id, room in resp.rooms.join.items():
            # A newly joined room comes with (possibly truncated) history;
            # only a gap in a room we were already following loses events.
            if room.timeline.limited and room_id in self._followed:
                raise MemberError(
                    f"{self.user_id}: sync timeline for {room_id} was limited; "
                    "events were skipped (raise _SYNC_FILTER's limit)"
                )
            self._followed.add(room_id)
            self._buffer.extend((room_id, event) for event in room.timeline.events)
        self._followed.difference_update(resp.rooms.leave)
        await self._maintain_keys()

    async def _maintain_keys(self) -> None:
        """The E2EE housekeeping nio's sync_forever does after each sync."""
        if not self.encrypted:
            return
        client = self.client
        if client.should_upload_keys:
            _check(await client.keys_upload(), nio.KeysUploadResponse, "keys upload")
        if client.should_query_keys:
            _check(await client.keys_query(), nio.KeysQueryResponse, "keys query")
        if client.should_claim_keys:
            _check(
                await client.keys_claim(client.get_users_for_key_claiming()),
                nio.KeysClaimResponse,
                "keys claim",
            )
        # Outgoing to-device messages (key requests, key shares).
        await client.send_to_device_messages()

    def _retry_decrypt(self) -> None:
        """Decrypt buffered megolm events whose room key arrived later."""
        if not self.encrypted:
            return
        for index, (room_id, event) in enumerate(self._buffer):
            if isinstance(event, nio.MegolmEvent):
                with contextlib.suppress(nio.EncryptionError):
                    self._buffer[index] = (room_id, self.client.decrypt_event(event))
