"""``python -m bench.evaluate``: a checkpoint's metrics on the test split."""
