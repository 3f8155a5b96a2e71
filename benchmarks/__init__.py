"""Benchmarks: measured figures, never pass/fail tests (the README says how to run them)."""
