"""Inference cells (``measure.mode: inference``): a runtime's latency and items/s with parity as the guard."""
