"""!cmd's pure parts (bot/features/apps/cmd.py): which functions an abra.sh defines, how
`[service] function [args…]` is read, and the one `sh -c` line: run here by a real sh
against a real abra.sh, so quoting is proven, not assumed."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

from bot.core.context import Arg, CommandSpec
from bot.errors import UserError
from bot.features.apps.cmd import abra_functions, command_line, split_call

SCRIPT = """export APP_ENTRY_VERSION=v2  # not a function
# old() { commented out }
greet() {
  echo "hi"
}
function bash_style {
  :
}
function both_forms() { :; }
spaced () { :; }
  indented(){ :; }
greet() { echo "redefined: listed once"; }
"""


def test_abra_functions_finds_each_definition_form_once() -> None:
    assert abra_functions(SCRIPT) == ["greet", "bash_style", "both_forms", "spaced", "indented"]
    assert abra_functions("export A=1\n") == []


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["greet"], ("app", "greet", [])),
        (["greet", "a", "b"], ("app", "greet", ["a", "b"])),
        (["worker", "greet", "a"], ("worker", "greet", ["a"])),
        (["worker"], ("app", "worker", [])),  # a lone token is the function
        (["nosuch", "greet"], ("app", "nosuch", ["greet"])),
    ],
)
def test_split_call(tokens: list[str], expected: tuple[str, str, list[str]]) -> None:
    assert split_call(tokens, ["app", "worker"]) == expected


def test_split_call_needs_a_function() -> None:
    with pytest.raises(UserError, match="Name a function"):
        split_call([], ["app"])


def test_command_line_refuses_what_is_not_a_function_name() -> None:
    with pytest.raises(UserError, match="not a function name"):
        command_line("rm -rf /", [], service="app", domain="x", stack="x")


def test_arguments_stay_arguments_in_a_real_sh(tmp_path: pathlib.Path) -> None:
    """The line abra's way (TARGET, APP_NAME, STACK_NAME, `. abra.sh`, the call), run by
    /bin/sh with the script where the container would have it."""
    (tmp_path / "abra.sh").write_text(
        'show() { echo "T=$TARGET S=$STACK_NAME A=$APP_NAME n=$#"; for a in "$@"; do '
        'echo "[$a]"; done; }\n'
    )
    evil = ["x; touch pwned", "$(touch pwned2)", "`touch pwned3`", "a b", "'", ""]
    argv = command_line("show", evil, service="app; touch p4", domain="d.coop", stack="d_coop")
    assert argv[:2] == ["/bin/sh", "-c"]
    script = argv[2].replace(". /tmp/abra.sh", f". {tmp_path}/abra.sh")
    out = subprocess.run(
        ["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == [
        "T=app; touch p4 S=d_coop A=d.coop n=6",
        "[x; touch pwned]",
        "[$(touch pwned2)]",
        "[`touch pwned3`]",
        "[a b]",
        "[']",
        "[]",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abra.sh"]


async def _noop(ctx: object) -> None:
    return None


def test_a_many_argument_keeps_each_token() -> None:
    spec = CommandSpec(
        "cmd",
        _noop,
        "h",
        args=(Arg("app"), Arg("call", many=True)),
    )
    assert spec.parse("x.coop greet 'a b' -- --not-an-option") == {
        "app": "x.coop",
        "call": ["greet", "a b", "--not-an-option"],
    }
    assert "<call...>" in spec.usage()
