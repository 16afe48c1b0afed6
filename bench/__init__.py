"""Benchmarks (run directly, not under pytest)."""
