"""Adapters to the outside world (abra files, recipe repos, swarm, restic),
each behind a small interface."""
