"""``python -m bench.run``: the matrix runner (the CLI is ``__main__``; the runner is ``runner``)."""
