"""The swarm adapter's pure parts besides convergence: RFC 3339 times, names and refs,
grouping a services and a tasks listing, the shared label vocabulary, and close().

No docker: JSON shaped as dockerd 20.10 returns it (tests/integration checks the
real thing).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.fmt import parse_rfc3339
from bot.labels import (
    NAMESPACE_LABEL,
    UpdateState,
    is_rollback,
    namespace_filter,
    service_filter,
    version_label,
)
from bot.ops.swarm import Swarm, SwarmError, group
from bot.ops.swarm.parse import check_stack, container_spec, iso, split_ref

# --------------------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T05:40:22.144768178Z", "2026-11-22T05:40:22.144768+00:00"),
        ("2026-11-22T05:40:22Z", "2026-11-22T05:40:22+00:00"),
        ("2026-11-22T05:40:22", "2026-11-22T05:40:22+00:00"),  # no zone: UTC
        ("2026-11-22T06:40:22.5+01:00", "2026-11-22T05:40:22.500000+00:00"),
        ("2026-11-22T00:10:00-02:30", "2026-11-22T02:40:00+00:00"),
        ("  2026-11-22T05:40:22Z\n", "2026-11-22T05:40:22+00:00"),
    ],
)
def test_parse_rfc3339(text: str, expected: str) -> None:
    assert parse_rfc3339(text).isoformat() == expected


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-11-22", "2026-11-22 05:40:22Z", "2026-13-40T00:00:00Z"]
)
def test_parse_rfc3339_rejects(text: str) -> None:
    # the last one gets as far as datetime, which names the bad field
    with pytest.raises(ValueError, match=r"not an RFC 3339 time|must be in"):
        parse_rfc3339(text)


def test_iso_is_sortable_text_and_keeps_what_it_cannot_read() -> None:
    assert iso("2026-11-22T06:40:22.5+01:00") == "2026-11-22T05:40:22.500000Z"
    assert iso("soon") == "soon"
    assert iso(None) == ""
    assert iso("") == ""


# --------------------------------------------------------------------------- names and refs


@pytest.mark.parametrize("name", ["app", "my_stack", "a.b-c", "9lives"])
def test_check_stack_accepts(name: str) -> None:
    assert check_stack(name) == name


@pytest.mark.parametrize("name", ["", "-rm", "_x", "a b", "a/b", "a;b", "ä"])
def test_check_stack_rejects(name: str) -> None:
    with pytest.raises(SwarmError, match="invalid stack name"):
        check_stack(name)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("nginx", ("nginx", "latest")),
        ("nginx:1.25", ("nginx", "1.25")),
        ("nginx:1.25@sha256:abc", ("nginx", "1.25")),
        ("nginx@sha256:abc", ("nginx", "latest")),
        ("127.0.0.1:5000/app", ("127.0.0.1:5000/app", "latest")),
        ("127.0.0.1:5000/team/app:2", ("127.0.0.1:5000/team/app", "2")),
    ],
)
def test_split_ref(ref: str, expected: tuple[str, str]) -> None:
    assert split_ref(ref) == expected


def test_container_spec() -> None:
    spec = {"TaskTemplate": {"ContainerSpec": {"Image": "a:1", "TTY": True}}}
    assert container_spec(spec) == {"Image": "a:1", "TTY": True}
    assert container_spec({}) == {}
    assert container_spec({"TaskTemplate": None}) == {}


# --------------------------------------------------------------------------- grouping


def _service(sid: str, name: str) -> dict[str, Any]:
    return {
        "ID": sid,
        "Spec": {"Name": name, "Labels": {NAMESPACE_LABEL: "st"}, "Mode": {"Replicated": {}}},
    }


def _task(tid: str, sid: str, state: str = "running") -> dict[str, Any]:
    return {
        "ID": tid,
        "ServiceID": sid,
        "DesiredState": "running",
        "Status": {"State": state, "Timestamp": "2026-11-22T05:40:22Z"},
        "Slot": 1,
    }


def test_group_sorts_services_and_files_their_tasks() -> None:
    services = [_service("s2", "st_web"), _service("s1", "st_db")]
    tasks = [_task("t1", "s1"), _task("t2", "s2"), _task("t3", "s2", "failed"), _task("t9", "x")]
    infos, by_service = group(services, tasks, None)
    assert [i.name for i in infos] == ["st_db", "st_web"]
    assert [i.short_name for i in infos] == ["db", "web"]
    assert [t.id for t in by_service["st_web"]] == ["t2", "t3"]
    assert [t.id for t in by_service["st_db"]] == ["t1"]
    assert all(t.up_to_date for ts in by_service.values() for t in ts)
    assert "x" not in by_service  # a task of another service is dropped
    # Replicas default to 1 when the spec names none; running counts the tasks.
    assert infos[1].replicas_desired == 1
    assert infos[1].replicas_running == 1


def test_group_marks_tasks_of_an_older_spec() -> None:
    _, by_service = group([_service("s1", "st_db")], [_task("t1", "s1"), _task("t2", "s1")], {"t2"})
    assert {t.id: t.up_to_date for t in by_service["st_db"]} == {"t1": False, "t2": True}


def test_group_keeps_services_without_tasks() -> None:
    infos, by_service = group([_service("s1", "st_db")], [], set())
    assert [i.name for i in infos] == ["st_db"]
    assert by_service == {"st_db": []}


# --------------------------------------------------------------------------- vocabulary


def test_update_states_are_the_daemons_strings() -> None:
    assert UpdateState.ROLLBACK_COMPLETED.value == "rollback_completed"
    assert UpdateState("paused") is UpdateState.PAUSED
    assert {s.value for s in UpdateState} == {
        "updating",
        "paused",
        "completed",
        "rollback_started",
        "rollback_paused",
        "rollback_completed",
    }


@pytest.mark.parametrize(
    ("state", "expected"),
    [("rollback_started", True), ("rollback_completed", True), ("completed", False), ("", False)],
)
def test_is_rollback(state: str, expected: bool) -> None:
    assert is_rollback(state) is expected
    assert is_rollback(None) is False


def test_label_helpers() -> None:
    assert namespace_filter("st") == "com.docker.stack.namespace=st"
    assert namespace_filter(None) == "com.docker.stack.namespace"
    assert service_filter("st_app") == "com.docker.swarm.service.name=st_app"
    assert version_label("st") == "coop-cloud.st.version"


# --------------------------------------------------------------------------- close


class _FakeClient:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


async def test_close_closes_the_sdk_client_once() -> None:
    swarm = Swarm("unix:///nonexistent.sock")
    await swarm.close()  # before any use: nothing to close
    fake = _FakeClient()
    swarm._client = fake
    await asyncio.gather(swarm.close(), swarm.close())
    assert fake.closed == 1
    assert swarm._client is None
