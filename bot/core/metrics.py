"""Prometheus metrics, in a registry of their own so several bots (tests) can coexist."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "coopbot_commands",
            "Commands received, by outcome",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "coopbot_jobs",
            "Jobs finished, by final state",
            ["command", "state"],
            registry=self.registry,
        )
        self.jobs_active = Gauge(
            "coopbot_jobs_active", "Jobs waiting or running", registry=self.registry
        )
        self.failures = Counter(
            "coopbot_failures", "Unexpected errors (incidents)", registry=self.registry
        )
        self.sync_lag = Gauge(
            "coopbot_sync_lag_seconds",
            "Seconds between a command's origin timestamp and the bot receiving it",
            registry=self.registry,
        )
        self.last_sync = Gauge(
            "coopbot_last_sync_timestamp_seconds",
            "Unix time of the last successful sync with the homeserver",
            registry=self.registry,
        )
        self.backups = Counter(
            "coopbot_backups",
            "Backup runs, by result (ok, warning, failed)",
            ["result"],
            registry=self.registry,
        )
        self.backup_last_good = Gauge(
            "coopbot_backup_last_good_timestamp_seconds",
            "Unix time of each app's newest good backup run (alert on its age)",
            ["app"],
            registry=self.registry,
        )
        # App label values are domains: no credentials, no repository URL.
        self.backup_repository_bytes = Gauge(
            "coopbot_backup_repository_bytes",
            "Repository data each app's snapshots reference (restic stats, raw-data)",
            ["app"],
            registry=self.registry,
        )
        self.backup_retention_paused = Gauge(
            "coopbot_backup_retention_paused",
            "1 while an app's retention waits for !backup accept after a suspect backup",
            ["app"],
            registry=self.registry,
        )
