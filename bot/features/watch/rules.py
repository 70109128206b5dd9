"""When something on a swarm is an incident, and when it is over. Pure: no I/O.

`Rules` is fed snapshots of a server (nodes, services and their failed tasks),
disk usage readings and external alerts, each with the time they describe, and
answers with decisions: open an incident, update its text, close it. It keeps
the state that needs memory: the failed tasks seen per service (by task id, so a
task seen in ten snapshots counts once), since when a condition has been bad or
good, and which incidents are open.

Keys say what an incident is about, "<server>/<kind>/<subject>"; there is never
more than one open incident per key. Hysteresis: an incident closes only once its
condition has been good for `recover_after` (a crash loop looks healthy between
two crashes); a disk must drop `DISK_MARGIN` points below its threshold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from bot.fmt import code, human_bytes
from bot.labels import UpdateState
from bot.ops.swarm.events import ServiceState, SwarmSnapshot

DISK_MARGIN = 5.0  # points below the threshold before a disk incident closes
STUCK_STATES = {UpdateState.PAUSED, UpdateState.ROLLBACK_PAUSED}


@dataclass(frozen=True)
class Thresholds:
    failures: int = 3
    window: float = 600.0
    recover_after: float = 120.0
    converge_timeout: float = 600.0
    disk_percent: float = 90.0
    disk_critical: float = 97.0


@dataclass(frozen=True)
class Incident:
    key: str
    server: str
    kind: str
    subject: str
    summary: str  # one line of markdown: what is wrong, with the numbers
    urgent: bool  # urgent ones are sent even in quiet hours
    opened_at: float


@dataclass(frozen=True)
class Decision:
    action: Literal["open", "update", "close"]
    incident: Incident
    at: float


@dataclass(frozen=True)
class Disk:
    path: str
    used: int  # bytes
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.total if self.total else 0.0


def key_of(server: str, kind: str, subject: str) -> str:
    return f"{server}/{kind}/{subject}"


class Rules:
    def __init__(self, thresholds: Thresholds) -> None:
        self.t = thresholds
        self.open: dict[str, Incident] = {}
        self._failures: dict[str, dict[str, float]] = {}  # service key -> task id -> at
        self._told: dict[str, dict[str, float]] = {}  # failures of closed incidents
        self._errors: dict[str, str] = {}  # service key -> newest error
        self._bad_since: dict[str, float] = {}
        self._good_since: dict[str, float] = {}
        self._apps_on: dict[str, set[str]] = {}  # node key -> the stacks seen running there

    def restore(self, incidents: Iterable[Incident], now: float) -> None:
        """Incidents open before a restart: still open, not announced again."""
        for incident in incidents:
            self.open[incident.key] = incident
            self._bad_since.setdefault(incident.key, now)

    # -- the one way state changes: a condition is bad (with a summary) or good

    def _judge(
        self,
        key: str,
        server: str,
        kind: str,
        subject: str,
        summary: str | None,
        urgent: bool,
        now: float,
        *,
        open_after: float = 0.0,
        close_after: float | None = None,
    ) -> Decision | None:
        """`summary` None: the condition is good now. An incident opens once bad has
        lasted `open_after`, and closes once good has lasted `close_after`."""
        current = self.open.get(key)
        if summary is not None:
            self._good_since.pop(key, None)
            since = self._bad_since.setdefault(key, now)
            if current is None:
                if now - since < open_after:
                    return None
                incident = Incident(key, server, kind, subject, summary, urgent, now)
                self.open[key] = incident
                return Decision("open", incident, now)
            if current.summary != summary or current.urgent != urgent:
                self.open[key] = replace(current, summary=summary, urgent=urgent)
                return Decision("update", self.open[key], now)
            return None
        self._bad_since.pop(key, None)
        if current is None:
            self._good_since.pop(key, None)
            return None
        good = self._good_since.setdefault(key, now)
        wait = self.t.recover_after if close_after is None else close_after
        if now - good < wait:
            return None
        del self.open[key]
        self._good_since.pop(key, None)
        return Decision("close", current, now)

    # -- inputs

    def snapshot(self, server: str, snap: SwarmSnapshot) -> list[Decision]:
        now = snap.at
        out: list[Decision | None] = []
        seen_services = set()
        for service in snap.services:
            seen_services.add(service.name)
            out += self._service(server, service, now)
        seen_nodes = set()
        for node in snap.nodes:
            seen_nodes.add(node.hostname)
            summary = None
            urgent = False
            node_key = key_of(server, "node", node.hostname)
            apps = {s.stack for s in snap.services if node.id in s.nodes and s.stack}
            if node.state == "ready":
                self._apps_on[node_key] = apps
            else:
                # What ran there when it was last ready, and what swarm still places there.
                apps |= self._apps_on.get(node_key, set())
            if node.state != "ready":
                summary, urgent = f"node **{node.hostname}** is {node.state}", True
                if apps:
                    summary += "; apps that ran there: " + ", ".join(map(code, sorted(apps)))
            elif node.availability != "active":
                summary = f"node **{node.hostname}** is set to {node.availability}"
            out.append(
                self._judge(
                    node_key,
                    server,
                    "node",
                    node.hostname,
                    summary,
                    urgent,
                    now,
                )
            )
        # What is gone from the swarm (a removed stack or node) is not wrong any more.
        for key, incident in list(self.open.items()):
            gone = (
                incident.kind in ("task", "converge") and incident.subject not in seen_services
            ) or (incident.kind == "node" and incident.subject not in seen_nodes)
            if incident.server == server and gone:
                out.append(
                    self._judge(
                        key,
                        server,
                        incident.kind,
                        incident.subject,
                        None,
                        False,
                        now,
                        close_after=0,
                    )
                )
        return [d for d in out if d is not None]

    def _service(self, server: str, service: ServiceState, now: float) -> list[Decision | None]:
        task_key = key_of(server, "task", service.name)
        seen = self._failures.setdefault(task_key, {})
        told = self._told.setdefault(task_key, {})
        for failed in service.failed:
            if failed.at > now - self.t.window and failed.id not in told:
                if failed.id not in seen:
                    self._good_since.pop(task_key, None)  # a new failure: not recovered
                seen[failed.id] = failed.at
                if failed.error:
                    self._errors[task_key] = failed.error
        for failures in (seen, told):
            for task_id, at in list(failures.items()):
                if at <= now - self.t.window:
                    del failures[task_id]
        count = len(seen)
        newest = max(seen.values(), default=None)
        short = service.running < (service.desired or 0)
        if task_key in self.open:
            # Open: bad while failures keep coming or replicas are missing; the quiet
            # time since the newest failure is the hysteresis (a loop looks fine
            # between two crashes).
            failing = short or (newest is not None and now - newest < self.t.recover_after)
        else:
            failing = count >= self.t.failures
        task_summary = None
        if failing:
            task_summary = (
                f"**{service.name}**: {count} task failure(s) in {self.t.window / 60:g} min"
            )
            if self._errors.get(task_key):
                task_summary += f"; last error: `{self._errors[task_key]}`"
        task = self._judge(
            task_key, server, "task", service.name, task_summary, True, now, close_after=0.0
        )
        if task is not None and task.action == "close":
            # Failures of a closed incident are told: they never open the next one.
            told.update(seen)
            seen.clear()
        # Stopped converging: paused, or short of replicas for converge_timeout. A crash
        # loop is the task incident's: one message for one cause.
        conv_key = key_of(server, "converge", service.name)
        conv_summary = None
        if task_key not in self.open:
            if service.update_state in STUCK_STATES:
                conv_summary = f"**{service.name}**: update {service.update_state}"
                if service.update_message:
                    conv_summary += f" ({service.update_message})"
            elif short:
                conv_summary = (
                    f"**{service.name}**: {service.running}/{service.desired} running "
                    f"for over {self.t.converge_timeout / 60:g} min"
                )
        stuck = service.update_state in STUCK_STATES
        conv = self._judge(
            conv_key,
            server,
            "converge",
            service.name,
            conv_summary,
            False,
            now,
            open_after=0.0 if stuck else self.t.converge_timeout,
        )
        return [task, conv]

    def disks(self, server: str, disks: Iterable[Disk], now: float) -> list[Decision]:
        out = []
        for disk in disks:
            key = key_of(server, "disk", disk.path)
            percent = disk.percent
            limit = self.t.disk_percent - (DISK_MARGIN if key in self.open else 0.0)
            summary = None
            if percent >= limit:
                summary = (
                    f"disk of **{disk.path}** {percent:.0f}% full "
                    f"({human_bytes(disk.total - disk.used)} free)"
                )
            decision = self._judge(
                key,
                server,
                "disk",
                disk.path,
                summary,
                percent >= self.t.disk_critical,
                now,
                close_after=0.0,
            )
            if decision is not None:
                out.append(decision)
        return out

    def alert(self, server: str, name: str, summary: str | None, now: float) -> list[Decision]:
        """An external alert (Alertmanager): `summary` while firing, None when resolved."""
        decision = self._judge(
            key_of(server, "alert", name),
            server,
            "alert",
            name,
            summary,
            True,
            now,
            close_after=0.0,
        )
        return [] if decision is None else [decision]
