"""Figures, sweeps, benchmarks and diagnostics; run each as ``python -m tools.<name>``."""
