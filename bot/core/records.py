"""What the store keeps, as typed rows: jobs and their states, proposals with the plan
members voted on, votes, audit entries, incidents. bot/core/store.py reads and writes
them; everything else reads them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class JobState(StrEnum):
    """A job's life: waiting (for its app's lock) → running → one of the ends."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"  # open when the bot stopped


OPEN_JOB_STATES = (JobState.WAITING, JobState.RUNNING)


def job_thread_key(job_id: int) -> str:
    """The store key (kv) of the thread a job reports in: set once its progress
    message exists, read after a crash to tell that thread what became of it."""
    return f"job.{job_id}.thread"


@dataclass(frozen=True)
class JobRow:
    id: int
    command: str
    text: str
    app: str | None
    sender: str
    room_id: str
    event_id: str
    state: JobState
    result: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class StoredPlan:
    """What members voted on, kept with the proposal: the summary they read, the
    state it depends on, and the argument values it runs with (the exact version,
    snapshot, ...), so nothing that changes after the vote changes what runs."""

    summary: str
    fingerprint: str
    pins: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        plan = {"summary": self.summary, "fingerprint": self.fingerprint, "pins": self.pins}
        return json.dumps(plan)

    @classmethod
    def decode(cls, text: str) -> StoredPlan:
        data = json.loads(text)
        return cls(data["summary"], data["fingerprint"], data.get("pins") or {})


@dataclass(frozen=True)
class ProposalRow:
    id: str
    command: str
    text: str
    app: str | None
    policy: str
    plan: StoredPlan
    requester: str
    room_id: str
    event_id: str
    message_id: str | None
    state: str
    created_at: float
    expires_at: float
    decided_at: float | None
    thread_root: str | None = None  # the thread the command was asked in, if any
    reason: str | None = None  # why the member asks for it (`!undeploy app -- why`)
    run_at: float | None = None  # approved, held until then by the policy's delay
    reminded: bool = False  # the half-time reminder was sent


@dataclass(frozen=True)
class VoteRow:
    event_id: str
    proposal_id: str
    voter: str
    choice: str
    source: str  # "reaction" or "text"
    cast_at: float


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: float
    actor: str
    action: str
    app: str | None
    room_id: str | None
    event_id: str | None
    detail: str


class Held(IntEnum):
    """How an incident was told: its own message, held for the digest, in a digest."""

    SENT = 0
    HELD = 1
    DIGEST = 2


@dataclass(frozen=True)
class IncidentRow:
    id: int
    key: str  # what it is about, e.g. "default/task/demo_app": one open row per key
    server: str
    kind: str  # "task", "converge", "node", "disk", "alert"
    subject: str
    summary: str
    urgent: bool
    opened_at: float
    updated_at: float
    closed_at: float | None
    room_id: str | None
    message_id: str | None
    held: Held
