"""``python -m bench.tune``: the budgeted search for the fastest configuration, and its report."""
