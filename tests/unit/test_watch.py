"""The swarm watch without a swarm: the pure rules (with hypothesis), the reporter
against a FakeChat and a real store (one message per incident, edits, recovery,
restart, quiet hours and digest), and the webhook parsers."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.hooks import alerts, new_tags, repo_names, signature_ok
from bot.core.records import Held
from bot.core.store import Store
from bot.features.watch import Disk, Reporter, Rules, Thresholds, in_span, parse_span
from bot.ops.swarm.events import FailedTask, NodeState, ServiceState, SwarmSnapshot
from tests.fakes import FakeChat

T = Thresholds(failures=3, window=600, recover_after=60, converge_timeout=300)
SVC = "demo_app"


def snap(
    at: float,
    *,
    running: int = 1,
    failed: tuple[FailedTask, ...] = (),
    node: tuple[str, str] = ("ready", "active"),
    update_state: str | None = None,
) -> SwarmSnapshot:
    service = ServiceState(SVC, "demo", 1, running, update_state, "", failed)
    return SwarmSnapshot(at, (NodeState("n1", "node1", *node),), (service,), True)


def fails(*times: float) -> tuple[FailedTask, ...]:
    return tuple(FailedTask(f"t{int(t)}", t, "exit 3") for t in times)


def test_a_crash_loop_opens_one_incident_and_closes_after_the_quiet_time() -> None:
    rules = Rules(T)
    assert rules.snapshot("s", snap(10, running=0, failed=fails(1, 5))) == []
    (opened,) = rules.snapshot("s", snap(12, running=0, failed=fails(1, 5, 11)))
    assert opened.action == "open"
    assert opened.incident.key == "s/task/demo_app"
    assert "3 task failure(s)" in opened.incident.summary
    assert "exit 3" in opened.incident.summary
    # The same failures seen again change nothing; a new one updates the text.
    assert rules.snapshot("s", snap(13, running=1, failed=fails(1, 5, 11))) == []
    (update,) = rules.snapshot("s", snap(20, running=0, failed=fails(5, 11, 19)))
    assert update.action == "update"
    assert "4 task failure(s)" in update.incident.summary
    # Fixed: running, and no failure for recover_after (60 s after the last, at 19).
    assert rules.snapshot("s", snap(70, running=1, failed=fails(5, 11, 19))) == []
    (closed,) = rules.snapshot("s", snap(80, running=1, failed=fails(5, 11, 19)))
    assert closed.action == "close"
    assert rules.open == {}


def test_a_drained_node_opens_and_closes_after_hysteresis() -> None:
    rules = Rules(T)
    (opened,) = rules.snapshot("s", snap(0, node=("ready", "drain")))
    assert opened.action == "open"
    assert not opened.incident.urgent
    assert "drain" in opened.incident.summary
    (urgent,) = rules.snapshot("s", snap(5, node=("down", "drain")))
    assert urgent.action == "update"
    assert urgent.incident.urgent
    assert rules.snapshot("s", snap(10)) == []  # good, but not for long enough
    assert rules.snapshot("s", snap(30, node=("ready", "drain"))) != []  # bad again
    assert rules.snapshot("s", snap(40)) == []
    (closed,) = rules.snapshot("s", snap(100))
    assert closed.action == "close"


def test_a_paused_update_is_a_convergence_incident_and_a_short_service_one_later() -> None:
    rules = Rules(T)
    (opened,) = rules.snapshot("s", snap(0, update_state="paused"))
    assert opened.incident.kind == "converge"
    assert "paused" in opened.incident.summary
    rules = Rules(T)
    assert rules.snapshot("s", snap(0, running=0)) == []
    assert rules.snapshot("s", snap(299, running=0)) == []
    (late,) = rules.snapshot("s", snap(301, running=0))
    assert late.incident.kind == "converge"
    assert "0/1 running" in late.incident.summary


def test_a_removed_service_closes_its_incident() -> None:
    rules = Rules(T)
    rules.snapshot("s", snap(12, running=0, failed=fails(1, 5, 11)))
    empty = SwarmSnapshot(20, (NodeState("n1", "node1", "ready", "active"),), (), True)
    (closed,) = rules.snapshot("s", empty)
    assert closed.action == "close"


def test_disk_thresholds_with_a_margin() -> None:
    rules = Rules(Thresholds(disk_percent=90, disk_critical=97))
    gib = 1 << 30
    (opened,) = rules.disks("local", [Disk("/v", 91 * gib, 100 * gib)], 0)
    assert opened.action == "open"
    assert not opened.incident.urgent
    (urgent,) = rules.disks("local", [Disk("/v", 98 * gib, 100 * gib)], 1)
    assert urgent.incident.urgent
    assert rules.disks("local", [Disk("/v", 88 * gib, 100 * gib)], 2)[0].action == "update"
    assert rules.disks("local", [Disk("/v", 84 * gib, 100 * gib)], 3)[0].action == "close"


observations = st.lists(
    st.tuples(
        st.integers(0, 2),  # running replicas (desired 1)
        st.lists(st.integers(0, 30), max_size=4),  # failures, seconds before now
        st.sampled_from([("ready", "active"), ("ready", "drain"), ("down", "active")]),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(observations)
def test_never_two_open_incidents_for_a_key_and_every_one_closes(
    steps: list[tuple[int, list[int], tuple[str, str]]],
) -> None:
    rules = Rules(T)
    now = 0.0
    opened: dict[str, int] = {}
    history: list[FailedTask] = []
    for running, ago, node in steps:
        now += 7
        failed = tuple(FailedTask(f"t{now - a}", now - a, "boom") for a in ago)
        history.extend(failed)
        for d in rules.snapshot("s", snap(now, running=running, failed=failed, node=node)):
            key = d.incident.key
            if d.action == "open":
                assert opened.get(key, 0) == 0, f"second open of {key}"
                opened[key] = 1
            elif d.action == "close":
                assert opened.get(key) == 1, f"close of {key} that is not open"
                opened[key] = 0
            else:
                assert opened.get(key) == 1
    # Recovered for good: every open incident closes (once), none opens.
    # (swarm keeps the failed tasks in its history: the old ones are seen again)
    old = tuple(history[-5:])
    for _ in range(100):
        now += 7
        for d in rules.snapshot("s", snap(now, running=1, failed=old)):
            assert d.action in ("close", "update"), d
            if d.action == "close":
                assert opened[d.incident.key] == 1
                opened[d.incident.key] = 0
    assert rules.open == {}
    assert all(v == 0 for v in opened.values())


def test_quiet_hours_span_midnight() -> None:
    from datetime import time

    span = parse_span("22:00-07:00")
    assert in_span(time(23, 0), span)
    assert in_span(time(6, 59), span)
    assert not in_span(time(7, 0), span)
    assert not in_span(time(12, 0), span)
    assert in_span(time(13, 0), parse_span("12:30-14:00"))


async def test_reporter_one_message_edits_recovery_and_no_repeat_after_restart(
    tmp_path: Path,
) -> None:
    chat, store = FakeChat(), Store(tmp_path / "s.sqlite")
    reporter = Reporter(chat, store, ["@alice:test"], zone=UTC)
    rules = Rules(T)
    await reporter.apply(rules.snapshot("s", snap(12, running=0, failed=fails(1, 5, 11))))
    await reporter.apply(rules.snapshot("s", snap(20, running=0, failed=fails(5, 11, 19))))
    (sent,) = chat.sent
    assert sent.notify
    assert sent.mentions == ("@alice:test",)
    assert "@alice:test" in sent.markdown
    assert len(chat.edits) == 1
    assert "4 task failure(s)" in chat.edits[0].markdown
    # A restart: the open incident comes back from the store; nothing is re-announced.
    rules = Rules(T)
    from bot.features.watch.report import as_incident

    rules.restore([as_incident(r) for r in store.open_incidents()], 21)
    await reporter.apply(rules.snapshot("s", snap(22, running=0, failed=fails(5, 11, 19, 21))))
    assert len(chat.sent) == 1
    await reporter.apply(rules.snapshot("s", snap(85, running=1, failed=fails(5, 11, 19, 21))))
    await reporter.apply(rules.snapshot("s", snap(90, running=1, failed=fails(5, 11, 19, 21))))
    assert len(chat.sent) == 2
    assert "Recovered" in chat.sent[1].markdown
    assert chat.sent[1].reply_to == sent.event_id
    assert store.open_incidents() == []
    store.close()


async def test_quiet_hours_hold_non_urgent_incidents_for_one_digest(tmp_path: Path) -> None:
    chat, store = FakeChat(), Store(tmp_path / "s.sqlite")
    reporter = Reporter(chat, store, ["@alice:test"], zone=UTC, quiet_hours="00:00-06:00")
    rules = Rules(T)
    night = 3600.0  # 01:00 UTC on 1970-01-01
    await reporter.apply(rules.snapshot("s", snap(night, node=("ready", "drain"))))
    await reporter.apply(rules.disks("local", [Disk("/v", 95, 100)], night))
    assert chat.sent == []
    assert len(store.held_incidents()) == 2
    assert await reporter.digest(night + 60) is None  # still quiet
    # An urgent one is sent at once, quiet or not.
    await reporter.apply(
        rules.snapshot(
            "s", snap(night + 70, running=0, failed=fails(night + 1, night + 2, night + 3))
        )
    )
    assert len(chat.sent) == 1
    assert "demo_app" in chat.sent[0].markdown
    await reporter.apply(rules.disks("local", [Disk("/v", 10, 100)], night + 80))  # over
    morning = 7 * 3600.0
    digest = await reporter.digest(morning)
    assert digest is not None
    assert len(chat.sent) == 2
    text = chat.sent[1].markdown
    assert "2 incident(s)" in text
    assert "node1" in text
    assert "still open" in text
    assert "over at" in text
    assert store.held_incidents() == []
    assert await reporter.digest(morning + 30) is None
    (node,) = [r for r in store.open_incidents() if r.kind == "node"]
    assert node.held == Held.DIGEST
    store.close()


def test_forgejo_signature_tags_and_names() -> None:
    body = b'{"ref": "refs/tags/1.2.0+2.0"}'
    good = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature_ok(b"s3cret", body, good)
    assert not signature_ok(b"s3cret", body + b" ", good)
    assert not signature_ok(b"s3cret", body, None)
    assert not signature_ok(b"other", body, good)
    assert new_tags("push", {"ref": "refs/tags/1.2.0", "created": True}) == ["1.2.0"]
    assert new_tags("push", {"ref": "refs/heads/main", "created": True}) == []
    assert new_tags("push", {"ref": "refs/tags/1.2.0", "created": False}) == []
    assert new_tags("create", {"ref": "1.2.0", "ref_type": "tag"}) == ["1.2.0"]
    repo = {"repository": {"name": "Demo", "clone_url": "https://git.test/coop/demo.git"}}
    assert repo_names(repo) == ["demo", "Demo"]


def test_alertmanager_alerts() -> None:
    payload = {
        "alerts": [
            {"status": "firing", "labels": {"alertname": "Disk", "instance": "a"},
             "annotations": {"summary": "disk full"}},
            {"status": "resolved", "labels": {"alertname": "Load", "server": "s"}},
        ]
    }  # fmt: skip
    assert alerts(payload) == [
        ("alertmanager", "Disk@a", "alert **Disk@a**: disk full"),
        ("s", "Load", None),
    ]


async def test_metrics_token_and_the_alertmanager_hook(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bot.core.metrics import Metrics
    from bot.core.web import Hooks, make_app

    store = Store(tmp_path / "s.sqlite")
    seen: list[tuple[str, str, str | None]] = []

    async def on_alert(server: str, name: str, summary: str | None) -> None:
        seen.append((server, name, summary))

    async def on_tags(recipe: str, tags: list[str]) -> None:
        raise AssertionError("no forgejo hook here")

    hooks = Hooks(
        store, lambda name: False, on_tags, on_alert, alertmanager_token="am", max_body=2048
    )
    app = make_app(Metrics(), lambda: True, metrics_token="tok", hooks=hooks)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer no"})).status == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer tok"})).status == 200
        assert (await client.post("/hooks/forgejo", data=b"{}")).status == 404  # not configured
        payload = {"alerts": [{"status": "firing", "labels": {"alertname": "Load"}}]}
        assert (await client.post("/hooks/alertmanager", json=payload)).status == 401
        auth = {"Authorization": "Bearer am"}
        big = b"{" + b" " * 4096 + b"}"
        assert (await client.post("/hooks/alertmanager", data=big, headers=auth)).status == 413
        assert seen == []
        assert (await client.post("/hooks/alertmanager", json=payload, headers=auth)).status == 202
    assert seen == [("alertmanager", "Load", "alert **Load**: Load")]
    store.close()
