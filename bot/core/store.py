"""SQLite state: sync token, seen events, jobs, proposals, votes, audit, deploys.

Queries run on the event loop on purpose: each is a local, indexed, sub-millisecond
statement in WAL mode, cheaper than the thread hop `to_thread` would add. Slow
work (docker, git, restic) never happens here.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from bot.core.records import (
    OPEN_JOB_STATES,
    AuditRow,
    Held,
    IncidentRow,
    JobRow,
    JobState,
    ProposalRow,
    StoredPlan,
    VoteRow,
)
from bot.core.store_backups import BackupHealthRows
from bot.core.storefull import Guarded, connect

# Append only: each entry upgrades the schema by one version (PRAGMA user_version).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE seen_events (
        event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, seen_at REAL NOT NULL);
    CREATE INDEX seen_events_at ON seen_events (seen_at);
    CREATE TABLE rooms (room_id TEXT PRIMARY KEY, joined_at_ms INTEGER NOT NULL);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        command TEXT NOT NULL, text TEXT NOT NULL, app TEXT,
        sender TEXT NOT NULL, room_id TEXT NOT NULL, event_id TEXT NOT NULL,
        state TEXT NOT NULL, result TEXT,
        created_at REAL NOT NULL, started_at REAL, finished_at REAL);
    CREATE INDEX jobs_state ON jobs (state);
    CREATE TABLE proposals (
        id TEXT PRIMARY KEY, command TEXT NOT NULL, text TEXT NOT NULL, app TEXT,
        policy TEXT NOT NULL, plan TEXT NOT NULL,
        requester TEXT NOT NULL, room_id TEXT NOT NULL, event_id TEXT NOT NULL,
        message_id TEXT, state TEXT NOT NULL,
        created_at REAL NOT NULL, expires_at REAL NOT NULL, decided_at REAL);
    CREATE INDEX proposals_message ON proposals (message_id);
    CREATE TABLE votes (
        event_id TEXT PRIMARY KEY,
        proposal_id TEXT NOT NULL REFERENCES proposals (id), voter TEXT NOT NULL,
        choice TEXT NOT NULL, source TEXT NOT NULL, cast_at REAL NOT NULL);
    CREATE INDEX votes_proposal ON votes (proposal_id);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
        actor TEXT NOT NULL, action TEXT NOT NULL, app TEXT,
        room_id TEXT, event_id TEXT, detail TEXT NOT NULL DEFAULT '');
    CREATE INDEX audit_app ON audit (app, id);
    CREATE TABLE deploys (
        id INTEGER PRIMARY KEY AUTOINCREMENT, app TEXT NOT NULL, server TEXT,
        version TEXT, previous_version TEXT, chaos INTEGER NOT NULL DEFAULT 0,
        actor TEXT NOT NULL, job_id INTEGER, result TEXT NOT NULL, detail TEXT,
        at REAL NOT NULL);
    CREATE INDEX deploys_app ON deploys (app, id);
    """,
    # The thread a proposal was asked in: the approved job reports there.
    """
    ALTER TABLE proposals ADD COLUMN thread_root TEXT;
    """,
    # Backup runs: what !backups reports and max_age alerts read.
    """
    CREATE TABLE backups (
        id INTEGER PRIMARY KEY AUTOINCREMENT, app TEXT NOT NULL, actor TEXT NOT NULL,
        started_at REAL NOT NULL, finished_at REAL, result TEXT NOT NULL,
        snapshot_id TEXT, version TEXT, files_new INTEGER, files_changed INTEGER,
        files_unmodified INTEGER, data_added INTEGER, total_bytes INTEGER,
        detail TEXT);
    CREATE INDEX backups_app ON backups (app, id);
    """,
    # Incidents of the swarm watch (one open row per key: the partial unique index),
    # and the webhook deliveries already handled (replays are refused).
    """
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, server TEXT NOT NULL,
        kind TEXT NOT NULL, subject TEXT NOT NULL, summary TEXT NOT NULL,
        urgent INTEGER NOT NULL, opened_at REAL NOT NULL, updated_at REAL NOT NULL,
        closed_at REAL, room_id TEXT, message_id TEXT, held INTEGER NOT NULL DEFAULT 0);
    CREATE UNIQUE INDEX incidents_open_key ON incidents (key) WHERE closed_at IS NULL;
    CREATE TABLE hook_deliveries (
        hook TEXT NOT NULL, delivery TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (hook, delivery));
    """,
    # Proposals: the member's reason, the time an approved one may run (a policy's
    # delay), and whether the half-time reminder went out.
    """
    ALTER TABLE proposals ADD COLUMN reason TEXT;
    ALTER TABLE proposals ADD COLUMN run_at REAL;
    ALTER TABLE proposals ADD COLUMN reminded INTEGER NOT NULL DEFAULT 0;
    """,
    # Backups that hold data: each run's pre-hook output size and the app's repository
    # size (restic stats), and per app the accepted baseline and a retention pause.
    """
    ALTER TABLE backups ADD COLUMN hook_bytes INTEGER;
    ALTER TABLE backups ADD COLUMN repo_bytes INTEGER;
    CREATE TABLE backup_health (
        app TEXT PRIMARY KEY, files INTEGER, bytes INTEGER, hook_bytes INTEGER,
        paused TEXT, paused_at REAL, updated_at REAL NOT NULL, updated_by TEXT);
    """,
    # An upgrade of the bot's own app restarts the bot mid-job: what the next start
    # reports, in which thread (bot/features/self_app.py).
    """
    CREATE TABLE self_upgrades (
        id INTEGER PRIMARY KEY AUTOINCREMENT, app TEXT NOT NULL, job_id INTEGER,
        room_id TEXT, thread TEXT, target TEXT NOT NULL, previous TEXT, actor TEXT NOT NULL,
        at REAL NOT NULL, reported_at REAL, result TEXT);
    """,
]

# Seen event ids older than this are forgotten: by then the sync token and the
# joined-at/age checks already keep those events out.
SEEN_RETENTION_S = 14 * 86400


class Store(BackupHealthRows):
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(str(path))  # a full disk: see storefull.py
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            self._db.close()
            raise RuntimeError(
                f"the database schema ({version}) is newer than this coopbot "
                f"({len(MIGRATIONS)}): upgrade coopbot"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._db:  # one transaction per migration
                self._db.execute("BEGIN")
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def problems(self) -> list[str]:
        """For /healthz: a full data disk (until a write goes through again)."""
        if not (isinstance(self._db, Guarded) and self._db.full):
            return []
        return [
            "the disk of the bot's data folder is full: jobs are refused, reads still "
            "answer; free space in data_dir"
        ]

    # -- key/value ---------------------------------------------------------
    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get_json(self, key: str) -> Any:
        value = self.get(key)
        return None if value is None else json.loads(value)

    def put_json(self, key: str, value: Any) -> None:
        self.put(key, json.dumps(value))

    # -- events --------------------------------------------------------------
    def mark_seen(self, event_id: str, room_id: str) -> bool:
        """Record an event; False if it was already seen (so it must not run again)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO seen_events (event_id, room_id, seen_at) VALUES (?, ?, ?)",
            (event_id, room_id, time.time()),
        )
        return cursor.rowcount == 1

    def forget_old_events(self, now: float | None = None) -> None:
        cutoff = (now or time.time()) - SEEN_RETENTION_S
        self._db.execute("DELETE FROM seen_events WHERE seen_at < ?", (cutoff,))

    def forget_old_job_keys(self, now: float | None = None) -> int:
        """The kv keys of jobs (`job.<id>.…`: thread, deploy checkpoint) are only read
        after a crash, for a job left open: those of jobs finished long ago go."""
        cutoff = (now or time.time()) - SEEN_RETENTION_S
        cursor = self._db.execute(
            "DELETE FROM kv WHERE key LIKE 'job.%' AND CAST(substr(key, 5, "
            "instr(substr(key, 5), '.') - 1) AS INTEGER) IN "
            "(SELECT id FROM jobs WHERE finished_at < ?)",
            (cutoff,),
        )
        return cursor.rowcount

    def room_joined_at(self, room_id: str) -> int | None:
        row = self._db.execute(
            "SELECT joined_at_ms FROM rooms WHERE room_id = ?", (room_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def set_room_joined_at(self, room_id: str, joined_at_ms: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO rooms (room_id, joined_at_ms) VALUES (?, ?)",
            (room_id, joined_at_ms),
        )

    # -- jobs ------------------------------------------------------------------
    def add_job(
        self, command: str, text: str, app: str | None, sender: str, room_id: str, event_id: str
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO jobs (command, text, app, sender, room_id, event_id, state, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (command, text, app, sender, room_id, event_id, JobState.WAITING, time.time()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def set_job_state(self, job_id: int, state: JobState, result: str | None = None) -> None:
        now = time.time()
        if state == JobState.RUNNING:
            self._db.execute(
                "UPDATE jobs SET state = ?, started_at = ? WHERE id = ?", (state, now, job_id)
            )
        else:
            self._db.execute(
                "UPDATE jobs SET state = ?, result = ?, finished_at = ? WHERE id = ?",
                (state, result, now, job_id),
            )

    def job(self, job_id: int) -> JobRow | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job_row(row)

    def jobs(self, states: tuple[JobState, ...] = (), limit: int = 50) -> list[JobRow]:
        if states:
            marks = ",".join("?" * len(states))
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id DESC LIMIT ?",
                (*states, limit),
            )
        else:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        return [_job_row(row) for row in rows]

    def interrupt_unfinished_jobs(self) -> list[JobRow]:
        """Jobs a previous process left waiting or running: mark and return them."""
        unfinished = self.jobs(OPEN_JOB_STATES, limit=1000)
        for job in unfinished:
            self.set_job_state(
                job.id, JobState.INTERRUPTED, "the bot stopped while this job was open"
            )
        return unfinished

    # -- proposals and votes ---------------------------------------------------
    def add_proposal(self, row: ProposalRow) -> None:
        self._db.execute(
            "INSERT INTO proposals (id, command, text, app, policy, plan, requester, room_id, "
            "event_id, message_id, state, created_at, expires_at, decided_at, thread_root, "
            "reason, run_at, reminded) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                row.command,
                row.text,
                row.app,
                row.policy,
                row.plan.encode(),
                row.requester,
                row.room_id,
                row.event_id,
                row.message_id,
                row.state,
                row.created_at,
                row.expires_at,
                row.decided_at,
                row.thread_root,
                row.reason,
                row.run_at,
                int(row.reminded),
            ),
        )

    def set_proposal_run_at(self, proposal_id: str, run_at: float | None) -> None:
        self._db.execute("UPDATE proposals SET run_at = ? WHERE id = ?", (run_at, proposal_id))

    def set_proposal_expires_at(self, proposal_id: str, expires_at: float) -> None:
        self._db.execute(
            "UPDATE proposals SET expires_at = ? WHERE id = ?", (expires_at, proposal_id)
        )

    def set_proposal_reminded(self, proposal_id: str) -> None:
        self._db.execute("UPDATE proposals SET reminded = 1 WHERE id = ?", (proposal_id,))

    def set_proposal_message(self, proposal_id: str, message_id: str) -> None:
        self._db.execute(
            "UPDATE proposals SET message_id = ? WHERE id = ?", (message_id, proposal_id)
        )

    def set_proposal_state(self, proposal_id: str, state: str, at: float) -> None:
        self._db.execute(
            "UPDATE proposals SET state = ?, decided_at = ? WHERE id = ?", (state, at, proposal_id)
        )

    def proposal(self, proposal_id: str) -> ProposalRow | None:
        row = self._db.execute("SELECT * FROM proposals WHERE id = ?", (proposal_id,)).fetchone()
        return None if row is None else _proposal_row(row)

    def proposal_for_message(self, message_id: str) -> ProposalRow | None:
        row = self._db.execute(
            "SELECT * FROM proposals WHERE message_id = ?", (message_id,)
        ).fetchone()
        return None if row is None else _proposal_row(row)

    def proposals(self, state: str = "open") -> list[ProposalRow]:
        rows = self._db.execute(
            "SELECT * FROM proposals WHERE state = ? ORDER BY created_at", (state,)
        )
        return [_proposal_row(row) for row in rows]

    def add_vote(self, vote: VoteRow) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO votes VALUES (?, ?, ?, ?, ?, ?)",
            (vote.event_id, vote.proposal_id, vote.voter, vote.choice, vote.source, vote.cast_at),
        )

    def remove_vote(self, event_id: str, room_id: str | None = None) -> str | None:
        """Withdraw the vote cast by this event (only if its proposal is in room_id,
        when given: a redaction redacts events of its own room); returns its proposal id."""
        if room_id is None:
            cursor = self._db.execute(
                "DELETE FROM votes WHERE event_id = ? RETURNING proposal_id", (event_id,)
            )
        else:
            cursor = self._db.execute(
                "DELETE FROM votes WHERE event_id = ? AND proposal_id IN "
                "(SELECT id FROM proposals WHERE room_id = ?) RETURNING proposal_id",
                (event_id, room_id),
            )
        row = cursor.fetchone()
        return None if row is None else str(row[0])

    def votes(self, proposal_id: str) -> list[VoteRow]:
        rows = self._db.execute(
            "SELECT * FROM votes WHERE proposal_id = ? ORDER BY cast_at", (proposal_id,)
        )
        return [VoteRow(**dict(row)) for row in rows]

    def replace_reaction_votes(self, proposal_id: str, votes: list[VoteRow]) -> None:
        """The server's current reactions replace what we had (text votes stay)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM votes WHERE proposal_id = ? AND source = 'reaction'", (proposal_id,)
            )
            for vote in votes:
                self.add_vote(vote)

    # -- audit -----------------------------------------------------------------
    def audit(
        self,
        actor: str,
        action: str,
        detail: str = "",
        *,
        app: str | None = None,
        room_id: str | None = None,
        event_id: str | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO audit (at, actor, action, app, room_id, event_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), actor, action, app, room_id, event_id, detail),
        )

    def audit_log(self, app: str | None = None, limit: int = 20) -> list[AuditRow]:
        if app is None:
            rows = self._db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(
                "SELECT * FROM audit WHERE app = ? ORDER BY id DESC LIMIT ?", (app, limit)
            )
        return [AuditRow(**dict(row)) for row in rows]

    # -- deploy history --------------------------------------------------------
    def add_deploy(
        self,
        app: str,
        version: str | None,
        actor: str,
        result: str,
        *,
        server: str | None = None,
        previous_version: str | None = None,
        chaos: bool = False,
        job_id: int | None = None,
        detail: str | None = None,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO deploys (app, server, version, previous_version, chaos, actor, job_id, "
            "result, detail, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                app,
                server,
                version,
                previous_version,
                int(chaos),
                actor,
                job_id,
                result,
                detail,
                time.time(),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def deploys(self, app: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM deploys WHERE app = ? ORDER BY id DESC LIMIT ?", (app, limit)
        )
        return [dict(row) for row in rows]

    # -- backup runs -----------------------------------------------------------
    def add_backup(self, app: str, actor: str, result: str, **fields: Any) -> int:
        """Record one backup run; `fields` are the other columns of `backups`."""
        allowed = {
            "started_at",
            "finished_at",
            "snapshot_id",
            "version",
            "files_new",
            "files_changed",
            "files_unmodified",
            "data_added",
            "total_bytes",
            "detail",
            "hook_bytes",
            "repo_bytes",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown backup fields: {sorted(unknown)}")
        fields.setdefault("started_at", time.time())
        columns = ["app", "actor", "result", *fields]
        cursor = self._db.execute(
            f"INSERT INTO backups ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})",
            (app, actor, result, *fields.values()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def backups(self, app: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM backups WHERE app = ? ORDER BY id DESC LIMIT ?", (app, limit)
        )
        return [dict(row) for row in rows]

    def last_backups(self) -> dict[str, dict[str, dict[str, Any] | None]]:
        """Per app: its newest run ("last") and newest good run ("good", or None)."""
        result: dict[str, dict[str, dict[str, Any] | None]] = {}
        newest = "SELECT * FROM backups WHERE id IN (SELECT MAX(id) FROM backups {} GROUP BY app)"
        for row in self._db.execute(newest.format("")):
            result[row["app"]] = {"last": dict(row), "good": None}
        for row in self._db.execute(newest.format("WHERE result IN ('ok', 'warning')")):
            result[row["app"]]["good"] = dict(row)
        return result

    # -- incidents (the swarm watch) ----------------------------------------
    def open_incident(
        self, key: str, server: str, kind: str, subject: str, summary: str, urgent: bool, at: float
    ) -> IncidentRow:
        """A new open incident; sqlite3.IntegrityError if one is open for `key`."""
        cursor = self._db.execute(
            "INSERT INTO incidents (key, server, kind, subject, summary, urgent, opened_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, server, kind, subject, summary, int(urgent), at, at),
        )
        row = self.incident(int(cursor.lastrowid or 0))
        assert row is not None
        return row

    def update_incident(self, incident_id: int, summary: str, urgent: bool, at: float) -> None:
        self._db.execute(
            "UPDATE incidents SET summary = ?, urgent = ?, updated_at = ? WHERE id = ?",
            (summary, int(urgent), at, incident_id),
        )

    def set_incident_message(
        self, incident_id: int, room_id: str | None, message_id: str | None, held: Held
    ) -> None:
        self._db.execute(
            "UPDATE incidents SET room_id = ?, message_id = ?, held = ? WHERE id = ?",
            (room_id, message_id, int(held), incident_id),
        )

    def close_incident(self, incident_id: int, at: float) -> None:
        self._db.execute(
            "UPDATE incidents SET closed_at = ?, updated_at = ? WHERE id = ?",
            (at, at, incident_id),
        )

    def incident(self, incident_id: int) -> IncidentRow | None:
        row = self._db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return None if row is None else _incident_row(row)

    def open_incidents(self) -> list[IncidentRow]:
        rows = self._db.execute("SELECT * FROM incidents WHERE closed_at IS NULL ORDER BY id")
        return [_incident_row(r) for r in rows]

    def held_incidents(self) -> list[IncidentRow]:
        """Incidents held for the digest (open or closed since), oldest first."""
        rows = self._db.execute("SELECT * FROM incidents WHERE held = ? ORDER BY id", (Held.HELD,))
        return [_incident_row(r) for r in rows]

    # -- upgrades of the bot's own app ----------------------------------------
    def add_self_upgrade(self, **fields: Any) -> int:
        """app, job_id, room_id, thread, target, previous, actor."""
        # The column names are the callers' keywords (bot/features/self_app.py), never
        # member text; the values are parameters.
        names, marks = ", ".join(fields), ", ".join("?" for _ in fields)
        cursor = self._db.execute(
            f"INSERT INTO self_upgrades ({names}, at) VALUES ({marks}, ?)",
            (*fields.values(), time.time()),
        )
        return int(cursor.lastrowid or 0)

    def pending_self_upgrade(self) -> dict[str, Any] | None:
        """The newest self-upgrade not yet reported, if any."""
        row = self._db.execute(
            "SELECT * FROM self_upgrades WHERE reported_at IS NULL ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else dict(row)

    def close_self_upgrades(self, result: str) -> None:
        """Every pending one is settled by this report (an older one was superseded)."""
        self._db.execute(
            "UPDATE self_upgrades SET reported_at = ?, result = ? WHERE reported_at IS NULL",
            (time.time(), result),
        )

    # -- webhook deliveries -------------------------------------------------
    def seen_delivery(self, hook: str, delivery: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM hook_deliveries WHERE hook = ? AND delivery = ?", (hook, delivery)
        ).fetchone()
        return row is not None

    def add_delivery(self, hook: str, delivery: str, at: float | None = None) -> bool:
        """Remember a handled delivery; False if it was already known (a replay)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO hook_deliveries (hook, delivery, at) VALUES (?, ?, ?)",
            (hook, delivery, time.time() if at is None else at),
        )
        return cursor.rowcount == 1


def _incident_row(row: sqlite3.Row) -> IncidentRow:
    data = dict(row)
    data["urgent"] = bool(data["urgent"])
    data["held"] = Held(data["held"])
    return IncidentRow(**data)


def _job_row(row: sqlite3.Row) -> JobRow:
    fields = dict(row)
    return JobRow(**{**fields, "state": JobState(fields["state"])})


def _proposal_row(row: sqlite3.Row) -> ProposalRow:
    """The one place a stored proposal is decoded."""
    fields = dict(row)
    fields["plan"] = StoredPlan.decode(fields["plan"])
    fields["reminded"] = bool(fields["reminded"])
    return ProposalRow(**fields)
