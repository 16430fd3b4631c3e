"""``python -m bench.recipe_race``: two recipes trained for the same wall time, compared on quality."""
