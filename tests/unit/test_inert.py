"""Member text, release notes and logs are inert in the bot's messages: the rendered
formatted_body carries no link, image or "@room", and m.mentions only what the bot chose."""

from __future__ import annotations

import re

import pytest

from bot.core.chat import render_html
from bot.core.context import Arg, CommandContext, Option
from bot.core.registry import CommandGroup
from bot.core.roles import Role
from bot.features.upgrades.render import excerpt
from bot.fmt import code, code_block
from bot.ops.matrix_content import notice as _notice
from tests.unit.helpers import ADMIN, BotFactory, chat_of, drain, message

# What a member (or a release note, or a log line) might type to smuggle markup in.
ATTACKS = [
    "[click](https://evil.example)",
    "[pill](https://matrix.to/#/@admin:hs.test)",
    "<https://evil.example>",
    "<a href='https://evil.example'>x</a>",
    '<img src="mxc://evil/img">',
    "![](mxc://evil/img)",
    "![alt](https://evil.example/x.png)",
    "[ref]\n\n[ref]: https://evil.example",
    "@room wake up",
    "hey @ROOM",
    "**@room**",
    "`` ` `` @room [x](https://evil.example)",
    "```\n@room\n```\n[x](https://evil.example)",
    "~~~\n[x](https://evil.example)",
    "| a |\n|---|\n| [x](https://evil.example) @room |",
]


def assert_inert(html: str) -> None:
    """No element that links, embeds or mentions; "@room" only inside code."""
    assert not re.search(r"<\s*(a|img)\b", html, re.IGNORECASE), html
    assert not re.search(r"<[a-z][^>]*\b(href|src)\s*=", html, re.IGNORECASE), html
    outside_code = re.sub(r"<code>.*?</code>", "", html, flags=re.DOTALL)
    assert "@room" not in outside_code.lower(), html


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_renderer_makes_no_link_image_or_room_mention(attack: str) -> None:
    # Even text that was not put in code on purpose (the safety net).
    assert_inert(render_html(attack))
    assert_inert(render_html(f"Unknown option {attack} in a sentence"))


@pytest.mark.parametrize("attack", ATTACKS)
def test_code_span_and_block_show_the_text_and_cannot_be_closed_early(attack: str) -> None:
    span = render_html(f"You typed {code(attack)}.")
    assert_inert(span)
    assert span.count("<code>") == 1, span  # one span: nothing inside closed it
    block = render_html(f"Logs:\n{code_block(attack)}\nEnd.")
    assert_inert(block)
    assert block.count("<pre>") == 1, block
    assert block.endswith("<p>End.</p>"), block


def test_a_code_block_longer_fence_than_any_run_inside() -> None:
    text = "line ```` four\n```\nend"
    assert code_block(text).startswith("`````\n")
    html = render_html(code_block(text))
    assert html == "<pre><code>line ```` four\n```\nend\n</code></pre>"


def test_bot_mentions_are_only_what_the_bot_names() -> None:
    # A member's "@room" or "@admin:hs.test" in the text never becomes m.mentions.
    content = _notice("You said " + code("@room @admin:hs.test"), ())
    assert content["m.mentions"] == {}
    content = _notice("Vote please", ["@alice:hs.test"])
    assert content["m.mentions"] == {"user_ids": ["@alice:hs.test"]}


def test_release_note_excerpt_is_a_code_span_in_its_table_cell() -> None:
    notes = [("1.0.1", "[x](https://evil.example) | @room ![](mxc://e/v)")]
    row = f"| a |\n|---|\n| {excerpt(notes)} |"
    html = render_html(row)
    assert_inert(html)
    assert html.count("<td>") == 1  # the note's pipe did not split the cell


@pytest.fixture
def echo() -> CommandGroup:
    group = CommandGroup("echo")

    @group.command(
        "pick",
        help="Pick one.",
        args=(Arg("what", choices=("a", "b")),),
        options=(Option("n", "a number", type=int, default=1, metavar="N"),),
        role=Role.VIEWER,
        quick=True,
    )
    async def pick(ctx: CommandContext) -> None:
        await ctx.reply("picked")

    return group


@pytest.mark.parametrize(
    "body",
    [
        "![](mxc://evil/img)",  # an unknown command
        "[x](https://evil.example)@room",
        "pick [x](https://evil.example)",  # a value not among the choices
        "pick a @room![](mxc://evil/img)",  # an unexpected argument
        "pick a --[x](https://evil.example)",  # an unknown option
        "pick a --n=@room",  # a value the converter refuses
        "pick a --n",  # an option without its value
    ],
)
async def test_errors_echo_member_text_inert(
    make_bot: BotFactory, echo: CommandGroup, body: str
) -> None:
    bot = make_bot(echo)
    msg = message("!" + body, ADMIN)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    (reply,) = chat_of(bot).replies_to(msg.event_id)
    assert_inert(render_html(reply))
