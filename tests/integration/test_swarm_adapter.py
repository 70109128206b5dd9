"""bot.ops.swarm against a real dockerd 20.10 in swarm mode (tests/harness).

Stacks use busybox-only images imported by the harness, `endpoint_mode: dnsrr` and
no published ports (no IPVS here), and `stop_grace_period: 1s` (sleep as pid 1
ignores SIGTERM). Timings are printed (pytest -s shows them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.ops.compose import ComposeError, load_compose
from bot.ops.swarm import Swarm, SwarmError
from tests.harness.dockerd import Dockerd, free_port
from tests.harness.registry import Registry

IMAGE = "local/busybox:1.0"


def service(
    command: list[str],
    *,
    image: str = IMAGE,
    replicas: int | None = None,
    labels: dict[str, str] | None = None,
    update: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    deploy: dict[str, Any] = {"endpoint_mode": "dnsrr"}
    if replicas is not None:
        deploy["replicas"] = replicas
    if labels:
        # As recipes do: list form, since the CLI interpolates values, never keys.
        deploy["labels"] = [f"{k}={v}" for k, v in labels.items()]
    if update:
        deploy["update_config"] = update
    return {
        "image": image,
        "command": command,
        "stop_grace_period": "1s",
        "deploy": deploy,
        **extra,
    }


def write_compose(path: Path, services: dict[str, Any], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"version": "3.8", "services": services, **top}))
    return path


SLEEP = ["sleep", "3600"]


@pytest.fixture(scope="module")
def image(dockerd: Dockerd) -> str:
    return dockerd.import_image(IMAGE, ["/bin/sh"])


@pytest.fixture
async def swarm(dockerd: Dockerd, image: str) -> AsyncIterator[Swarm]:
    sw = Swarm(dockerd.host, docker_config=str(dockerd.workdir / "cli-config"))
    try:
        yield sw
    finally:
        await sw.close()


async def cleanup(swarm: Swarm, *stacks: str) -> None:
    for stack in stacks:
        try:
            await swarm.remove(stack)
        except SwarmError as e:
            print(f"cleanup of {stack}: {e}")


# --------------------------------------------------------------------------- deploy


async def test_deploy_redeploy_and_rollbacks(swarm: Swarm, tmp_path: Path) -> None:
    stack = "st1"
    progress: list[str] = []

    async def on_progress(line: str) -> None:
        progress.append(line)

    def compose(label: str, app_image: str = IMAGE, failure_action: str = "rollback") -> Path:
        return write_compose(
            tmp_path / "compose.yml",
            {
                "app": service(
                    SLEEP,
                    image=app_image,
                    labels={"coop-cloud.${STACK_NAME}.version": label},
                    update={"failure_action": failure_action, "monitor": "2s"},
                ),
                "web": service(SLEEP, replicas=2),
            },
        )

    env = {"STACK_NAME": stack}
    files = [Path("compose.yml")]
    try:
        # 1. A new stack.
        compose("1.0.0")
        t0 = time.monotonic()
        out = await swarm.deploy(stack, files, env, tmp_path)
        assert "Creating service st1_app" in out
        conv = await swarm.wait_converged(stack, 60, on_progress, monitor=2)
        took = time.monotonic() - t0
        print(f"\nnew stack: deploy -> converged (incl. 2s monitor) in {took:.1f}s")
        assert conv.ok, conv.failures
        assert not conv.rolled_back_by_swarm
        services = {s.short_name: s for s in await swarm.services(stack)}
        assert set(services) == {"app", "web"}
        app, web = services["app"], services["web"]
        assert app.name == "st1_app"
        assert (app.replicas_desired, app.replicas_running) == (1, 1)
        assert (web.replicas_desired, web.replicas_running) == (2, 2)
        assert app.labels["coop-cloud.st1.version"] == "1.0.0"
        assert app.labels["com.docker.stack.namespace"] == stack
        assert app.image == IMAGE
        assert app.update_state is None
        assert not app.has_previous_spec

        # 2. Redeploy with a changed label: nothing restarts, converged again.
        compose("1.0.1")
        t0 = time.monotonic()
        await swarm.deploy(stack, files, env, tmp_path)
        conv = await swarm.wait_converged(stack, 60, on_progress, monitor=2)
        print(f"label-only redeploy -> converged in {time.monotonic() - t0:.1f}s")
        assert conv.ok, conv.failures
        app = next(s for s in conv.services if s.short_name == "app")
        assert app.labels["coop-cloud.st1.version"] == "1.0.1"
        assert app.has_previous_spec
        assert app.previous_image == IMAGE

        # 3. An image that doesn't exist, failure_action rollback: swarm rolls back.
        compose("1.0.2", app_image="local/nope:1.0")
        t0 = time.monotonic()
        await swarm.deploy(stack, files, env, tmp_path)
        conv = await swarm.wait_converged(stack, 60, on_progress, monitor=2)
        print(f"bad image (rollback) -> verdict in {time.monotonic() - t0:.1f}s: {conv}")
        assert not conv.ok
        assert any("No such image: local/nope:1.0" in f for f in conv.failures), conv.failures
        assert any("No such image" in line for line in progress)
        if conv.rolled_back_by_swarm:
            assert any("rolled back by swarm" in f for f in conv.failures)
        # Whatever swarm did, our rollback + wait brings the old spec back. Swarm's
        # own rollback already did it for app; web's previous spec is its current one.
        rolled = await swarm.rollback(stack)
        print(f"rollback() after swarm's rollback: {rolled}")
        # The default after_rollback=None sees app already rolled back: expected.
        conv = await swarm.wait_converged(stack, 60, on_progress, monitor=2)
        assert conv.ok, conv.failures
        app = next(s for s in conv.services if s.short_name == "app")
        assert app.image == IMAGE
        assert app.labels["coop-cloud.st1.version"] == "1.0.1"  # labels revert too
        # A second rollback must not roll forward to the bad spec.
        assert "app" not in await swarm.rollback(stack)

        # 4. The same with failure_action pause: the update pauses, we roll back.
        compose("1.0.3", app_image="local/nope:1.0", failure_action="pause")
        t0 = time.monotonic()
        await swarm.deploy(stack, files, env, tmp_path)
        conv = await swarm.wait_converged(stack, 60, on_progress, monitor=2)
        print(f"bad image (pause) -> verdict in {time.monotonic() - t0:.1f}s")
        assert not conv.ok
        assert not conv.rolled_back_by_swarm
        assert any("app: update paused" in f for f in conv.failures), conv.failures
        t0 = time.monotonic()
        rolled = await swarm.rollback(stack)
        assert "app" in rolled
        conv = await swarm.wait_converged(stack, 60, on_progress, monitor=2)
        print(f"rollback() -> converged in {time.monotonic() - t0:.1f}s ({rolled})")
        assert conv.ok, conv.failures
        app = next(s for s in conv.services if s.short_name == "app")
        assert app.image == IMAGE
        assert app.update_state == "rollback_completed"
        assert app.labels["coop-cloud.st1.version"] == "1.0.1"
        assert app.recent_errors
        assert "No such image" in app.recent_errors[0]
    finally:
        await cleanup(swarm, stack)


async def test_crash_loop_is_reported(swarm: Swarm, tmp_path: Path) -> None:
    stack = "st2"
    progress: list[str] = []

    async def on_progress(line: str) -> None:
        progress.append(line)

    write_compose(
        tmp_path / "compose.yml",
        {"crash": service(["sh", "-c", "echo starting; exit 1"])},
    )
    try:
        await swarm.deploy(stack, [Path("compose.yml")], {}, tmp_path)
        t0 = time.monotonic()
        # Opt-in early failure: 2 crashes since the deploy.
        conv = await swarm.wait_converged(stack, 25, on_progress, monitor=3, max_failures=2)
        took = time.monotonic() - t0
        print(f"\ncrash loop: failed after 2 crashes in {took:.1f}s: {conv.failures}")
        assert not conv.ok
        assert took < 20
        assert "crash: 2 tasks failed, giving up" in conv.failures
        assert "crash: task failed: task: non-zero exit (1)" in conv.failures
        assert progress.count("crash: task failed: task: non-zero exit (1)") == 1
        # Default: the crash loop is pending until the timeout.
        t0 = time.monotonic()
        conv = await swarm.wait_converged(stack, 8, monitor=3)
        took = time.monotonic() - t0
        assert not conv.ok
        assert 8 <= took < 12
        assert conv.failures[0] == "not converged after 8s"
        assert "crash: 0/1 running" in conv.failures
        assert "crash: task failed: task: non-zero exit (1)" in conv.failures
        (crash,) = conv.services
        assert crash.recent_errors == ["task: non-zero exit (1)"]
    finally:
        await cleanup(swarm, stack)


async def test_deploy_errors(swarm: Swarm, tmp_path: Path) -> None:
    (tmp_path / "compose.yml").write_text("services:\n  a:\n    image: x\n")
    with pytest.raises(SwarmError, match="unsupported Compose file version"):
        await swarm.deploy("st9", [Path("compose.yml")], {}, tmp_path)
    with pytest.raises(SwarmError, match="invalid stack name"):
        await swarm.deploy("--prune", [Path("compose.yml")], {}, tmp_path)
    conv = await swarm.wait_converged("st9", 5)
    assert (conv.ok, conv.failures) == (False, ["stack st9 has no services"])


def test_the_cli_gets_only_the_given_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COOPBOT_LEAK", "leaked")
    swarm = Swarm("unix:///nonexistent.sock")
    env = swarm._cli_env({"STACK_NAME": "x"})
    assert "COOPBOT_LEAK" not in env
    assert env["DOCKER_HOST"] == swarm.docker_host
    assert env["STACK_NAME"] == "x"
    assert set(env) <= {"PATH", "HOME", "DOCKER_CONFIG", "DOCKER_HOST", "STACK_NAME"}


# --------------------------------------------------------------------------- remove, logs, stacks


async def test_remove_logs_stacks_and_redeploy(swarm: Swarm, tmp_path: Path) -> None:
    stack, other = "st3", "st4"
    write_compose(
        tmp_path / "compose.yml",
        {
            "app": service(
                ["sh", "-c", "echo hello-from-app; echo oops >&2; exec sleep 3600"],
                volumes=["data:/data"],
            ),
            "db": service(["sh", "-c", "echo hello-from-db; exec sleep 3600"]),
        },
        volumes={"data": None},
    )
    write_compose(tmp_path / "other.yml", {"solo": service(SLEEP)})
    files = [Path("compose.yml")]
    try:
        await swarm.deploy(stack, files, {}, tmp_path)
        await swarm.deploy(other, [Path("other.yml")], {}, tmp_path)
        conv = await swarm.wait_converged(stack, 60, monitor=1)
        assert conv.ok, conv.failures

        # stacks(): both stacks, grouped.
        stacks = await swarm.stacks()
        assert {s.short_name for s in stacks[stack]} == {"app", "db"}
        assert [s.name for s in stacks[other]] == ["st4_solo"]

        # logs(): lines prefixed with the short name, stdout and stderr.
        logs = ""
        for _ in range(20):  # the log driver may lag the task's start a little
            logs = await swarm.logs(stack, None, 10)
            if "hello-from-db" in logs and "oops" in logs:
                break
            await asyncio.sleep(0.25)
        print(f"\nlogs:\n{logs}")
        assert re.search(r"^app \| \d{4}-\d\d-\d\dT[\d:.]+Z hello-from-app$", logs, re.M)
        assert re.search(r"^app \| \S+ oops$", logs, re.M)
        assert re.search(r"^db \| \S+ hello-from-db$", logs, re.M)
        only_db = await swarm.logs(stack, "db", 5)
        assert "hello-from-db" in only_db
        assert "app |" not in only_db
        with pytest.raises(SwarmError, match=r"no service nope in st3 \(it has: app, db\)"):
            await swarm.logs(stack, "nope", 5)

        assert await swarm.volumes(stack) == ["st3_data"]
        t0 = time.monotonic()
        remaining = await swarm.remove(stack)
        print(f"remove: services and networks gone in {time.monotonic() - t0:.1f}s")
        assert remaining == ["st3_data"]
        assert await swarm.services(stack) == []
        assert stack not in await swarm.stacks()

        # Deploying the same stack right after remove() works.
        t0 = time.monotonic()
        await swarm.deploy(stack, files, {}, tmp_path)
        conv = await swarm.wait_converged(stack, 60, monitor=1)
        print(f"redeploy after remove -> converged in {time.monotonic() - t0:.1f}s")
        assert conv.ok, conv.failures
    finally:
        await cleanup(swarm, stack, other)


# --------------------------------------------------------------------------- secrets, images, info


async def test_secrets(swarm: Swarm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    value = "s3cr3t-value-never-logged"
    await swarm.create_secret("st5_db_password_v1", value, {"coop-cloud.stack": "st5"})
    assert "st5_db_password_v1" in await swarm.secrets()
    with pytest.raises(SwarmError, match="secret st5_db_password_v1 already exists") as e:
        await swarm.create_secret("st5_db_password_v1", value, {})
    assert value not in str(e.value)
    assert value not in caplog.text


async def test_image_available(
    swarm: Swarm, dockerd: Dockerd, registry: Registry, image: str
) -> None:
    ok, pinned, reason = await swarm.image_available(IMAGE)
    print(f"\nlocal: {ok} {pinned} {reason}")
    assert ok
    assert pinned is None
    assert "local image only" in reason

    ref = f"{registry.host_port}/busybox:1.0"
    dockerd.cli("tag", IMAGE, ref)
    pushed = dockerd.cli("push", ref).stdout
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert digest
    t0 = time.monotonic()
    ok, pinned, reason = await swarm.image_available(ref)
    print(f"registry: {ok} {pinned} {reason} ({time.monotonic() - t0:.2f}s)")
    assert ok
    assert pinned == f"{ref}@{digest.group(1)}"
    # A pinned ref is answered the same way.
    assert (await swarm.image_available(pinned))[1] == pinned

    missing = f"{registry.host_port}/busybox:9.9"
    ok, pinned, reason = await swarm.image_available(missing)
    print(f"missing tag: {ok} {reason}")
    assert not ok
    assert pinned is None
    assert "not found locally" in reason

    unreachable = f"127.0.0.1:{free_port()}/x:1"
    t0 = time.monotonic()
    ok, pinned, reason = await swarm.image_available(unreachable)
    print(f"unreachable: {ok} {reason} ({time.monotonic() - t0:.2f}s)")
    assert not ok
    assert pinned is None
    assert "connection refused" in reason


async def test_info(swarm: Swarm, tmp_path: Path) -> None:
    info = await swarm.info()
    assert info["Swarm"]["LocalNodeState"] == "active"
    nowhere = Swarm(f"unix://{tmp_path}/nope.sock")
    with pytest.raises(SwarmError, match=r"^server unreachable"):
        await nowhere.info()
    with pytest.raises(SwarmError, match=r"^server unreachable"):
        await nowhere.services("x")


# --------------------------------------------------------------------------- config()
# Pure: no daemon needed (Swarm.config never talks to it).

BASE = """\
version: "3.8"
services:
  app:
    image: ${IMG:-local/busybox:1.0}
    command: ["sleep", "1"]
    environment:
      - A=1
      - B=${B}
      - C
    labels: ["x=1"]
    secrets: [s1]
    volumes: ["data:/data", "./conf:/conf:ro"]
    deploy:
      labels:
        - "coop-cloud.${STACK_NAME}.version=1.0.0+${VERSION:-dev}"
        - "keys.${STACK_NAME}.stay=as written"
      replicas: ${R:-2}
      placement:
        constraints: ["node.role==manager"]
secrets:
  s1:
    external: true
    name: ${STACK_NAME}_s1_${SECRET_S1_VERSION}
volumes:
  data:
"""

OVERRIDE = """\
version: "3.8"
services:
  app:
    command: sleep 2
    environment:
      B: over
      D: "4"
    secrets:
      - source: s1
        target: /run/s
    volumes: ["other:/data"]
    ports: ["8080:80"]
    deploy:
      labels: ["bar=2"]
      placement:
        constraints: ["node.labels.x==1"]
  db:
    image: postgres:15
    networks: [backend]
networks:
  backend:
volumes:
  other:
"""

ENV = {"STACK_NAME": "ex_org", "B": "bee", "R": "3", "C": "from-env", "SECRET_S1_VERSION": "v1"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def test_config_interpolates_and_merges(tmp_path: Path) -> None:
    write(tmp_path, "compose.yml", BASE)
    write(tmp_path, "compose.extra.yml", OVERRIDE)
    swarm = Swarm("unix:///nonexistent.sock")
    files = [Path("compose.yml"), Path("compose.extra.yml")]
    config = await swarm.config(files, ENV, tmp_path)
    app = config["services"]["app"]
    assert app["image"] == "local/busybox:1.0"
    assert app["command"] == ["sleep", "2"]
    assert app["environment"] == {"A": "1", "B": "over", "C": "from-env", "D": "4"}
    assert app["deploy"]["labels"] == {
        "coop-cloud.ex_org.version": "1.0.0+dev",
        "keys.ex_org.stay": "as written",  # list form: the whole "k=v" is a value
        "bar": "2",
    }
    assert app["deploy"]["replicas"] == 3
    assert app["deploy"]["placement"]["constraints"] == [
        "node.role==manager",
        "node.labels.x==1",
    ]
    assert app["secrets"] == [{"source": "s1", "target": "/run/s"}]
    assert app["volumes"] == [  # merged by target, then sorted by it (as the CLI does)
        {"type": "bind", "source": str(tmp_path / "conf"), "target": "/conf", "read_only": True},
        {"type": "volume", "source": "other", "target": "/data"},
    ]
    assert app["ports"] == [{"mode": "ingress", "target": 80, "published": 8080, "protocol": "tcp"}]
    assert config["services"]["db"]["networks"] == {"backend": None}
    assert config["secrets"]["s1"] == {"external": True, "name": "ex_org_s1_v1"}
    assert set(config["volumes"]) == {"data", "other"}
    assert list(config["services"]) == ["app", "db"]


BASE2 = """\
version: "3.8"
services:
  app:
    image: x
    entrypoint: /bin/sh -c 'echo "a b"'
    env_file: app.env
    environment: [E2=env, E3, E4]
    ports: ["80:80", "9000", {target: 443, published: 443, mode: host}]
    networks: [proxy, default]
    configs:
      - source: c1
        target: /etc/c
    secrets: [s2]
    volumes: ["/abs:/x:ro", "/anon", "vol:/y"]
    logging:
      driver: json-file
      options: {max-size: 10m}
    stop_grace_period: 1s
    healthcheck: {test: ["CMD", "true"], interval: 30s}
networks:
  proxy:
    external: true
configs:
  c1:
    file: ./nginx.conf
    template_driver: golang
secrets:
  s2:
    external: true
volumes:
  vol:
    external: true
"""

OVERRIDE2 = """\
version: "3.8"
services:
  app:
    ports: ["10000:10", "80:80"]
    entrypoint: []
    logging:
      options: {max-file: "3"}
    volumes: ["/abs2:/x"]
    networks:
      proxy:
        aliases: [a1]
"""


@pytest.mark.parametrize(
    ("number", "base", "override"), [(1, BASE, OVERRIDE), (2, BASE2, OVERRIDE2)]
)
def test_config_matches_docker_stack_config(
    tmp_path: Path, number: int, base: str, override: str
) -> None:
    """Docker 28's `docker stack config` is the oracle: its output for these files was
    recorded in tests/data/stack_config_N.yml (the temp dir replaced by @ROOT@), so
    the test needs no newer CLI."""
    write(tmp_path, "compose.yml", base)
    write(tmp_path, "compose.extra.yml", override)
    write(tmp_path, "app.env", "E1=from-file\nE2=file2\n# comment\n")
    write(tmp_path, "nginx.conf", "x")
    (tmp_path / "conf").mkdir()
    files = [tmp_path / "compose.yml", tmp_path / "compose.extra.yml"]
    env = {"PATH": os.environ.get("PATH", ""), **ENV, "E3": "three"}
    recorded = (Path(__file__).parent.parent / "data" / f"stack_config_{number}.yml").read_text()
    theirs = yaml.safe_load(recorded.replace("@ROOT@", str(tmp_path)))
    ours = load_compose(files, env)
    for section in ("volumes", "networks", "secrets", "configs"):
        assert ours.get(section) == theirs.get(section), section
    assert ours["services"] == theirs["services"]


@pytest.mark.parametrize(
    ("text", "env", "problems"),
    [
        (
            "services:\n  a:\n    image: x\n",
            {},
            ["compose.yml: unsupported Compose file version: 1.0"],
        ),
        (
            'version: "3.8"\nservices:\n  a: [\n',
            {},
            ["compose.yml: invalid YAML: "],
        ),
        (
            'version: "3.8"\nfoo: 1\nservices:\n  a:\n    image: x\n    bogus: 1\n'
            '    deploy:\n      replicas: "many"\n',
            {},
            [
                "compose.yml: additional property 'foo' is not allowed",
                "compose.yml: services.a: additional property 'bogus' is not allowed",
                "compose.yml: services.a.deploy.replicas: 'many' is not a valid int",
            ],
        ),
        (
            'version: "3.8"\nservices:\n  a:\n    image: ${IMG}\n'
            '    labels: ["x=${X}-${Y:?set Y}"]\n',
            {},
            [
                "required variable Y is missing a value: set Y",
                "variable IMG is not set (used in compose.yml: services.a.image)",
            ],
        ),
        (
            'version: "3.8"\nservices:\n  a:\n    command: x\n    secrets: [nope]\n'
            "    volumes: [vol:/x]\n",
            {},
            [
                "services.a: no image (stack deploy needs one)",
                "services.a refers to undefined secret nope",
                "services.a refers to undefined volume vol",
            ],
        ),
    ],
)
async def test_config_refuses_with_readable_messages(
    tmp_path: Path, text: str, env: dict[str, str], problems: list[str]
) -> None:
    write(tmp_path, "compose.yml", text)
    swarm = Swarm("unix:///nonexistent.sock")
    with pytest.raises(ComposeError) as e:
        await swarm.config([Path("compose.yml")], env, tmp_path)
    message = str(e.value)
    print(message)
    assert message.startswith("invalid compose files:\n- ")
    for problem in problems:
        assert problem in message


def test_interpolation_quirks_follow_the_cli(tmp_path: Path) -> None:
    # $$ escapes; ${X-d} only when unset; ${X:-d} when unset or empty; an unbraced
    # "$Z-q ..." is Z with the default "q ..." up to the next "}" (the CLI's regexp).
    write(
        tmp_path,
        "compose.yml",
        'version: "3.8"\nservices:\n  a:\n    image: "$$X ${Y-d} ${E:-e} $Z-q ${W:?boom}"\n',
    )
    config = load_compose([tmp_path / "compose.yml"], {"Y": "", "E": ""})
    assert config["services"]["a"]["image"] == "$X  e q ${W:?boom}"
    # Mapping keys are never interpolated (use the list form for labels).
    write(
        tmp_path,
        "k.yml",
        'version: "3.8"\nservices:\n  a:\n    image: x\n    labels:\n      "l.${S}": "${S}"\n',
    )
    config = load_compose([tmp_path / "k.yml"], {"S": "s"})
    assert config["services"]["a"]["labels"] == {"l.${S}": "s"}
    write(tmp_path, "b.yml", 'version: "3.8"\nservices:\n  a:\n    image: "x$NOPE"\n')
    with pytest.raises(ComposeError, match="variable NOPE is not set"):
        load_compose([tmp_path / "b.yml"], {})
    config = load_compose([tmp_path / "b.yml"], {}, allow_missing=True)
    assert config["services"]["a"]["image"] == "x"
