"""Benchmarks: accuracy on pair lists and per-stage speed, recorded in docs/BENCHMARKS.md."""
