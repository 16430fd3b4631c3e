"""``python -m bench.train``: train one config (one process, or data-parallel ranks), with profiling."""
