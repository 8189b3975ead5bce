"""Benchmarks of otel-context: app overhead, conversion and sidecar throughput, memory, delivery.

Run `python -m bench` (or `python -m bench --quick` for a smoke run); see `bench/__main__.py`.
"""
