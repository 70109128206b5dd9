"""bot.ops.dotenv reads `.env` files the way abra does (the Go library godotenv).

Every row cites the godotenv behaviour it copies: a case of godotenv_test.go
(TestParsing, TestExpanding, TestWhitespace, ...) or one of its fixtures/*.env
(github.com/joho/godotenv), or says where we decide because godotenv crashes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import UserError
from bot.ops.dotenv import DotenvError, Entry, as_dict, parse, read_file
from tests.harness.corpus import RECIPES, clone_recipe

# (text, expected key -> value, environ)
VALUES: list[tuple[str, dict[str, str], dict[str, str]]] = [
    # TestParsing: unquoted values; spaces around `=`
    ("FOO=bar", {"FOO": "bar"}, {}),
    ("FOO =bar", {"FOO": "bar"}, {}),
    ("FOO= bar", {"FOO": "bar"}, {}),
    # TestParsing: double- and single-quoted values; escaped double quote
    ('FOO="bar"', {"FOO": "bar"}, {}),
    ("FOO='bar'", {"FOO": "bar"}, {}),
    ('FOO="escaped\\"bar"', {"FOO": 'escaped"bar'}, {}),
    ("FOO=\"'d'\"", {"FOO": "'d'"}, {}),
    # TestParsing: yaml style, yaml values with `=`, non-yaml values with `:`
    ("OPTION_A: 1", {"OPTION_A": "1"}, {}),
    ("OPTION_A: Foo=bar", {"OPTION_A": "Foo=bar"}, {}),
    ("OPTION_A=1:B", {"OPTION_A": "1:B"}, {}),
    # TestParsing: the export keyword, and names that merely start with "export"
    ("export OPTION_A=2", {"OPTION_A": "2"}, {}),
    ("export OPTION_B='\\n'", {"OPTION_B": "\\n"}, {}),
    ("export exportFoo=2", {"exportFoo": "2"}, {}),
    ("exportFOO=2", {"exportFOO": "2"}, {}),
    ("export_FOO =2", {"export_FOO": "2"}, {}),
    ("export.FOO= 2", {"export.FOO": "2"}, {}),
    ("export\tOPTION_A=2", {"OPTION_A": "2"}, {}),
    ("  export OPTION_A=2", {"OPTION_A": "2"}, {}),
    ("\texport OPTION_A=2", {"OPTION_A": "2"}, {}),
    # TestParsing: "expands newlines in quoted strings"; `.` in names; several `=`
    ('FOO="bar\\nbaz"', {"FOO": "bar\nbaz"}, {}),
    ("FOO.BAR=foobar", {"FOO.BAR": "foobar"}, {}),
    ("FOO=foobar=", {"FOO": "foobar="}, {}),
    # TestParsing: "strips unquoted values"; internal whitespace is kept
    ("FOO=bar ", {"FOO": "bar"}, {}),
    ("KEY=value value", {"KEY": "value value"}, {}),
    # TestParsing: "ignores inline comments"; "allows # in quoted value"
    ("FOO=bar # this is foo", {"FOO": "bar"}, {}),
    ('FOO="bar#baz" # comment', {"FOO": "bar#baz"}, {}),
    ("FOO='bar#baz' # comment", {"FOO": "bar#baz"}, {}),
    ('FOO="bar#baz#bang" # comment', {"FOO": "bar#baz#bang"}, {}),
    ('FOO="ba#r"', {"FOO": "ba#r"}, {}),
    ("FOO='ba#r'", {"FOO": "ba#r"}, {}),
    # TestParsing: "newlines and backslashes should be escaped"
    ('FOO="bar\\n\\ b\\az"', {"FOO": "bar\n baz"}, {}),
    ('FOO="bar\\\\\\n\\ b\\az"', {"FOO": "bar\\\n baz"}, {}),
    ('FOO="bar\\\\r\\ b\\az"', {"FOO": "bar\\r baz"}, {}),
    # TestParsing: "YAML delimiter should be skipped"
    ("---\nKEY:value", {"KEY": "value"}, {}),
    # TestParsing: "unquoted whitespace around keys should be ignored"
    (" KEY =value", {"KEY": "value"}, {}),
    ("   KEY=value", {"KEY": "value"}, {}),
    ("\tKEY=value", {"KEY": "value"}, {}),
    # TestParse: a reader of "ONE=1\nTWO='2'\nTHREE = \"3\""
    ("ONE=1\nTWO='2'\nTHREE = \"3\"", {"ONE": "1", "TWO": "2", "THREE": "3"}, {}),
    # TestTrailingNewlines
    ("KEY=value value\n", {"KEY": "value value"}, {}),
    ("KEY: value value", {"KEY": "value value"}, {}),
    ("KEY: value value\n", {"KEY": "value value"}, {}),
    # TestWhitespace
    (" A=a\n", {"A": "a"}, {}),
    ("\tA=a\n", {"A": "a"}, {}),
    (" \t \t\n\t \t A=a\n", {"A": "a"}, {}),
    (" \t\t export    A=a\n", {"A": "a"}, {}),
    ("A=a \t \t\n", {"A": "a"}, {}),
    ("export A=a\t \t \n", {"A": "a"}, {}),
    ("A=a", {"A": "a"}, {}),
    ("A=a ", {"A": "a"}, {}),
    # TestLinesToIgnore: blank lines, CRLF blank lines, whitespace, (indented) comments
    ("\n\r\n\t\t \n# Comment\n\t # comment\nA=1", {"A": "1"}, {}),
    # fixtures/plain.env (TestReadPlainEnv): blank values, spaces around `=`
    (
        "OPTION_A=1\nOPTION_B=2\nOPTION_C= 3\nOPTION_D =4\nOPTION_E = 5\n"
        "OPTION_F = \nOPTION_G=\nOPTION_H=1 2\n",
        {
            "OPTION_A": "1",
            "OPTION_B": "2",
            "OPTION_C": "3",
            "OPTION_D": "4",
            "OPTION_E": "5",
            "OPTION_F": "",
            "OPTION_G": "",
            "OPTION_H": "1 2",
        },
        {},
    ),
    # fixtures/quoted.env (TestLoadQuotedEnv): empty quotes, literal single quotes,
    # multi-line single- and double-quoted values, escaped quotes inside them
    (
        "OPTION_A='1'\nOPTION_B='2'\nOPTION_C=''\nOPTION_D='\\n'\nOPTION_E=\"1\"\n"
        'OPTION_F="2"\nOPTION_G=""\n#OPTION_H="\\n"\nOPTION_I = "echo \'asd\'"\n'
        "OPTION_J='line 1\nline 2'\nOPTION_K='line one\nthis is \\'quoted\\'\none more line'\n"
        'OPTION_L="line 1\nline 2"\nOPTION_M="line one\nthis is \\"quoted\\"\none more line"\n',
        {
            "OPTION_A": "1",
            "OPTION_B": "2",
            "OPTION_C": "",
            "OPTION_D": "\\n",
            "OPTION_E": "1",
            "OPTION_F": "2",
            "OPTION_G": "",
            "OPTION_I": "echo 'asd'",
            "OPTION_J": "line 1\nline 2",
            "OPTION_K": "line one\nthis is \\'quoted\\'\none more line",
            "OPTION_L": "line 1\nline 2",
            "OPTION_M": 'line one\nthis is "quoted"\none more line',
        },
        {},
    ),
    # TestVariableStringValueSeparator: a newline inside double quotes
    (
        'TEST_URLS="stratum+tcp://a:3333\nstratum+tcp://a:443"',
        {"TEST_URLS": "stratum+tcp://a:3333\nstratum+tcp://a:443"},
        {},
    ),
    # fixtures/exported.env (TestLoadExportedEnv)
    ("export OPTION_A=2\nexport OPTION_B='\\n'", {"OPTION_A": "2", "OPTION_B": "\\n"}, {}),
    # TestLoadEqualsEnv: `=` and `?` inside a value (its expected value)
    (
        "export OPTION_A='postgres://localhost:5432/database?sslmode=disable'",
        {"OPTION_A": "postgres://localhost:5432/database?sslmode=disable"},
        {},
    ),
    # fixtures/comments.env (TestComments): the FIRST blank-preceded `#` starts the
    # comment (godotenv's current parser.go scans forward), `#` inside a word is kept
    (
        "# Full line comment\nqux=thud # fred # other\nthud=fred#qux # other\n"
        'fred=qux#baz # other # more\nfoo=bar # baz\nbar=foo#baz\nbaz="foo"#bar\n',
        {
            "qux": "thud",
            "thud": "fred#qux",
            "fred": "qux#baz",
            "foo": "bar",
            "bar": "foo#baz",
            "baz": "foo",
        },
        {},
    ),
    # fixtures/substitutions.env (TestSubstitutions): earlier keys, then the
    # environment (GLOBAL_OPTION is preset there), else ""
    (
        "OPTION_A=1\nOPTION_B=${OPTION_A}\nOPTION_C=$OPTION_B\nOPTION_D=${OPTION_A}${OPTION_B}\n"
        "OPTION_E=${OPTION_NOT_DEFINED}\nOPTION_F=${GLOBAL_OPTION}\n",
        {
            "OPTION_A": "1",
            "OPTION_B": "1",
            "OPTION_C": "1",
            "OPTION_D": "11",
            "OPTION_E": "",
            "OPTION_F": "global",
        },
        {"GLOBAL_OPTION": "global"},
    ),
    # TestExpanding
    ("FOO=test\nBAR=$FOO", {"FOO": "test", "BAR": "test"}, {}),
    ("FOO=test\nBAR=${FOO}bar", {"FOO": "test", "BAR": "testbar"}, {}),
    ("BAR=$FOO", {"BAR": ""}, {}),
    ('FOO=test\nBAR="quote $FOO"', {"FOO": "test", "BAR": "quote test"}, {}),
    ("BAR='quote $FOO'", {"BAR": "quote $FOO"}, {}),
    ('FOO="foo\\$BAR"', {"FOO": "foo$BAR"}, {}),
    ('FOO="foo\\${BAR}"', {"FOO": "foo${BAR}"}, {}),
    ('FOO=test\nBAR="foo\\${FOO} ${FOO}"', {"FOO": "test", "BAR": "foo${FOO} test"}, {}),
    # godotenv's expandVariables: keys of the file win over the environment
    ("A=file\nB=$A", {"A": "file", "B": "file"}, {"A": "env"}),
    # ... and it expands upper-case names only (expandVarRegex is [A-Z0-9_]+)
    ("lower=x\nB=$lower ${lower}", {"lower": "x", "B": "$lower ${lower}"}, {}),
    # ... `$(` is meant to be left alone, but godotenv tests the wrong group, so
    # `$(date)` stays (lower case) while `$(HOME)` expands like `${HOME` would
    ("A=$(date)\nB=$(HOME)", {"A": "$(date)", "B": "/root)"}, {"HOME": "/root"}),
    # godotenv's parseBytes: out[key] = value, so the last assignment wins and an
    # earlier one is what `$KEY` means: abra recipes chain overlays this way
    ("D=1\nD=2", {"D": "2"}, {}),
    (
        'COMPOSE_FILE="compose.yml"\nCOMPOSE_FILE="$COMPOSE_FILE:compose.postgres.yml"',
        {"COMPOSE_FILE": "compose.yml:compose.postgres.yml"},
        {},
    ),
    # parseBytes replaces "\r\n" with "\n" first: CRLF files, also inside quotes
    ("A=1\r\nB='x\r\ny'\r\nC=3 # c\r\n", {"A": "1", "B": "x\ny", "C": "3"}, {}),
    # extractVarValue: a lone "\r" ends an unquoted value (isLineEnd)
    ("A=1\rB=2", {"A": "1", "B": "2"}, {}),
    # extractVarValue: quoted values are not expanded in single quotes, escapes
    # other than \n and \r keep the escaped character (expandEscapes)
    ('A="tab\\tx \\\\ \\"q\\" end"', {"A": 'tabtx \\ "q" end'}, {}),
    # extractVarValue trims every quote character off both ends of the quoted
    # text (TrimRightFunc), so an escaped quote just before the closing one goes
    # and leaves its backslash: godotenv reads `"say \"hi\""` as `say "hi\`
    ('A="say \\"hi\\""', {"A": 'say "hi\\'}, {}),
    # after a closing quote the next statement may follow on the same line
    # (getStatementStart is called on the rest of the buffer)
    ('A="x" B=y', {"A": "x", "B": "y"}, {}),
    # godotenv leaves unquoted backslashes alone, except before `$`
    ("A=C:\\dir \\$HOME", {"A": "C:\\dir $HOME"}, {"HOME": "/root"}),
    # names may start with a digit (unicode.IsNumber in locateKeyName)
    ("1BAD=x", {"1BAD": "x"}, {}),
    # our decision: godotenv panics on a value that starts with `#` (its comment
    # scan reads line[i-1] at i == 0); we read an empty value with a comment, as
    # Ruby's and Node's dotenv do and godotenv's proposed fix (PR #272) does
    ("EMPTY= # nothing here\nB=#x", {"EMPTY": "", "B": ""}, {}),
]


@pytest.mark.parametrize(("text", "expected", "environ"), VALUES)
def test_values_match_godotenv(
    text: str, expected: dict[str, str], environ: dict[str, str]
) -> None:
    assert as_dict(parse(text, environ=environ)) == expected


def test_the_environment_is_only_what_the_caller_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    # godotenv reads os.Getenv; we read only `environ`, so who runs the bot never matters.
    monkeypatch.setenv("FROM_PROCESS", "leak")
    assert as_dict(parse("A=$FROM_PROCESS")) == {"A": ""}
    assert as_dict(parse("A=$FROM_PROCESS", environ={"FROM_PROCESS": "given"})) == {"A": "given"}


# (text, problem in the message, line, key or None)
ERRORS: list[tuple[str, str, int, str | None]] = [
    # TestParsing: "throws an error if line format is incorrect" (lol$wut)
    ("lol$wut", "not a valid variable name", 1, None),
    # fixtures/invalid1.env (TestErrorParsing): a line with no `=`
    ("A=1\nINVALID LINE\nfoo=bar\n", "expected KEY=value", 2, None),
    # extractVarValue: "unterminated quoted value" (fixtures/invalid3.env shape)
    (
        "A=1\n\nINVALID_MULTILINE='bar\nASDFASDF\n",
        "' quote is never closed",
        3,
        "INVALID_MULTILINE",
    ),
    ('X="open', '" quote is never closed', 1, "X"),
    # locateKeyName reads the rest after a closing quote as the next name and fails
    ('A="x" trailing\n', "unexpected text after the closing quote", 1, "A"),
    ("B=1\nA='x' pa$$word\n", "unexpected text after the closing quote", 2, "A"),
    # locateKeyName: `-` is not allowed in names (fixtures/exported.env OPTION-C)
    ("export OPTION-C=123#12", "not a valid variable name: column 14", 1, None),
    # our decision: godotenv keeps `=x` under the name "" (TestParsing `="value"`)
    # and "MY KEY" with its space; no environment can hold the first, the second
    # is a typo far more often than a name
    ("=x", "the name before `=` is empty", 1, None),
    ("MY KEY=x", "it has a space in it", 1, "MY KEY"),
    # godotenv reads a last line without `=` as the value of the name ""; we refuse
    ("A=1\nJUSTTEXT", "expected KEY=value", 2, None),
    # godotenv takes a byte-order mark for part of the first name and fails
    ("\ufeffA=1", "byte-order mark", 1, None),
]


@pytest.mark.parametrize(("text", "problem", "line", "key"), ERRORS)
def test_errors_name_file_line_and_key(text: str, problem: str, line: int, key: str | None) -> None:
    with pytest.raises(DotenvError) as caught:
        parse(text, source="app.env")
    message = str(caught.value)
    assert problem in message
    where = f"app.env:{line}: "
    assert message.startswith(f"{where}{key}: " if key else where)
    assert isinstance(caught.value, UserError)


@pytest.mark.parametrize(
    "text",
    [
        "hunter2-pasted-alone\n",
        "pass word hunter2\n",
        "A='hunter2\n",
        'A="x" hunter2\n',
        "hun$ter2=x\n",
        "SECRET: 'hunter2",
    ],
)
def test_errors_never_contain_the_line(text: str) -> None:
    with pytest.raises(DotenvError) as caught:
        parse(text, source="app.env")
    assert "hunter2" not in str(caught.value)
    assert "hun" not in str(caught.value).replace("app.env", "")


def test_entries_keep_order_lines_quotes_and_duplicates() -> None:
    text = "# head\nA=1\n\nB='two\nlines'\nexport C=\"3\" # note\nA=4\n"
    entries = parse(text)
    assert [(e.key, e.value, e.line, e.quote) for e in entries] == [
        ("A", "1", 2, ""),
        ("B", "two\nlines", 4, "'"),
        ("C", "3", 6, '"'),
        ("A", "4", 7, ""),
    ]
    assert entries[2].comment == "note"
    assert as_dict(entries) == {"A": "4", "B": "two\nlines", "C": "3"}


def test_raw_is_the_text_before_escapes_and_expansion() -> None:
    (entry,) = parse('A="$X\\n"', environ={"X": "y"})
    assert (entry.value, entry.raw) == ("y\n", "$X\\n")


# abra's fork of godotenv returns the `name=value` words of a value's comment.
MODIFIERS: list[tuple[str, dict[str, str]]] = [
    ("SECRET_X_VERSION=v1 # length=64", {"length": "64"}),
    # llamenos' .env.sample: several words, several blanks before the `#`
    ("SECRET_X_VERSION=v1       # length=64 charset=hex", {"length": "64", "charset": "hex"}),
    (
        "SECRET_X_VERSION=v1  # length=105 charset=special-chars",
        {"length": "105", "charset": "special-chars"},
    ),
    # words that are not name=value are prose, not modifiers
    ("GITEA_SSH_PORT=2222 # the host port", {}),
    ("A=1 # set length=3 please", {"length": "3"}),
    ("A=1", {}),
    # a `#` inside the value is not a comment, so no modifiers
    ("A=pa#length=3", {}),
    # after a quoted value too (coopbot read these before; abra's fork may not)
    ('A="v1" # length=8', {"length": "8"}),
    ("EMPTY= # length=8", {"length": "8"}),
]


@pytest.mark.parametrize(("text", "expected"), MODIFIERS)
def test_modifiers_from_the_comment(text: str, expected: dict[str, str]) -> None:
    (entry,) = parse(text)
    assert dict(entry.modifiers) == expected


def test_entries_are_frozen_and_hide_values_from_repr() -> None:
    (entry,) = parse("PASSWORD=hunter2 # length=7")
    assert "hunter2" not in repr(entry)
    with pytest.raises(TypeError):
        entry.modifiers["length"] = "8"  # type: ignore[index]
    assert hash(entry) == hash(
        Entry("PASSWORD", "hunter2", 1, {"length": "7"}, "", "hunter2", "length=7")
    )
    assert entry == Entry("PASSWORD", "hunter2", 1, {"length": "7"}, "", "hunter2", "length=7")


def test_read_file(tmp_path: Path) -> None:
    path = tmp_path / "a.env"
    path.write_bytes(b"A=1\r\nB=$A\r\n")
    assert as_dict(read_file(path)) == {"A": "1", "B": "1"}
    with pytest.raises(DotenvError, match="cannot read"):
        read_file(tmp_path / "missing.env")
    path.write_bytes(b"A=\xff\n")
    with pytest.raises(DotenvError, match="not UTF-8"):
        read_file(path)
    path.write_text("A='open\n")
    with pytest.raises(DotenvError, match=f"^{path}:1: A: "):
        read_file(path)


# --- the corpus: every real recipe's .env.sample parses -------------------------


@pytest.mark.parametrize("recipe", RECIPES)
def test_corpus_env_samples_parse(recipe: str, tmp_path: Path) -> None:
    clone = clone_recipe(recipe, tmp_path)
    samples = sorted(clone.glob(".env*"))
    assert samples, f"{recipe} has no .env sample"
    for sample in samples:
        values = as_dict(read_file(sample))
        # .env.sample is abra's; others (foodsharing-cms' .env.example) are the app's own
        if sample.name == ".env.sample":
            assert values.get("TYPE") or values.get("RECIPE"), sample


def test_corpus_bonfire_chains_compose_files(tmp_path: Path) -> None:
    entries = read_file(clone_recipe("bonfire", tmp_path) / ".env.sample")
    values = as_dict(entries)
    assert values["COMPOSE_FILE"] == "compose.yml:compose.postgres.yml"
    by_key = {e.key: e for e in entries}
    assert dict(by_key["SECRET_SECRET_KEY_BASE_VERSION"].modifiers) == {"length": "128"}
    assert values["SECRET_SECRET_KEY_BASE_VERSION"] == "v1"


def test_corpus_llamenos_modifiers(tmp_path: Path) -> None:
    entries = read_file(clone_recipe("llamenos", tmp_path) / ".env.sample")
    by_key = {e.key: e for e in entries}
    hmac = by_key["SECRET_HMAC_SECRET_VERSION"]
    assert (hmac.value, dict(hmac.modifiers)) == ("v1", {"length": "64", "charset": "hex"})
