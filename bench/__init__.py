"""Benchmark harness of roitrack: throughput, latency, Redis memory, scaling and a profile.

Run it with ``make bench`` or ``python -m bench``; docs/benchmarks.md describes
the method and the latest results.
"""
