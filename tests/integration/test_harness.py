"""Smoke tests for the Synapse + Member harness itself."""

from __future__ import annotations

import uuid

import nio

from tests.harness.member import MemberFactory
from tests.harness.synapse import Synapse


def _unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


async def test_plain_room_message(make_member: MemberFactory) -> None:
    alice = await make_member()
    bob = await make_member()
    room = await alice.create_room(invite=[bob.user_id])
    await bob.join(room)

    first, text = _unique("first"), _unique("hello bob")
    await alice.send(room, first)
    event_id = await alice.send(room, text)

    got = await bob.wait_for_reply(room, alice.user_id, contains=text)
    assert isinstance(got, nio.RoomMessageText)
    assert got.event_id == event_id
    assert got.body == text
    # The earlier message was synced past but stays buffered until consumed.
    earlier = await bob.wait_for_reply(room, alice.user_id, contains=first, timeout=0)
    assert earlier.body == first


async def test_encrypted_room_is_decrypted(make_member: MemberFactory) -> None:
    alice = await make_member(encrypted=True)
    bob = await make_member(encrypted=True)
    room = await alice.create_room(invite=[bob.user_id], encrypted=True)
    await bob.join(room)

    text = _unique("secret plan")
    await alice.send(room, text)

    got = await bob.wait_for(
        lambda rid, ev: (
            rid == room
            and ev.sender == alice.user_id
            and isinstance(ev, (nio.RoomMessageText, nio.MegolmEvent))
        )
    )
    assert isinstance(got, nio.RoomMessageText), f"not decrypted: {got!r}"
    assert got.decrypted
    assert got.body == text

    # And the other direction, through the convenience helper.
    reply = _unique("ack")
    await bob.send(room, reply, msgtype="m.notice")
    notice = await alice.wait_for_reply(room, bob.user_id, contains=reply)
    assert isinstance(notice, nio.RoomMessageNotice)


async def test_react_and_redact_round_trip(make_member: MemberFactory) -> None:
    alice = await make_member()
    bob = await make_member()
    room = await alice.create_room(invite=[bob.user_id], power_users={bob.user_id: 50})
    await bob.join(room)

    target = await alice.send(room, _unique("vote on this"))
    reaction_id = await bob.react(room, target, "👍")
    reaction = await alice.wait_for(
        lambda rid, ev: isinstance(ev, nio.ReactionEvent) and ev.reacts_to == target
    )
    assert isinstance(reaction, nio.ReactionEvent)
    assert (reaction.event_id, reaction.key, reaction.sender) == (
        reaction_id,
        "👍",
        bob.user_id,
    )

    await bob.redact(room, reaction_id)
    redaction = await alice.wait_for(
        lambda rid, ev: isinstance(ev, nio.RedactionEvent) and ev.redacts == reaction_id
    )
    assert redaction.sender == bob.user_id

    # Edits arrive as ordinary messages carrying m.new_content.
    edit_id = await alice.edit(room, target, "vote on this, please")
    edit = await bob.wait_for_reply(room, alice.user_id, contains="please")
    assert edit.event_id == edit_id
    assert edit.source["content"]["m.new_content"]["body"] == "vote on this, please"


def test_register_is_idempotent(synapse: Synapse) -> None:
    localpart = f"twice-{uuid.uuid4().hex[:8]}"
    first = synapse.register(localpart, "pw")
    assert first == f"@{localpart}:localhost"
    assert synapse.register(localpart, "pw") == first
