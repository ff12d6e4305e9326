"""Benchmarks: parity, accuracy, latency, size and memory per artifact, plus the project's speed scripts."""
