"""bot.ops.compose without any CLI: the recipe folder as a boundary, and the CLI's
rules that the golden test (tests/integration/test_compose_golden.py) found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.ops.compose import ComposeError, load_compose
from bot.ops.compose.normalise import read_env_file
from bot.ops.compose.yamlgo import go_str, load_yaml

HEAD = 'version: "3.8"\nservices:\n  app:\n    image: x\n'


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    folder = tmp_path / "recipe"
    folder.mkdir()
    # The bot's own secrets, beside the recipe: what a hostile recipe would read.
    write(tmp_path, "bot.env", "MATRIX_PASSWORD=hunter2\n")
    return folder


def refused(recipe: Path, text: str, *files: str) -> str:
    write(recipe, "compose.yml", text)
    with pytest.raises(ComposeError) as e:
        load_compose([recipe / f for f in (files or ("compose.yml",))], {}, allow_missing=True)
    message = str(e.value)
    assert "hunter2" not in message
    return message


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        (HEAD + "    env_file: ../bot.env\n", "services.app.env_file", "../bot.env"),
        (HEAD + "    env_file: [ok.env, ../bot.env]\n", "services.app.env_file", "../bot.env"),
        (HEAD + "    env_file: /etc/passwd\n", "services.app.env_file", "/etc/passwd"),
        (
            HEAD + "    secrets: [s]\nsecrets:\n  s:\n    file: ../bot.env\n",
            "secrets.s.file",
            "../bot.env",
        ),
        (
            HEAD + "    configs: [c]\nconfigs:\n  c:\n    file: /etc/hostname\n",
            "configs.c.file",
            "/etc/hostname",
        ),
        (
            HEAD + "    configs: [c]\nconfigs:\n  c:\n    file: sub/../../bot.env\n",
            "configs.c.file",
            "sub/../../bot.env",
        ),
    ],
)
def test_files_outside_the_recipe_are_refused(
    recipe: Path, text: str, key: str, shown: str
) -> None:
    write(recipe, "ok.env", "A=1\n")
    message = refused(recipe, text)
    assert f"compose.yml: {key}: {shown} is outside the recipe folder {recipe}" in message


def test_symlinks_escaping_the_recipe_are_refused(recipe: Path) -> None:
    os.symlink(recipe.parent / "bot.env", recipe / "app.env")
    os.symlink(recipe.parent, recipe / "up")
    text = (
        HEAD + "    env_file: app.env\n    secrets: [s]\nsecrets:\n  s:\n    file: ./up/bot.env\n"
    )
    message = refused(recipe, text)
    assert "services.app.env_file: app.env is outside the recipe folder" in message
    assert "secrets.s.file: ./up/bot.env is outside the recipe folder" in message


def test_a_compose_file_linked_from_outside_is_refused(recipe: Path) -> None:
    write(recipe.parent, "elsewhere.yml", HEAD)
    os.symlink(recipe.parent / "elsewhere.yml", recipe / "compose.x.yml")
    message = refused(recipe, HEAD, "compose.yml", "compose.x.yml")
    assert "compose.x.yml: COMPOSE_FILE:" in message
    assert "outside the recipe folder" in message


def test_files_inside_the_recipe_are_read(recipe: Path) -> None:
    write(recipe, "env/app.env", "A=1\n")
    write(recipe, "conf/c.tmpl", "x")
    os.symlink(recipe / "conf" / "c.tmpl", recipe / "link.tmpl")  # a link that stays inside
    write(
        recipe,
        "compose.yml",
        HEAD + "    env_file: ./env/app.env\n    configs: [c, d]\n"
        "configs:\n  c:\n    file: conf/c.tmpl\n  d:\n    file: link.tmpl\n",
    )
    config = load_compose([recipe / "compose.yml"], {})
    assert config["services"]["app"]["environment"] == {"A": "1"}
    assert config["configs"]["c"]["file"] == str(recipe / "conf" / "c.tmpl")


def test_root_can_be_wider_than_the_working_dir(recipe: Path) -> None:
    write(recipe, "compose.yml", HEAD + "    env_file: ../bot.env\n")
    config = load_compose([recipe / "compose.yml"], {}, root=recipe.parent)
    assert config["services"]["app"]["environment"] == {"MATRIX_PASSWORD": "hunter2"}


# ------------------------------------------------------------ the CLI's rules


def test_yaml_scalars_read_as_the_cli_reads_them() -> None:
    doc = load_yaml(
        "a: yes\nb: on\nc: 0x1F\nd: 017\ne: 0o17\nf: 1e3\ng: 1_000\nh: 12:30\ni: 08\n"
        "j: true\nk: ~\nl: '1'\nm: 2024-01-02\nn: 123456789.5\no: 0.00001\np: 1.0\n"
    )
    assert {k: go_str(v) for k, v in doc.items()} == {
        "a": "yes",
        "b": "on",
        "c": "31",
        "d": "15",
        "e": "15",
        "f": "1000",
        "g": "1000",
        "h": "12:30",
        "i": "8",
        "j": "true",
        "k": None,
        "l": "1",
        "m": "2024-01-02 00:00:00 +0000 UTC",
        "n": "1.234567895e+08",
        "o": "1e-05",
        "p": "1",
    }


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "compose.yml", HEAD + "    image: y\n")
    with pytest.raises(ComposeError, match="already defined"):
        load_compose([tmp_path / "compose.yml"], {})


def test_env_file_is_read_as_the_cli_reads_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.env",
        '\ufeffA=1\n  B=  two  \nC="q"\n# no\nD\nE\nF=x # not a comment\r\nG=\n',
    )
    assert read_env_file(path, {"D": "dee"}) == {
        "A": "1",
        "B": "  two  ",
        "C": '"q"',
        "D": "dee",
        "F": "x # not a comment",
        "G": "",
    }
    write(tmp_path, "bad.env", "export X=1\n")
    with pytest.raises(ValueError, match="whitespaces"):
        read_env_file(tmp_path / "bad.env", {})


def test_environment_and_labels_as_the_cli_fills_them(tmp_path: Path) -> None:
    write(tmp_path, "a.env", "F=file\nG=\nH=file\n")
    write(
        tmp_path,
        "compose.yml",
        HEAD + "    env_file: a.env\n    environment: [E=, U, H=]\n"
        "    labels: [bare, 'k=v=w']\n    deploy:\n      labels: {d: null, n: 1.5}\n"
        "    healthcheck:\n      test: curl -f x || exit 1\n    sysctls: {a.b: 1}\n",
    )
    app = load_compose([tmp_path / "compose.yml"], {"E": "env", "G": "genv"})["services"]["app"]
    # An empty or missing value takes the environment's; the file loses to environment.
    assert app["environment"] == {"F": "file", "G": "genv", "H": "", "E": "env", "U": None}
    assert app["labels"] == {"bare": "", "k": "v=w"}
    assert app["deploy"]["labels"] == {"d": "", "n": "1.5"}
    assert app["healthcheck"]["test"] == ["CMD-SHELL", "curl -f x || exit 1"]
    assert app["sysctls"] == {"a.b": "1"}


def test_only_interpolated_strings_are_cast(tmp_path: Path) -> None:
    write(tmp_path, "compose.yml", HEAD + "    deploy:\n      replicas: ${R:-2}\n")
    config = load_compose([tmp_path / "compose.yml"], {})
    assert config["services"]["app"]["deploy"]["replicas"] == 2
    write(tmp_path, "compose.yml", HEAD + '    deploy:\n      replicas: "2"\n')
    with pytest.raises(ComposeError, match="'2' must be a int, not a string"):
        load_compose([tmp_path / "compose.yml"], {})


def test_a_boolean_label_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "compose.yml", HEAD + "    labels:\n      a: true\n")
    with pytest.raises(ComposeError, match=r"labels\.a must be a string, number or null"):
        load_compose([tmp_path / "compose.yml"], {})


def test_overlays_merge_ports_by_published_port_and_replace_aliases(tmp_path: Path) -> None:
    write(
        tmp_path,
        "compose.yml",
        HEAD + '    ports: ["80:80", "443:443"]\n    networks:\n      n:\n        aliases: [a]\n'
        "        ipv4_address: 10.0.0.2\n      m:\nnetworks:\n  n:\n  m:\n",
    )
    write(
        tmp_path,
        "compose.x.yml",
        'version: "3.8"\nservices:\n  app:\n    ports:\n      - {target: 80, published: 80, '
        "mode: host}\n    networks:\n      n:\n        aliases: [b]\n"
        "      m:\n        aliases: [c]\n",
    )
    app = load_compose([tmp_path / "compose.yml", tmp_path / "compose.x.yml"], {})["services"]
    assert app["app"]["ports"] == [
        {"target": 80, "published": 80, "mode": "host"},
        {"mode": "ingress", "target": 443, "published": 443, "protocol": "tcp"},
    ]
    assert app["app"]["networks"] == {
        "n": {"aliases": ["b"], "ipv4_address": "10.0.0.2"},
        "m": {"aliases": ["c"]},
    }


def test_check_refs_off_renders_undeclared_references(tmp_path: Path) -> None:
    write(tmp_path, "compose.yml", HEAD + "    secrets: [nope]\n")
    with pytest.raises(ComposeError, match="undefined secret nope"):
        load_compose([tmp_path / "compose.yml"], {})
    config = load_compose([tmp_path / "compose.yml"], {}, check_refs=False)
    assert config["services"]["app"]["secrets"] == [{"source": "nope"}]


def test_an_unset_variable_is_empty_as_the_cli_has_it_and_is_reported(recipe: Path) -> None:
    # agora's sample leaves `#EXTRA_DOMAINS=` commented out; `docker stack config` then
    # renders the label with "" (and warns). Strict by default, lenient on request.
    text = HEAD + "    deploy:\n      labels:\n        - hosts=a${EXTRA_DOMAINS}\n"
    write(recipe, "compose.yml", text)
    with pytest.raises(ComposeError, match="variable EXTRA_DOMAINS is not set"):
        load_compose([recipe / "compose.yml"], {})
    unset: dict[str, str] = {}
    config = load_compose([recipe / "compose.yml"], {}, allow_missing=True, unset=unset)
    assert config["services"]["app"]["deploy"]["labels"] == {"hosts": "a"}
    assert unset == {"EXTRA_DOMAINS": "compose.yml: services.app.deploy.labels[]"}
