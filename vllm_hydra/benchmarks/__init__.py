"""Benchmarks: workloads, the offline and HTTP drivers, metrics, baselines and summaries.

scripts/bench.py is the Hydra app; nothing here imports Hydra except `summary.py`, whose
Callback Hydra instantiates at the end of a sweep.
"""
