"""The content of the events the Matrix adapter sends (pure: no I/O), apart from
bot/ops/matrix.py so that one stays readable and under the module size limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nio import ReactionEvent

from bot.core.chat import ROOM_MENTION, Reaction, render_html


def reaction(room_id: str, event: ReactionEvent) -> Reaction:
    return Reaction(
        room_id, event.event_id, event.sender, event.reacts_to, event.key, event.server_timestamp
    )


def relate(content: dict[str, Any], reply_to: str | None, thread_root: str | None) -> None:
    if thread_root is not None:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": reply_to is None,
            "m.in_reply_to": {"event_id": reply_to or thread_root},
        }
    elif reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}


def notice(markdown: str, mentions: Sequence[str]) -> dict[str, Any]:
    return {
        "msgtype": "m.notice",
        "body": markdown,
        "format": "org.matrix.custom.html",
        "formatted_body": render_html(markdown),
        "m.mentions": mentions_of(mentions) if mentions else {},
    }


def mentions_of(mentions: Sequence[str]) -> dict[str, Any]:
    """m.mentions for these user ids; ROOM_MENTION among them mentions the whole room."""
    out: dict[str, Any] = {"user_ids": [m for m in mentions if m != ROOM_MENTION]}
    if ROOM_MENTION in mentions:
        out["room"] = True
    return out
