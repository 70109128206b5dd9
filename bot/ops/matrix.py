"""The matrix-nio adapter: login, rooms, the sync loop, sending.

Replay policy (a restart must neither re-run nor lose a command):
- our own store keeps `next_batch` (nio only saves it with encryption on);
- every command event id is recorded before it is handed on, so it runs at most once;
- events older than the moment the bot joined the room are history, never commands;
- a gap in a sync (`limited` timeline) is filled from /messages back to the old token;
- commands older than `catchup_max_age` (sent while it was down) are answered, not run.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientResponse
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    Event,
    JoinError,
    LoginResponse,
    MegolmEvent,
    MessageDirection,
    ReactionEvent,
    RedactionEvent,
    Response,
    RoomGetStateError,
    RoomMessagesError,
    RoomMessageText,
    RoomResolveAliasError,
    RoomSendResponse,
    SyncError,
    SyncResponse,
    UploadResponse,
    WhoamiError,
)
from nio.api import RelationshipType

from bot.config import MatrixConfig
from bot.core.chat import ChatEvent, EventHandler, Membership, Message, Reaction, Redaction
from bot.core.metrics import Metrics
from bot.core.store import Store
from bot.errors import CoopbotError
from bot.ops.matrix_content import mentions_of, notice, reaction, relate
from bot.ops.matrix_identity import Identity
from bot.ops.matrix_rooms import is_hydra
from bot.ops.matrix_store import FullDiskStore
from bot.ops.matrix_undecrypted import Undecrypted

log = logging.getLogger(__name__)

SESSION_KEY = "matrix.session"
SYNC_TOKEN_KEY = "matrix.next_batch"
# Timeline events per room per sync; a longer backlog is fetched page by page.
SYNC_FILTER = {"room": {"timeline": {"limit": 50}}}
GAP_PAGE = 100
GAP_MAX_EVENTS = 20_000
BACKOFF_MAX = 60.0
_REPLY_FALLBACK = re.compile(r"\A(?:>[^\n]*\n)+\n")


class MatrixError(CoopbotError):
    """The homeserver refused something the bot needs."""


class _Client(AsyncClient):  # type: ignore[misc]  # nio ships no type information
    """nio reads only `retry_after_ms` of a 429 and retries forever; newer servers send
    `Retry-After`: read both and cap the wait, so a rate limit never hangs the bot."""

    max_wait: float = 30.0

    async def create_matrix_response(
        self,
        response_class: type[Response],
        transport_response: ClientResponse,
        data: tuple[Any, ...] | None = None,
        save_to: Any = None,
    ) -> Response:
        response = await super().create_matrix_response(
            response_class, transport_response, data, save_to
        )
        if transport_response.status == 429 and isinstance(response, ErrorResponse):
            wait_ms = response.retry_after_ms
            header = transport_response.headers.get("Retry-After", "")
            if not wait_ms and header.isdigit():
                wait_ms = int(header) * 1000
            response.retry_after_ms = int(min(wait_ms or 5000, self.max_wait * 1000))
        return response


class MatrixChat:
    def __init__(
        self, config: MatrixConfig, store: Store, data_dir: Path, metrics: Metrics
    ) -> None:
        self.config = config
        self.user_id = config.user_id
        self._store = store
        self._metrics = metrics
        store_dir = data_dir / "e2ee"
        store_dir.mkdir(parents=True, exist_ok=True)
        self.client = _Client(
            config.homeserver,
            config.user_id,
            store_path=str(store_dir),
            config=AsyncClientConfig(
                encryption_enabled=config.encryption,
                store=FullDiskStore,  # a full data disk must not end the sync loop
                store_sync_tokens=False,  # we keep next_batch ourselves
                max_limit_exceeded=config.max_rate_limit_retries,
                max_timeouts=2,  # the sync loop does its own reconnecting with backoff
            ),
        )
        self.client.max_wait = config.max_rate_limit_wait
        # Cross-signing needs device keys, so it only exists with encryption on.
        self.identity: Identity | None = None
        if config.encryption and config.cross_signing:
            self.identity = Identity(
                self.client,
                store_dir,
                recovery_key_file=config.recovery_key_file,
                password=config.password.get_secret_value() if config.password else None,
            )
        self.undecrypted = Undecrypted(store)  # members the bot cannot hear
        self._allowed: set[str] = set()
        self._home: str | None = None  # the first configured room, once resolved
        self._ids: dict[str, str] = {}  # configured id or alias -> room id
        self._creators: dict[str, asyncio.Future[frozenset[str]]] = {}
        self._last_sync = 0.0
        self._sync_ok = False
        self._running = False

    # -- lifecycle -------------------------------------------------------------
    async def login(self) -> None:
        """Reuse the saved device and token when they still work, so a restart
        does not create a new device (and lose E2EE sessions)."""
        client, config = self.client, self.config
        saved = self._store.get_json(SESSION_KEY) or {}
        same_account = (
            saved.get("user_id") == config.user_id and saved.get("homeserver") == config.homeserver
        )
        token = config.access_token.get_secret_value() if config.access_token else None
        if same_account and (token is None or token == saved.get("access_token")):
            client.restore_login(config.user_id, saved["device_id"], saved["access_token"])
            if not isinstance(await client.whoami(), WhoamiError):
                log.info("logged in as %s, device %s (saved)", config.user_id, client.device_id)
                return
            log.warning("the saved access token no longer works; logging in again")
        if token is not None:
            client.access_token = token
            who = await client.whoami()
            if isinstance(who, WhoamiError):
                raise MatrixError(f"matrix.access_token was refused: {who.message}")
            if who.user_id != config.user_id:
                raise MatrixError(
                    f"matrix.access_token belongs to {who.user_id}, not {config.user_id}"
                )
            if not who.device_id:
                raise MatrixError("the homeserver did not say which device the token is for")
            client.restore_login(config.user_id, who.device_id, token)
        else:
            assert config.password is not None
            response = await client.login(
                config.password.get_secret_value(), device_name=config.device_name
            )
            if not isinstance(response, LoginResponse):
                raise MatrixError(f"login as {config.user_id} failed: {response.message}")
        self._store.put_json(
            SESSION_KEY,
            {
                "user_id": config.user_id,
                "homeserver": config.homeserver,
                "device_id": client.device_id,
                "access_token": client.access_token,
            },
        )
        log.info("logged in as %s, device %s", config.user_id, client.device_id)

    async def _resolve_rooms(self) -> None:
        for ref in self.config.room_refs:
            if ref.startswith("!"):
                room_id: str | None = ref
            else:
                response = await self.client.room_resolve_alias(ref)
                if isinstance(response, RoomResolveAliasError):
                    log.warning("cannot resolve room alias %s: %s", ref, response.message)
                    room_id = None
                else:
                    room_id = response.room_id
            if room_id is not None:
                self._allowed.add(room_id)
                self._ids[ref] = room_id
                if ref == self.config.room_refs[0]:
                    self._home = room_id

    async def home_room(self) -> str | None:
        # Known once joined and synced: nio cannot send to a room it has not seen.
        return self._home if self._home in self.client.rooms else None

    async def room_for(self, ref: str) -> str | None:
        return self._ids.get(ref)

    async def _join(self, room_id: str) -> None:
        if room_id in self.client.rooms:
            return
        response = await self.client.join(room_id)
        if isinstance(response, JoinError):
            log.warning("cannot join %s: %s", room_id, response.message)
            return
        # Anything sent before this moment is history, not a command for us.
        self._store.set_room_joined_at(room_id, int(time.time() * 1000))
        log.info("joined %s", room_id)

    async def close(self) -> None:
        await self.client.close()

    def alive(self) -> bool:
        """The last sync succeeded, recently enough that the loop is not stuck."""
        recent = time.monotonic() - self._last_sync < self.config.sync_timeout + 60
        return self._running and self._sync_ok and recent

    def problems(self) -> list[str]:
        """What keeps members from using the bot although it syncs (for /healthz):
        an unsigned device is invisible to Element in encrypted rooms (MSC4153), and
        a member whose messages it cannot decrypt is not heard."""
        signed = self.identity.problems() if self.identity is not None else []
        return signed + self.undecrypted.problems()

    # -- receiving ---------------------------------------------------------------
    async def run(self, on_event: EventHandler) -> None:
        """Log in, join, then sync until cancelled; reconnects with backoff."""
        backoff = 1.0
        while True:
            try:
                await self._connect()
                break
            except (ClientError, OSError, TimeoutError) as exc:
                log.warning("homeserver unreachable (%s); retrying in %.0fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        self._running = True
        try:
            await self._sync_forever(on_event)
        finally:
            self._running = False

    async def _connect(self) -> None:
        await self.login()
        if self.identity is not None:
            await self.identity.ensure()  # at every start: a lost signature is put back
        await self._resolve_rooms()
        since = self._store.get(SYNC_TOKEN_KEY)
        if since is None:
            # First start: learn the rooms; everything already there is history.
            response = await self.client.sync(timeout=0, full_state=True, sync_filter=SYNC_FILTER)
            if not isinstance(response, SyncResponse):
                raise MatrixError(f"first sync failed: {response.message}")
            await self._after_sync()
            now_ms = int(time.time() * 1000)
            for room_id in response.rooms.join:
                self._store.set_room_joined_at(room_id, now_ms)
            self._store.put(SYNC_TOKEN_KEY, response.next_batch)

    async def _sync_forever(self, on_event: EventHandler) -> None:
        backoff = 1.0
        first = True
        while True:
            since = self._store.get(SYNC_TOKEN_KEY)
            try:
                response = await self.client.sync(
                    timeout=0 if first else int(self.config.sync_timeout * 1000),
                    since=since,
                    full_state=first,  # after a restart nio must relearn members and levels
                    sync_filter=SYNC_FILTER,
                )
            except (ClientError, OSError, TimeoutError) as exc:
                response = SyncError(str(exc))
            if isinstance(response, SyncError):
                self._sync_ok = False
                if response.status_code == "M_UNKNOWN_TOKEN":
                    raise MatrixError("the homeserver logged the bot out (M_UNKNOWN_TOKEN)")
                log.warning("sync failed (%s); retrying in %.0fs", response.message, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            assert isinstance(response, SyncResponse)
            try:
                await self._take(response, since, first, on_event)
            except (ClientError, OSError, TimeoutError) as exc:
                # A connection error while filling a gap, uploading keys or joining
                # must not end the receive loop (and with it the bot): the batch is
                # taken again from the same token, and seen events are not re-run.
                self._sync_ok = False
                log.warning("taking a sync failed (%s); retrying in %.0fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff, first = 1.0, False

    async def _take(
        self, response: SyncResponse, since: str | None, first: bool, on_event: EventHandler
    ) -> None:
        """Hand on what one sync brought, then save its token."""
        if first:  # now nio knows the rooms we are in: join the configured others
            for room_id in self._allowed - set(self.client.rooms):
                await self._join(room_id)
        self._sync_ok = True
        self._last_sync = time.monotonic()
        self._metrics.last_sync.set(time.time())
        await self._after_sync()
        for room_id in response.rooms.invite:
            await self._on_invite(room_id)
        for room_id, info in response.rooms.join.items():
            if room_id not in self._allowed:
                continue
            events = list(info.timeline.events)
            if info.timeline.limited and since is not None:
                events = await self._fill_gap(room_id, info.timeline.prev_batch, since) + events
            for event in events:
                incoming = self._incoming(room_id, event)
                if isinstance(incoming, Message):
                    await self._deliver(incoming, on_event)
                elif incoming is not None:
                    await on_event(incoming)  # votes count whenever they were cast
        await self.undecrypted.request_keys(self.client)
        # Saved only after every command in this batch was recorded and handed on.
        self._store.put(SYNC_TOKEN_KEY, response.next_batch)

    async def _after_sync(self) -> None:
        """The E2EE housekeeping nio's sync_forever would do."""
        client = self.client
        if not self.config.encryption:
            return
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())

    async def _on_invite(self, room_id: str) -> None:
        if room_id in self._allowed:
            await self._join(room_id)
        else:
            log.info("declining an invite to %s: not in matrix.rooms", room_id)
            await self.client.room_leave(room_id)

    async def _fill_gap(self, room_id: str, prev_batch: str, since: str) -> list[Event]:
        """Events between the old sync token and the start of a limited timeline."""
        events: list[Event] = []
        token = prev_batch
        while len(events) < GAP_MAX_EVENTS:
            response = await self.client.room_messages(
                room_id, start=token, end=since, direction=MessageDirection.back, limit=GAP_PAGE
            )
            if isinstance(response, RoomMessagesError):
                log.error("cannot fetch missed messages in %s: %s", room_id, response.message)
                break
            events.extend(response.chunk)
            if not response.chunk or not response.end or response.end == token:
                break
            token = response.end
        events.reverse()
        return events

    def _incoming(self, room_id: str, event: Event) -> ChatEvent | None:
        """The event as a command, reaction or redaction; None if it must be ignored."""
        if event.sender == self.user_id:
            return None
        joined_at = self._store.room_joined_at(room_id)
        if isinstance(event, ReactionEvent | RedactionEvent):
            if joined_at is not None and event.server_timestamp < joined_at:
                return None
            if not self._store.mark_seen(event.event_id, room_id):
                return None
            if isinstance(event, ReactionEvent):
                return reaction(room_id, event)
            # Room v11+ moved `redacts` into the content.
            redacts = event.source.get("content", {}).get("redacts") or event.redacts
            return Redaction(room_id, event.event_id, event.sender, redacts)
        if isinstance(event, MegolmEvent):
            # Sessions from before the bot joined were never meant for it: not counted.
            if joined_at is None or event.server_timestamp >= joined_at:
                self.undecrypted.saw(room_id, event)
            return None
        # RoomMessageNotice is a different class: other bots' notices never reach here.
        if not isinstance(event, RoomMessageText):
            return None
        if event.decrypted:
            self.undecrypted.decrypted(event.sender)
        content: dict[str, Any] = event.source.get("content", {})
        relates = content.get("m.relates_to") or {}
        if relates.get("rel_type") == "m.replace" or "m.new_content" in content:
            return None  # an edit: the original already ran (or was refused)
        body = _REPLY_FALLBACK.sub("", event.body, count=1)
        thread = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
        # Commands, and replies in a thread (a comment on a proposal is kept with it).
        if not body.startswith(self.config.prefix) and thread is None:
            return None
        if joined_at is not None and event.server_timestamp < joined_at:
            return None
        if not self._store.mark_seen(event.event_id, room_id):
            return None
        return Message(room_id, event.event_id, event.sender, body, event.server_timestamp, thread)

    async def _deliver(self, message: Message, on_event: EventHandler) -> None:
        age = time.time() - message.timestamp_ms / 1000
        if age <= self.config.catchup_max_age:
            await on_event(message)
            return
        if not message.body.startswith(self.config.prefix):  # an old comment: no answer
            return
        self._store.audit(
            message.sender,
            "not-run",
            f"sent {age / 60:.0f} min before the bot saw it",
            room_id=message.room_id,
            event_id=message.event_id,
        )
        try:
            await self.send(
                message.room_id,
                f"⏸ Not run: this command was sent {age / 60:.0f} minutes ago, while I was "
                f"offline, and commands older than {self.config.catchup_max_age / 60:.0f} "
                "minutes are not run late. Send it again if it is still wanted.",
                reply_to=message.event_id,
                thread_root=message.thread_root,
            )
        except MatrixError:
            log.exception("could not answer a late command")

    # -- sending -------------------------------------------------------------------
    async def send(
        self,
        room_id: str,
        markdown: str,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
        mentions: Sequence[str] = (),
        notify: bool = False,
    ) -> str:
        content = notice(markdown, mentions)
        if notify:
            # The default push rule .m.rule.suppress_notices silences every m.notice;
            # m.text with exactly these m.mentions pings those people and nobody else.
            content["msgtype"] = "m.text"
            content["m.mentions"] = mentions_of(mentions)
        relate(content, reply_to, thread_root)
        return await self._send(room_id, "m.room.message", content)

    async def send_file(
        self,
        room_id: str,
        filename: str,
        data: bytes,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
    ) -> str:
        room = self.client.rooms.get(room_id)
        encrypted = bool(room and room.encrypted)
        response, keys = await self.client.upload(
            io.BytesIO(data),
            content_type="text/plain",
            filename=filename,
            encrypt=encrypted,
            filesize=len(data),
        )
        if not isinstance(response, UploadResponse):
            raise MatrixError(f"uploading {filename} failed: {response.message}")
        content: dict[str, Any] = {
            "msgtype": "m.file",
            "body": filename,
            "filename": filename,
            "info": {"size": len(data), "mimetype": "text/plain"},
            "m.mentions": {},
        }
        if encrypted and keys:
            content["file"] = {**keys, "url": response.content_uri}
        else:
            content["url"] = response.content_uri
        relate(content, reply_to, thread_root)
        return await self._send(room_id, "m.room.message", content)

    async def edit(self, room_id: str, event_id: str, markdown: str) -> None:
        new = notice(markdown, ())  # empty m.mentions: an edit must not ping again
        content = {
            **new,
            "body": "* " + new["body"],
            "formatted_body": "* " + new["formatted_body"],
            "m.new_content": new,
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
        }
        await self._send(room_id, "m.room.message", content)

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self._send(room_id, "m.reaction", content)

    async def _send(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        response = await self.client.room_send(
            room_id, event_type, content, ignore_unverified_devices=True
        )
        if not isinstance(response, RoomSendResponse):
            raise MatrixError(f"sending to {room_id} failed: {response.message}")
        return str(response.event_id)

    # -- rooms ---------------------------------------------------------------------
    async def membership(self, room_id: str, user_id: str) -> Membership:
        room = self.client.rooms.get(room_id)
        if room is None or user_id not in room.users:
            return Membership(member=False, power_level=0)
        creator = is_hydra(room.room_version) and user_id in await self._room_creators(room_id)
        return Membership(
            member=True, power_level=room.power_levels.get_user_level(user_id), creator=creator
        )

    async def members(self, room_id: str) -> dict[str, Membership]:
        room = self.client.rooms.get(room_id)
        if room is None:
            return {}
        return {user_id: await self.membership(room_id, user_id) for user_id in room.users}

    async def reactions(self, room_id: str, event_id: str) -> list[Reaction]:
        """The current reactions to an event, from the relations endpoint, so votes
        cast and withdrawn while the bot was down are seen as they are now."""
        found = []
        try:
            async for event in self.client.room_get_event_relations(
                room_id, event_id, RelationshipType.annotation, "m.reaction"
            ):
                if isinstance(event, ReactionEvent) and event.sender != self.user_id:
                    found.append(reaction(room_id, event))
        except AttributeError:  # nio's iterator meets an error response
            raise MatrixError(f"cannot read the reactions to {event_id} in {room_id}") from None
        return found

    async def _room_creators(self, room_id: str) -> frozenset[str]:
        """Sender and additional_creators of m.room.create (nio keeps neither).
        One request per room: concurrent callers share it."""
        task = self._creators.get(room_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch_creators(room_id))
            self._creators[room_id] = task
        try:
            return await asyncio.shield(task)
        except MatrixError:
            self._creators.pop(room_id, None)  # ask again next time
            raise

    async def _fetch_creators(self, room_id: str) -> frozenset[str]:
        response = await self.client.room_get_state(room_id)
        if isinstance(response, RoomGetStateError):
            raise MatrixError(f"cannot read the state of {room_id}: {response.message}")
        creators: set[str] = set()
        for event in response.events:
            if event.get("type") == "m.room.create":
                creators.add(event["sender"])
                creators.update(event.get("content", {}).get("additional_creators", []))
        return frozenset(creators)
