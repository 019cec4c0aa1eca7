"""Benchmarks: launch.bench runs methods side by side on real SGLang servers (see suite.py)."""
