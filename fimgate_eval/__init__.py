"""Evaluation of fimgate (``fimgate eval``, the benchmarks' readers and scorers), kept out of the
runtime package: it may import fimgate, fimgate imports none of it (tests/test_layout.py)."""
