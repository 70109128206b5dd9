"""nio's key store (data_dir/e2ee, SQLite through peewee), made to survive a full disk.

nio writes its store from inside `client.sync()`: an Olm session a member's client
starts, a Megolm room key, device keys. On a full data disk that write raises
peewee.OperationalError ("database or disk is full") out of the sync, before the
response is taken; the sync token does not advance, so every later sync brings the
same to-device events and fails the same way. Found on a real Synapse
(tests/faults/test_disk_full.py): left alone, that ended the receive loop and with it
the bot, in every room, encrypted or not.

FullDiskStore is nio's DefaultStore whose writes, when the disk is full, are logged
once and dropped: the Olm machine keeps the sessions and keys in memory (it always
does; the store is only their copy for the next start), so the bot goes on decrypting
and answering. What is lost is that copy: keys that arrived while the disk was full
are gone after a restart, and members' clients have to share them again (the bot
asks for a missing room key by itself, bot/ops/matrix_undecrypted.py). The full disk
itself is named in /healthz by the bot's own store (Store.problems).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from nio.store import DefaultStore, MatrixStore
from peewee import OperationalError

log = logging.getLogger(__name__)

# MatrixStore's methods that write (nio 0.25): each is wrapped below.
WRITES = (
    "save_account",
    "save_session",
    "save_inbound_group_session",
    "save_device_keys",
    "save_encrypted_rooms",
    "save_sync_token",
    "delete_encrypted_room",
    "add_outgoing_key_request",
    "remove_outgoing_key_request",
    "verify_device",
    "unverify_device",
    "blacklist_device",
    "unblacklist_device",
    "ignore_device",
    "unignore_device",
    "ignore_devices",
)


def disk_full(exc: BaseException) -> bool:
    """peewee's OperationalError wraps sqlite3's (its first argument)."""
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, sqlite3.OperationalError):
        return getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return "database or disk is full" in str(exc)


def _guarded(name: str, write: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(write)
    def guarded(self: FullDiskStore, *args: Any, **kwargs: Any) -> Any:
        try:
            result = write(self, *args, **kwargs)
        except OperationalError as exc:
            if not disk_full(exc):
                raise
            if not self.full:
                log.error(
                    "the data disk is full: nio's key store (e2ee) keeps new keys in memory "
                    "only (%s dropped); a restart before space is freed loses them",
                    name,
                )
            self.full = True
            return None
        if self.full:
            log.warning("nio's key store (e2ee) takes writes again")
            self.full = False
        return result

    return guarded


class FullDiskStore(DefaultStore):  # type: ignore[misc]  # nio is untyped there
    """nio's DefaultStore; a write the full disk refuses is dropped (see above)."""

    full = False


for _name in WRITES:
    _write = getattr(MatrixStore, _name, None)
    if _write is not None:  # a name another nio release does not have
        setattr(FullDiskStore, _name, _guarded(_name, getattr(DefaultStore, _name, _write)))
