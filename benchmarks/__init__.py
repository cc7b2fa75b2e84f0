"""Benchmarks of interplay: throughput on the real engine (throughput.py, `make bench`) and the orchestration
overhead alone with a zero-latency fake engine (orchestration.py). Not part of the installed package."""
