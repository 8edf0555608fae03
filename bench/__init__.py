"""Benchmarks of dyncert against baselines (static files, naive per-call contexts, openssl s_time).

Run: python -m bench [--quick] [--json]. Every figure is client-side, from one run, against
one loopback peer; paths alternate round by round and medians are quoted (shared, noisy machine).
"""
