"""``python -m bench.trace``: a torch.profiler trace's breakdown by phase and kernel."""
