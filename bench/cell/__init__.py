"""``python -m bench.cell SPEC RESULT``: one cell's process (also how older revisions' cells start)."""
