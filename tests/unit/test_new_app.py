"""!new: an app's .env from its recipe's .env.sample, as `abra app new` makes it, on a
real corpus recipe (bot/ops/abra.py new_app_env/create_app, Apps.create, commands/create.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import Bot
from bot.ops.abra import new_app_env, parse_env
from tests.harness.corpus import clone_recipe
from tests.unit.helpers import ADMIN, OPERATOR, BotFactory, chat_of, drain, message


async def ask(bot: Bot, body: str, sender: str) -> list[str]:
    msg = message(body, sender)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    chat = chat_of(bot)
    return [chat.shown(s.event_id) for s in chat.sent if s.reply_to == msg.event_id]


@pytest.fixture
def abra(tmp_path: Path) -> Path:
    folder = tmp_path / "abra"
    clone_recipe("bonfire", folder / "recipes")
    (folder / "servers" / "default").mkdir(parents=True)
    return folder


@pytest.mark.parametrize(
    ("sample", "made"),
    [
        ("TYPE=x\nDOMAIN=x.example.com\nA=1\n", "TYPE=blog\nDOMAIN=b.coop\nA=1\n"),
        (
            "RECIPE=x\r\nDOMAIN=a\r\n# DOMAIN=b\r\n",
            "RECIPE=blog\r\nDOMAIN=b.coop\r\n# DOMAIN=b\r\n",
        ),
        ("A=1\n", "TYPE=blog\nDOMAIN=b.coop\nA=1\n"),  # a sample without either line
        ("export DOMAIN=a\nTYPE=x\nTYPE=y\n", "export DOMAIN=b.coop\nTYPE=blog\nTYPE=y\n"),
    ],
)
def test_new_app_env_sets_domain_and_type_only(sample: str, made: str) -> None:
    assert new_app_env(sample, "blog", "b.coop") == made


async def test_new_makes_the_app_from_the_sample(make_bot: BotFactory, abra: Path) -> None:
    bot = make_bot(abra_dir=str(abra), servers={"default": {}})
    (answer,) = await ask(bot, "!new bonfire social.example.coop", ADMIN)
    assert answer.startswith("✅ Made social.example.coop on default from the bonfire recipe")
    assert "`!secrets social.example.coop generate`" in answer
    made = abra / "servers" / "default" / "social.example.coop.env"
    sample = (abra / "recipes" / "bonfire" / ".env.sample").read_text()
    changed = [
        (a, b)
        for a, b in zip(sample.splitlines(), made.read_text().splitlines(), strict=True)
        if a != b
    ]
    assert changed == [("DOMAIN=bonfire.example.com", "DOMAIN=social.example.coop")]
    env = parse_env(made, "default")
    assert env.recipe == "bonfire"
    assert env.compose_files == ("compose.yml", "compose.postgres.yml")  # the chained overlay


async def test_new_refuses_what_exists_unknown_recipes_and_non_admins(
    make_bot: BotFactory, abra: Path
) -> None:
    bot = make_bot(abra_dir=str(abra), servers={"default": {}})
    await ask(bot, "!new bonfire social.example.coop", ADMIN)
    (again,) = await ask(bot, "!new bonfire social.example.coop", ADMIN)
    assert again == "❌ social.example.coop exists already (on default); nothing was changed."
    (unknown,) = await ask(bot, "!new bonfir other.example.coop", ADMIN)
    assert "No recipe bonfir" in unknown
    assert "Did you mean bonfire?" in unknown
    (denied,) = await ask(bot, "!new bonfire third.example.coop", OPERATOR)
    assert "needs the admin role" in denied
    assert not (abra / "servers" / "default" / "other.example.coop.env").exists()
    assert not (abra / "servers" / "default" / "third.example.coop.env").exists()
