"""``python -m bench.compare``: two results folders, cell by cell."""
