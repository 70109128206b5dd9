"""bot/core/registry.py: argument parsing, generated usage, the registry's lookups."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.context import Arg, CommandSpec, Option, positive_int
from bot.core.registry import CommandGroup, Registry
from bot.core.roles import Role
from bot.errors import UsageError


async def _nothing(ctx: Any) -> None:
    return None


def spec(name: str = "deploy", **fields: Any) -> CommandSpec:
    fields.setdefault("help", f"{name} something.\nMore detail.")
    return CommandSpec(name=name, handler=_nothing, **fields)


DEPLOY = spec(
    args=(
        Arg("app", "the app"),
        Arg("version", "a version", required=False),
    ),
    options=(
        Option("timeout", "seconds", type=positive_int, metavar="SECONDS"),
        Option("force", "skip checks", flag=True),
        Option("note", "free text"),
    ),
    lock_arg="app",
)
RESTORE = spec(
    "restore",
    args=(
        Arg("app"),
        Arg("what", choices=("volumes", "db")),
        Arg("count", type=positive_int, required=False, default=1),
    ),
)
SAY = spec("say", args=(Arg("room"), Arg("text", rest=True)))


def usage_error(command: CommandSpec, text: str) -> UsageError:
    with pytest.raises(UsageError) as caught:
        command.parse(text)
    return caught.value


# -- parsing -----------------------------------------------------------------------


def test_positional_and_defaults() -> None:
    assert DEPLOY.parse("cloud.test") == {
        "app": "cloud.test",
        "version": None,
        "timeout": None,
        "force": False,
        "note": None,
    }


def test_optional_positional() -> None:
    assert DEPLOY.parse("cloud.test 2.0.1+1.0")["version"] == "2.0.1+1.0"


def test_options_with_space_equals_and_flags_anywhere() -> None:
    values = DEPLOY.parse("--force cloud.test --timeout 30 --note='hello world' 1.2")
    assert values == {
        "app": "cloud.test",
        "version": "1.2",
        "timeout": 30,
        "force": True,
        "note": "hello world",
    }
    assert DEPLOY.parse("a --timeout=7")["timeout"] == 7


def test_option_value_may_look_like_an_option() -> None:
    assert DEPLOY.parse("a --note --force")["note"] == "--force"
    assert DEPLOY.parse("a --note --force")["force"] is False


def test_double_dash_ends_options() -> None:
    values = DEPLOY.parse("-- --force --note")
    assert values["app"] == "--force"
    assert values["version"] == "--note"
    assert values["force"] is False


def test_single_dash_words_are_positional() -> None:
    assert DEPLOY.parse("-x")["app"] == "-x"


def test_rest_takes_every_remaining_word() -> None:
    assert SAY.parse("!ops:hs  the  server is  'on fire'") == {
        "room": "!ops:hs",
        "text": "the server is on fire",
    }


def test_rest_is_required_like_any_argument() -> None:
    assert usage_error(SAY, "!ops:hs").problem == "missing <text>"


def test_choices_and_converters() -> None:
    assert RESTORE.parse("app db 3") == {"app": "app", "what": "db", "count": 3}
    assert RESTORE.parse("app volumes")["count"] == 1
    error = usage_error(RESTORE, "app everything")
    assert error.problem == "<what> must be one of volumes, db, not `everything`"


@pytest.mark.parametrize(
    ("command", "text", "problem"),
    [
        (DEPLOY, "", "missing <app>"),
        (DEPLOY, "a --bogus", "unknown option `--bogus`"),
        (DEPLOY, "a --bogus=1", "unknown option `--bogus`"),
        (DEPLOY, "a --timeout", "`--timeout` needs a value"),
        (DEPLOY, "a --force=yes", "`--force` takes no value"),
        (DEPLOY, "a 1.0 extra", "unexpected argument `extra`"),
        (DEPLOY, "a --timeout soon", "--timeout: 'soon' is not a whole number"),
        (DEPLOY, "a --timeout=0", "--timeout: must be 1 or more"),
        (RESTORE, "app db -2", "<count>: must be 1 or more"),
        (RESTORE, "app db 2.5", "<count>: '2.5' is not a whole number"),
    ],
)
def test_usage_errors(command: CommandSpec, text: str, problem: str) -> None:
    error = usage_error(command, text)
    assert error.problem == problem
    assert error.usage == command.usage()
    assert str(error) == f"{problem}\nUsage: `{command.usage()}`"


@pytest.mark.parametrize("text", ["'unclosed", 'a "b', "a\\"])
def test_unbalanced_quotes_and_escapes(text: str) -> None:
    error = usage_error(DEPLOY, text)
    assert error.problem.startswith("cannot read the arguments: ")
    assert error.usage == DEPLOY.usage()


@pytest.mark.parametrize(
    "word",
    ["ÿñíçødé.test", "日本語", "🚀", "e\u0301", "\u200bzero-width", "right\u202eleft", "tab\tin"],
)
def test_odd_unicode_passes_through(word: str) -> None:
    values = SAY.parse(f"room {word}")
    assert values["text"] == " ".join(word.split())


def test_empty_text_with_nothing_required() -> None:
    optional = spec("status", args=(Arg("app", required=False),))
    assert optional.parse("") == {"app": None}
    assert optional.parse("   ") == {"app": None}


def test_a_ten_kilobyte_argument() -> None:
    big = "x" * 10_240
    assert DEPLOY.parse(f"{big} --note {big}")["app"] == big
    assert SAY.parse(f"r {big}")["text"] == big


def test_converter_gets_the_raw_text_and_may_return_anything() -> None:
    pair = spec("pair", args=(Arg("n", type=lambda text: (text, len(text))),))
    assert pair.parse("abc") == {"n": ("abc", 3)}


@given(st.text())
def test_parse_returns_a_dict_or_raises_usage_error(text: str) -> None:
    for command in (DEPLOY, RESTORE, SAY):
        try:
            values = command.parse(text)
        except UsageError as error:
            assert error.usage == command.usage()
        else:
            assert set(values) == {a.name for a in command.args} | {o.name for o in command.options}


@given(st.lists(st.sampled_from(["a", "--force", "--timeout", "3", "--", "'x y'", "--note=z"])))
def test_parse_of_option_soup_returns_a_dict_or_raises_usage_error(words: list[str]) -> None:
    try:
        values = DEPLOY.parse(" ".join(words))
    except UsageError:
        return
    assert isinstance(values["force"], bool)
    assert values["timeout"] is None or values["timeout"] >= 1


# -- usage and help text -------------------------------------------------------------


def test_usage_line_is_generated_from_the_spec() -> None:
    assert DEPLOY.usage() == "!deploy <app> [version] [--timeout SECONDS] [--force] [--note VALUE]"
    assert RESTORE.usage("?") == "?restore <app> <volumes|db> [count]"
    assert SAY.usage() == "!say <room> <text...>"
    assert spec("ping").usage() == "!ping"


def test_usage_error_uses_the_given_prefix() -> None:
    with pytest.raises(UsageError) as caught:
        DEPLOY.parse("", prefix="?")
    assert caught.value.usage.startswith("?deploy ")


def test_summary_is_the_first_help_line() -> None:
    assert DEPLOY.summary == "deploy something."
    assert spec("quiet", help="").summary == ""


# -- registry ------------------------------------------------------------------------


def _registry() -> Registry:
    group = CommandGroup("test")
    for name, role, aliases in [
        ("status", Role.VIEWER, ("st",)),
        ("deploy", Role.OPERATOR, ()),
        ("destroy", Role.ADMIN, ()),
        ("backup", Role.OPERATOR, ("bk",)),
    ]:
        group.command(name, help=f"{name}.", role=role, aliases=aliases)(_nothing)
    return Registry([group])


def test_lookup_by_name_alias_and_any_case() -> None:
    registry = _registry()
    assert registry.get("status") is registry.get("st") is registry.get("STATUS")
    assert registry.get("status") is not None
    assert registry.get("nope") is None


@pytest.mark.parametrize("clash", ["deploy", "st"])
def test_duplicate_command_words_are_rejected(clash: str) -> None:
    registry = _registry()
    with pytest.raises(ValueError, match=f"'{clash}' is declared twice"):
        registry.add(spec(clash))
    with pytest.raises(ValueError, match="'bk' is declared twice"):
        registry.add(spec("other", aliases=("bk",)))


def test_duplicate_across_groups_is_rejected() -> None:
    first, second = CommandGroup("a"), CommandGroup("b")
    first.command("x", help="x")(_nothing)
    second.command("y", help="y", aliases=("x",))(_nothing)
    with pytest.raises(ValueError, match="declared twice"):
        Registry([first, second])


@pytest.mark.parametrize(
    ("typo", "expected"),
    [("deplyo", "deploy"), ("staus", "status"), ("bakcup", "backup"), ("DEPOLY", "deploy")],
)
def test_suggest_typos(typo: str, expected: str) -> None:
    assert _registry().suggest(typo)[0] == expected


def test_suggest_nothing_for_nonsense() -> None:
    assert _registry().suggest("xyzzy") == []


@pytest.mark.parametrize(
    ("role", "names"),
    [
        (Role.VIEWER, ["status"]),
        (Role.OPERATOR, ["backup", "deploy", "status"]),
        (Role.ADMIN, ["backup", "deploy", "destroy", "status"]),
    ],
)
def test_visible_to_filters_by_role_and_sorts(role: Role, names: list[str]) -> None:
    assert [s.name for s in _registry().visible_to(role)] == names


def test_role_order_and_labels() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert [r.label for r in Role] == ["viewer", "operator", "admin"]


def test_group_decorator_returns_the_handler_and_records_the_spec() -> None:
    group = CommandGroup("g")
    handler = group.command("hello", help="Say hi.", role=Role.ADMIN, quick=True)(_nothing)
    assert handler is _nothing
    (recorded,) = group.specs
    assert (recorded.name, recorded.role, recorded.quick, recorded.handler) == (
        "hello",
        Role.ADMIN,
        True,
        _nothing,
    )


def test_specs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEPLOY.name = "other"  # type: ignore[misc]


# -- subcommand families -------------------------------------------------------------


def _family() -> tuple[CommandGroup, list[str]]:
    """A `!box <app>|list|move` family whose handlers record what ran."""
    ran: list[str] = []
    group = CommandGroup("g")
    box = group.family(
        "box",
        help="Box an app.",
        args=(Arg("target", "an app, or list, move"),),
        role=Role.OPERATOR,
        lock_arg="target",
        example="box cloud.test",
    )

    @box.default
    async def one(ctx: Any) -> None:
        ran.append(f"one {ctx.args['target']}")

    @box.sub("list", help="List the boxes.", example="box list")
    async def listing(ctx: Any) -> None:
        ran.append("list")

    @box.sub(
        "move",
        help="Move a box.",
        args=(Arg("to", "where"),),
        options=(Option("fast", flag=True),),
        example="box move shelf --fast",
    )
    async def move(ctx: Any) -> None:
        ran.append(f"move {ctx.args['to']} {ctx.args['fast']}")

    return group, ran


class _Ctx:
    def __init__(self, spec: CommandSpec, text: str) -> None:
        self.spec, self.args, self.prefix = spec, spec.parse(text), "!"


def test_a_family_is_one_registered_spec_with_its_subcommands() -> None:
    group, _ = _family()
    (box,) = group.specs
    assert Registry([group]).get("box") is box
    assert [s.name for s in box.subcommands] == ["box list", "box move"]
    assert [s.word for s in box.subcommands] == ["list", "move"]
    assert (box.role, box.lock_arg) == (Role.OPERATOR, "target")


def test_the_first_argument_picks_the_subcommand() -> None:
    group, _ = _family()
    (box,) = group.specs
    assert box.parse("cloud.test") == {"target": "cloud.test"}
    assert box.parse("list") == {"target": "list"}
    # The family's first argument holds the word: the lock and !jobs see it.
    assert box.parse("move shelf --fast") == {"to": "shelf", "fast": True, "target": "move"}
    assert box.chosen(box.parse("list")) is box.subcommand("list")
    assert box.chosen(box.parse("cloud.test")) is box


def test_subcommand_usage_is_generated_and_used_in_its_errors() -> None:
    group, _ = _family()
    (box,) = group.specs
    assert box.usages() == ["!box <target>", "!box list", "!box move <to> [--fast]"]
    with pytest.raises(UsageError) as caught:
        box.parse("move")
    assert str(caught.value) == "missing <to>\nUsage: `!box move <to> [--fast]`"
    with pytest.raises(UsageError) as caught:
        box.parse("list extra", prefix="?")
    assert caught.value.usage == "?box list"
    with pytest.raises(UsageError) as caught:
        box.parse("")
    assert caught.value.usage == "!box <target>"


async def test_the_family_handler_runs_the_chosen_form() -> None:
    group, ran = _family()
    (box,) = group.specs
    for text in ("cloud.test", "list", "move shelf"):
        await box.handler(_Ctx(box, text))  # type: ignore[arg-type]
    assert ran == ["one cloud.test", "list", "move shelf False"]


async def test_a_family_without_its_own_form_asks_for_a_subcommand() -> None:
    group = CommandGroup("g")
    only = group.family("only", help="Only subcommands.", args=(Arg("what"),))
    only.sub("a", help="A.")(_nothing)
    (spec,) = group.specs
    with pytest.raises(UsageError, match="pick one of: a"):
        await spec.handler(_Ctx(spec, "zzz"))  # type: ignore[arg-type]


def test_example_field_defaults_to_empty() -> None:
    assert DEPLOY.example == ""
    assert spec("x", example="x 1").example == "x 1"
