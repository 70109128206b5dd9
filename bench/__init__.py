"""Benchmarks: each figure named in the issues, printed beside a baseline measured in the same run.

Run them with `make bench` (or `.venv/bin/python -m bench.NAME`); see bench/README.md.
"""
