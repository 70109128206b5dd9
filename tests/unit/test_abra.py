"""abra's app files: .env parsing, abra.sh exports, pinning, listing, secrets, names."""

from __future__ import annotations

import os
import stat
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import UserError
from bot.ops.abra import (
    CHARSETS,
    AbraError,
    SecretSpec,
    check_domain,
    check_version,
    generate_secret,
    list_apps,
    parse_env,
    read_exports,
    set_pinned_version,
)
from tests.harness.recipes import make_app_env

REAL_ENV = """\
TYPE=gitea:2.0.1+1.0.6-social-amd64
DOMAIN=git.example.org

## Domain aliases
#EXTRA_DOMAINS=', `www.gitea.example.com`'
LETS_ENCRYPT_ENV=production

COMPOSE_FILE="compose.yml:compose.smtp.yml"
export GITEA_APP_NAME="Our Git Forge"
GITEA_DOMAIN='git.example.org'
GITEA_SSH_PORT=2222 # the host port
GITEA_PASS=pa#ss
EMPTY=
ALSO_EMPTY= # nothing here
TIMEOUT=600

SECRET_DB_PASSWORD_VERSION=v1 # length=32
SECRET_INTERNAL_TOKEN_VERSION=v2  # length=105 charset=special-chars
SECRET_JWT_SECRET_VERSION=v1
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    return write(tmp_path / "servers/srv1/git.example.org.env", REAL_ENV)


# --- parse_env ------------------------------------------------------------------


def test_parse_real_file(env_file: Path) -> None:
    app = parse_env(env_file, "srv1")
    assert app.domain == "git.example.org"
    assert app.server == "srv1"
    assert app.path == env_file
    assert app.stack_name == "git_example_org"
    assert app.recipe == "gitea"
    assert app.pinned_version == "2.0.1+1.0.6-social-amd64"
    assert app.compose_files == ("compose.yml", "compose.smtp.yml")
    assert app.timeout == 600
    assert app.values["GITEA_APP_NAME"] == "Our Git Forge"
    assert app.values["GITEA_DOMAIN"] == "git.example.org"
    assert app.values["GITEA_SSH_PORT"] == "2222"
    assert app.values["GITEA_PASS"] == "pa#ss"
    assert app.values["EMPTY"] == ""
    assert app.values["ALSO_EMPTY"] == ""
    assert "EXTRA_DOMAINS" not in app.values
    assert app.secrets == (
        SecretSpec("db_password", "v1", "SECRET_DB_PASSWORD_VERSION", 32, None),
        SecretSpec("internal_token", "v2", "SECRET_INTERNAL_TOKEN_VERSION", 105, "special-chars"),
        SecretSpec("jwt_secret", "v1", "SECRET_JWT_SECRET_VERSION", None, None),
    )


def test_minimal_file_defaults(tmp_path: Path) -> None:
    app = parse_env(write(tmp_path / "a.example.org.env", "RECIPE=nextcloud\n"), "s")
    assert (app.recipe, app.pinned_version) == ("nextcloud", None)
    assert app.compose_files == ("compose.yml",)
    assert app.timeout is None
    assert app.secrets == ()


def test_recipe_wins_over_type_and_file_name_wins_over_domain(tmp_path: Path) -> None:
    text = "TYPE=old\nRECIPE=new:1.2.3\nDOMAIN=other.example.org\n"
    app = parse_env(write(tmp_path / "a.example.org.env", text), "s")
    assert (app.recipe, app.pinned_version) == ("new", "1.2.3")
    assert app.domain == "a.example.org"
    assert app.values["DOMAIN"] == "other.example.org"


def test_quotes_escapes_and_last_assignment_wins(tmp_path: Path) -> None:
    text = (
        "TYPE=x\n"
        'A="say \\"hi\\" # not a comment" # a comment\n'
        "B='single # kept'\n"
        "  export   C=spaced  \n"
        "D=1\nD=2\n"
    )
    values = parse_env(write(tmp_path / "a.org.env", text), "s").values
    assert values["A"] == 'say "hi" # not a comment'
    assert values["B"] == "single # kept"
    assert values["C"] == "spaced"
    assert values["D"] == "2"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("JUSTTEXT", "expected KEY=value"),
        # godotenv accepts a leading digit (`1BAD=x`), so the old row became `-`
        ("BAD-KEY=x", "not a valid variable name"),
        ("BAD KEY=x", "not a valid variable name"),
        ("=x", "not a valid variable name"),
        ('A="open', "never closed"),
        ('A="x" trailing', "after the closing quote"),
        ("SECRET_X_VERSION=v1 # length=lots", "length=lots"),
        ("SECRET_X_VERSION=v1 # length=0", "length=0"),
        ("TIMEOUT=soon", "TIMEOUT=soon"),
        ("COMPOSE_FILE=compose.yml:../../etc/x.yml", "inside the recipe"),
        ("TYPE=x:1.0;rm", "not a valid version"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path / "a.example.org.env", f"TYPE=x\n# fine\n{line}\n")
    with pytest.raises(AbraError, match=problem) as caught:
        parse_env(path, "s")
    assert f"{path}:3:" in str(caught.value)
    assert isinstance(caught.value, UserError)


def test_values_expand_like_abra_and_errors_never_show_a_value(tmp_path: Path) -> None:
    # abra's godotenv expands $VAR/${VAR} from earlier keys: overlays chain (bonfire).
    text = (
        "TYPE=x\n"
        'COMPOSE_FILE="compose.yml"\n'
        'COMPOSE_FILE="$COMPOSE_FILE:compose.postgres.yml"\n'
        "URL=https://${DOMAIN}/\n"
        "LITERAL='$DOMAIN'\n"
        "1ST=ok\n"
    )
    path = write(tmp_path / "a.org.env", text)
    app = parse_env(path, "s", environ={"DOMAIN": "a.org"})
    assert app.compose_files == ("compose.yml", "compose.postgres.yml")
    assert app.values["URL"] == "https://a.org/"
    assert app.values["LITERAL"] == "$DOMAIN"
    assert app.values["1ST"] == "ok"
    # Without an environment given, nothing from the bot's own process leaks in.
    assert parse_env(path, "s").values["URL"] == "https:///"

    write(path, "TYPE=x\nDB_PASSWORD='hunter2\n")
    with pytest.raises(AbraError) as caught:
        parse_env(path, "s")
    assert str(caught.value).startswith(f"{path}:2: DB_PASSWORD: ")
    assert "hunter2" not in str(caught.value)


def test_missing_recipe_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(AbraError, match="no TYPE= or RECIPE="):
        parse_env(write(tmp_path / "a.org.env", "DOMAIN=a.org\n"), "s")
    with pytest.raises(AbraError, match=r"RECIPE: .* not a valid recipe name"):
        parse_env(write(tmp_path / "b.org.env", "RECIPE=../evil\n"), "s")
    with pytest.raises(AbraError, match=r"must be <domain>\.env"):
        parse_env(write(tmp_path / "Bad Name.env", "TYPE=x\n"), "s")
    with pytest.raises(AbraError, match="cannot read"):
        parse_env(tmp_path / "missing.org.env", "s")
    (tmp_path / "bin.org.env").write_bytes(b"TYPE=\xff\n")
    with pytest.raises(AbraError, match="not UTF-8"):
        parse_env(tmp_path / "bin.org.env", "s")


# --- read_exports --------------------------------------------------------------


def test_read_exports_never_runs_shell(tmp_path: Path) -> None:
    abra_sh = write(
        tmp_path / "abra.sh",
        "#!/usr/bin/env bash\n"
        "export NGINX_CONF_VERSION=v2\n"
        'export ENTRYPOINT_VERSION="v3" # bump on change\n'
        "export LITERAL='$NOT_EXPANDED'\n"
        "export NOW=$(date)\n"
        "export THEN=`date`\n"
        'export HOME_DIR="$HOME/x"\n'
        "export REF=${STACK_NAME}_x\n"
        'export BROKEN="open\n'
        "NOT_EXPORTED=1\n"
        "# export COMMENTED=1\n"
        "fn() {\n  export INSIDE_FUNCTION=1\n}\n",
    )
    assert read_exports(abra_sh) == {
        "NGINX_CONF_VERSION": "v2",
        "ENTRYPOINT_VERSION": "v3",
        "LITERAL": "$NOT_EXPANDED",
    }


# --- set_pinned_version --------------------------------------------------------


def test_pin_rewrites_only_the_type_line(env_file: Path) -> None:
    os.chmod(env_file, 0o600)
    set_pinned_version(env_file, "gitea", "3.0.0+1.21")
    new = env_file.read_text().splitlines()
    old = REAL_ENV.splitlines()
    assert new[0] == "TYPE=gitea:3.0.0+1.21"
    assert new[1:] == old[1:]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert parse_env(env_file, "srv1").pinned_version == "3.0.0+1.21"
    assert sorted(p.name for p in env_file.parent.iterdir()) == ["git.example.org.env"]


def test_pin_keeps_recipe_key_export_comment_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "a.org.env"
    path.write_bytes(b"# top\r\nexport RECIPE=x:1.0.0 # pinned by alice\r\nA=1\r\n")
    set_pinned_version(path, "x", "1.1.0")
    assert path.read_bytes() == b"# top\r\nexport RECIPE=x:1.1.0  # pinned by alice\r\nA=1\r\n"


def test_pin_adds_type_when_missing_and_refuses_bad_names(tmp_path: Path) -> None:
    path = write(tmp_path / "a.org.env", "#TYPE=old\nA=1\n")
    set_pinned_version(path, "x", "1.0.0")
    assert path.read_text() == "TYPE=x:1.0.0\n#TYPE=old\nA=1\n"
    with pytest.raises(ValueError, match="not a valid version"):
        set_pinned_version(path, "x", "1.0;rm -rf /")
    with pytest.raises(ValueError, match="not a valid recipe"):
        set_pinned_version(path, "../x", "1.0.0")
    assert path.read_text() == "TYPE=x:1.0.0\n#TYPE=old\nA=1\n"


_env_values = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters="\r\n\"'\\#\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    ),
    max_size=20,
).map(str.strip)
_env_lines = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}", st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), _env_values
    ),
    st.builds(lambda c: f"# {c}", _env_values),
    st.just(""),
)
_versions = st.from_regex(
    r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(\+[a-z0-9.-]{1,10})?", fullmatch=True
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_env_lines, max_size=8), version=_versions)
def test_pin_round_trips_and_preserves_other_lines(
    tmp_path: Path, lines: list[str], version: str
) -> None:
    lines = [line for line in lines if not line.startswith(("TYPE=", "RECIPE="))]
    path = tmp_path / "r.example.org.env"
    original = ["TYPE=app:0.0.1", *lines]
    path.write_text("\n".join(original) + "\n")
    before = parse_env(path, "s")
    set_pinned_version(path, "app", version)
    after = parse_env(path, "s")
    assert path.read_text().splitlines()[1:] == original[1:]
    assert (after.recipe, after.pinned_version) == ("app", version)
    assert {**after.values, "TYPE": ""} == {**before.values, "TYPE": ""}


# --- list_apps -----------------------------------------------------------------


def test_list_apps_reports_problems_without_hiding_apps(tmp_path: Path) -> None:
    make_app_env(tmp_path, "srv2", "b.example.org", "wordpress", "1.0.0+6.0")
    make_app_env(
        tmp_path, "srv1", "a.example.org", "gitea", extra={"X": "a b"}, secrets={"db": "64"}
    )
    write(tmp_path / "servers/srv1/broken.example.org.env", "TYPE=x\nNO EQUALS SIGN\n")
    write(tmp_path / "servers/srv1/notes.txt", "not an app")
    write(tmp_path / "servers/srv3/c.example.org.env", "TYPE=x\n")  # server not asked for
    apps, problems = list_apps(tmp_path, ["srv1", "srv2", "gone"])
    assert [(a.domain, a.server) for a in apps] == [
        ("a.example.org", "srv1"),
        ("b.example.org", "srv2"),
    ]
    assert apps[0].values["X"] == "a b"
    assert apps[0].secrets[0].length == 64
    assert apps[1].pinned_version == "1.0.0+6.0"
    assert len(problems) == 2
    assert "broken.example.org.env:2:" in problems[0]
    assert "gone" in problems[1]


def test_list_apps_flags_a_domain_on_two_servers(tmp_path: Path) -> None:
    make_app_env(tmp_path, "one", "a.example.org", "x")
    make_app_env(tmp_path, "two", "a.example.org", "x")
    apps, problems = list_apps(tmp_path, ["one", "two", "../etc"])
    assert [a.server for a in apps] == ["one", "two"]
    assert problems[0] == "server '../etc': not a plain folder name"
    assert "on two servers: one and two" in problems[1]


# --- generate_secret -----------------------------------------------------------


def test_generate_secret_defaults_and_hints() -> None:
    plain = generate_secret(SecretSpec("x", "v1", "SECRET_X_VERSION", None, None))
    assert len(plain) == 32
    assert set(plain) <= set(string.ascii_letters + string.digits)
    special = generate_secret(SecretSpec("x", "v1", "SECRET_X_VERSION", 500, "special-chars"))
    assert len(special) == 500
    assert not set(special) & set("\"'\\ `")
    assert set(special) - set(CHARSETS["default"])  # 500 draws: surely some punctuation


def test_generate_secret_hex_and_alnum_as_llamenos_names_them() -> None:
    # llamenos' .env.sample: `# length=64 charset=hex` and `# length=32 charset=alnum`
    hex_key = generate_secret(SecretSpec("x", "v1", "SECRET_X_VERSION", 64, "hex"))
    assert len(hex_key) == 64
    assert set(hex_key) <= set("0123456789abcdef")
    alnum = generate_secret(SecretSpec("x", "v1", "SECRET_X_VERSION", 300, "alnum"))
    assert len(alnum) == 300
    assert set(alnum) <= set(string.ascii_letters + string.digits)


def test_generate_secret_refuses_unknown_charset() -> None:
    with pytest.raises(AbraError, match="unknown charset=emoji"):
        generate_secret(SecretSpec("x", "v1", "SECRET_X_VERSION", 10, "emoji"))


# --- names ---------------------------------------------------------------------


@pytest.mark.parametrize("good", ["a.example.org", "x", "my-app.co-op.cloud", "1.2.3.4"])
def test_check_domain_accepts(good: str) -> None:
    assert check_domain(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../x",
        "a;rm -rf",
        "$(x)",
        ".a.org",
        "-a.org",
        "a..org",
        "a.org.",
        "A.org",
        "a/b",
        "a" * 254,
        "a b",
        "a.org\n",
    ],
)
def test_check_domain_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="domain"):
        check_domain(bad)


@pytest.mark.parametrize("good", ["2.0.1+1.0.6-social-amd64", "v1.0.0", "RC_1", "1.0.0-BETA"])
def test_check_version_accepts(good: str) -> None:
    assert check_version(good) == good


@pytest.mark.parametrize(
    "bad", ["", "../x", "a;rm -rf", "$(x)", "-x", ".x", "a/b", "1" * 254, "`x`", "a b"]
)
def test_check_version_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="version"):
        check_version(bad)


DANGEROUS = set("/\\ ;&|$`()<>'\"*?![]{}~#\n\t")


@given(st.text(max_size=40))
def test_names_never_accept_slashes_or_shell_characters(text: str) -> None:
    for check in (check_domain, check_version):
        try:
            accepted = check(text)
        except ValueError:
            continue
        assert not set(accepted) & DANGEROUS
        assert not accepted.startswith(("-", "."))


@given(st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}(\.[a-z0-9][a-z0-9-]{0,10}){0,3}", fullmatch=True))
def test_plain_domains_are_accepted(domain: str) -> None:
    assert check_domain(domain) == domain
