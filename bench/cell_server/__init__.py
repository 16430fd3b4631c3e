"""``python -m bench.cell_server``: forks a child per cell from a process that imported torch once."""
