"""``python -m bench.guard_audit``: every guard's false alarms and catches, measured."""
