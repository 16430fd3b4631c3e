"""``python -m bench.ab``: paired A/B of two configs or two git revisions."""
