"""``python -m bench.overhead``: the harness's throughput against a bare PyTorch loop, in paired rounds."""
