"""The bot's compose loader renders what docker 28's `docker stack config` renders.

For every recipe of the corpus (tests/harness/corpus.py), at its default branch and
at each release tag, and for each overlay combination its .env.sample mentions
(tests/harness/compose_oracle.py: as shipped, each COMPOSE_FILE line uncommented,
all of them), the app's environment is built as abra builds it and both renderers
read the same files with the same environment. The two renderings are compared
field by field (compose_oracle.view: only representation is normalised there, and
each normalisation says why).

Where the bot is deliberately stricter than `docker stack config` it must say so
with one of the messages in STRICTER, and render the same once that check is off:
`docker stack deploy` refuses undefined secrets, configs, networks and volumes and
services without an image when it converts the stack (the CLI's `stack config`
only prints). A synthetic recipe (EDGE) covers the syntax the corpus does not use.

`docker stack config` needs no daemon; DOCKER_HOST points at a socket that does not
exist so the machine's own daemon is never asked. The oracle is the docker 24+ CLI
at /usr/local/bin/docker that these machines ship beside Debian's 20.10 (which has
no `stack config`); without it the tests fail, saying so: a golden test that
quietly skips proves nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.ops.compose import load_compose
from tests.harness import compose_oracle as oracle
from tests.harness.corpus import RECIPES, bundle_path, clone_recipe


@pytest.fixture(autouse=True)
def _oracle_present() -> None:
    assert oracle.cli_has_stack_config(), (
        "the golden test needs a docker 24+ CLI (with `docker stack config`) at "
        "/usr/local/bin/docker"
    )


STRICTER = ("refers to undefined", "no image (stack deploy needs one)")


def _refs(name: str) -> list[str]:
    """The default branch and every release tag of a recipe's bundle."""
    bundle = bundle_path(name)
    if not bundle.is_file():
        return ["HEAD"]
    heads = subprocess.run(
        ["git", "bundle", "list-heads", str(bundle)], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    tags = sorted(line.split()[1] for line in heads if " refs/tags/" in line)
    return ["HEAD", *tags]


CASES = [(name, ref) for name in RECIPES for ref in _refs(name)]


def _compare(recipe: Path, label: str, env_text: str, home: Path) -> list[str]:
    """What differs between the two renderings of one combination, as messages."""
    env = oracle.process_env(oracle.app_env(recipe, env_text), home)
    files = oracle.compose_files(env)
    where = f"{recipe.name} [{label}] {':'.join(files)}"
    theirs = oracle.docker_stack_config(recipe, files, env)
    ours = oracle.bot_render(recipe, files, env)
    if theirs.config is None:
        if ours.config is not None:
            return [f"{where}: the CLI refuses ({theirs.error}), the bot renders"]
        return []
    if ours.config is None:
        problems = [p for p in ours.error.splitlines()[1:] if p.strip()]
        unexpected = [p for p in problems if not any(s in p for s in STRICTER)]
        if unexpected:
            return [f"{where}: the CLI renders, the bot refuses: {unexpected}"]
        lenient = load_compose(
            [recipe / f for f in files], env, allow_missing=True, check_refs=False
        )
        return [
            f"{where}: {d}"
            for d in oracle.differences(oracle.view(theirs.config), oracle.view(lenient))
        ]
    return [
        f"{where}: {d}"
        for d in oracle.differences(oracle.view(theirs.config), oracle.view(ours.config))
    ]


@pytest.mark.parametrize(("name", "ref"), CASES)
def test_recipe_renders_as_docker_stack_config(tmp_path: Path, name: str, ref: str) -> None:
    recipe = clone_recipe(name, tmp_path)
    if ref != "HEAD":
        subprocess.run(["git", "-C", str(recipe), "checkout", "-q", ref], check=True)
    assert (recipe / ".env.sample").is_file(), f"{name} {ref} has no .env.sample"
    home = tmp_path / "home"
    home.mkdir()
    combos = oracle.combinations(recipe)
    found: list[str] = []
    for combo in combos:
        found += _compare(recipe, combo.label, combo.env_text, home)
    assert not found, "\n".join(found)


# A recipe of the syntax the corpus does not use, with an overlay: YAML plain scalars
# (yes/on, 0x, octal, floats, dates), every interpolation form, env_file, short and
# long volumes/ports, labels without values, networks with aliases, resources,
# healthcheck as a string, sysctls, ulimits, logging.
EDGE = {
    ".env.sample": """TYPE=edge
DOMAIN=edge.example.com
SET=yes
EMPTY=
BARE_SET=fromenv
C=see
SETF=envf
COMPOSE_FILE="compose.yml"
#COMPOSE_FILE="$COMPOSE_FILE:compose.over.yml"
""",
    "app.env": '\ufeffFROMFILE=file\nFROMFILE_OVER=file\n  SPACED=  x  \nQUOTED="q"\n'
    "BARE_SET\nBARE_UNSET\n# c\nSETF=\nWITH#HASH=1 # c\r\n",
    "s2.txt": "x\n",
    "c1.tmpl": "y\n",
    "compose.yml": """version: "3.8"
services:
  app:
    image: "img:${TAG:-latest}"
    command: echo "$$HOME" ${UNSET-dflt} ${EMPTY-notused} ${EMPTY:-used} $SET-x
    entrypoint: ["/bin/sh", "-c"]
    env_file:
      - app.env
    environment:
      - A=${EMPTY?must be set}
      - B=${SET:?needs}
      - C
      - D=$SET
      - E=$${SET}
      - F
      - FROMFILE_OVER=env
      - SET=
      - N=${NESTED:-${SET}}
    labels:
      - "plain"
      - "k=v=w"
      - "dollar=$$x"
    hostname: "${STACK_NAME}-h"
    user: "1000"
    extra_hosts:
      - "somehost:162.242.195.82"
    ports:
      - "80:80"
      - "127.0.0.1:8080:8080/udp"
      - "9000-9001:9000-9001"
    volumes:
      - data:/data:nocopy
      - ./rel:/rel:ro
      - /abs:/abs:rw,rshared
      - type: bind
        source: ./long
        target: /long
    deploy:
      mode: replicated
      replicas: ${REPLICAS:-1}
      endpoint_mode: dnsrr
      labels:
        a: 1
        c: 1.5
        d:
        e: "x"
        y: yes
      update_config:
        parallelism: 2
        delay: 90s
        failure_action: rollback
        order: start-first
        monitor: 1m30s
        max_failure_ratio: 0.3
      restart_policy:
        condition: on-failure
        delay: 5s
        max_attempts: 3
        window: 2m
      resources:
        limits:
          cpus: "0.5"
          memory: 512M
        reservations:
          memory: 1G
      placement:
        constraints: [node.role == manager]
        preferences:
          - spread: node.labels.zone
        max_replicas_per_node: 2
    healthcheck:
      test: curl -f http://localhost || exit 1
      interval: 1m
      timeout: 500ms
      retries: 3
      start_period: 1h2m3s
    stop_grace_period: 90s
    secrets:
      - source: s1
        target: s1.txt
        uid: "1000"
        mode: 0400
      - s2
    configs:
      - source: c1
        target: /etc/c1
    networks:
      internal:
        aliases: [al]
        ipv4_address: 10.0.0.2
      proxy:
    logging:
      driver: json-file
      options:
        max-size: 10m
    sysctls:
      net.core.somaxconn: 1024
    ulimits:
      nofile:
        soft: 20000
        hard: 40000
      nproc: 65535
  other:
    image: busybox
    environment:
      X: 1
      Y: "true"
      Z:
      Y1: on
      Y3: 0x1F
      Y4: 1e3
      Y5: 0o17
      Y6: 017
      Y7: .5
      Y8: 1_000
      Y10: 12:30
      F4: 123456789.123
      D1: 2024-01-02
      D2: 2001-12-14t21:59:43.10-05:00
      D3: 2001-12-14T21:59:43
      D4: 2001-12-14 21:59:43.10
      D5: 2001-12-14 21:59:43+01:00
    healthcheck:
      disable: true
    networks: [internal]
    deploy:
      mode: global
volumes:
  data:
    driver: local
    driver_opts:
      type: none
      o: bind
      device: /srv
  ext:
    external: true
    name: "${STACK_NAME}_ext"
networks:
  internal:
    driver: overlay
    internal: true
    attachable: true
  proxy:
    external: true
secrets:
  s1:
    external: true
    name: "${STACK_NAME}_s1_${S1_VERSION:-v1}"
  s2:
    file: ./s2.txt
configs:
  c1:
    name: "${STACK_NAME}_c1_${C1_VERSION}"
    file: ./c1.tmpl
    template_driver: golang
""",
    "compose.over.yml": """version: "3.8"
services:
  app:
    image: "img:${TAG:-over}"
    command: []
    entrypoint: /bin/bash -lc
    environment:
      B: over
      G: "new"
    labels:
      extra: "1"
    ports:
      - "80:8080"
      - target: 9000
        published: 9000
        mode: host
    volumes:
      - other:/data
    deploy:
      replicas: 3
      labels:
        - "a=2"
        - "f"
      update_config:
        order: stop-first
      resources:
        limits:
          memory: 1G
      placement:
        constraints: [node.labels.x == y]
    secrets:
      - source: s1
        target: other
    networks:
      internal:
        aliases: [al2]
      proxy:
        aliases: [p]
    logging:
      options:
        max-file: "3"
  other:
    networks: [internal]
  new:
    image: new:1
volumes:
  other:
  data:
    external: true
secrets:
  s2:
    external: true
""",
}


def test_edge_recipe_renders_as_docker_stack_config(tmp_path: Path) -> None:
    recipe = tmp_path / "edge"
    for name, text in EDGE.items():
        (recipe / name).parent.mkdir(parents=True, exist_ok=True)
        (recipe / name).write_text(text)
    for folder in ("rel", "long"):
        (recipe / folder).mkdir()
    home = tmp_path / "home"
    home.mkdir()
    combos = oracle.combinations(recipe)
    assert len(combos) == 2
    found: list[str] = []
    for combo in combos:
        found += _compare(recipe, combo.label, combo.env_text, home)
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ('image: "x${NOPE:?say why}"', {}),
        ('image: "x${EMPTY:?say why}"', {"EMPTY": ""}),
        ('image: "x${NOPE?say why}"', {}),
        ('image: "x${BAD:+alt}"', {}),
        ("image: x\n    labels:\n      a: true", {}),
        ('image: x\n    deploy:\n      replicas: "2"', {}),
    ],
)
def test_both_refuse(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    """What the CLI refuses, the bot refuses too."""
    (tmp_path / "compose.yml").write_text(f'version: "3.8"\nservices:\n  a:\n    {text}\n')
    full = oracle.process_env(env, tmp_path)
    assert oracle.docker_stack_config(tmp_path, ["compose.yml"], full).config is None
    assert oracle.bot_render(tmp_path, ["compose.yml"], full).config is None
