"""``python -m bench.history``: the SQLite results history, its regression check and bisection."""
