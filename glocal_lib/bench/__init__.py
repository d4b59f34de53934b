"""Benchmarks with recorded outputs (results/benchmarks/): run as ``python -m glocal_lib.bench.<name>``."""
