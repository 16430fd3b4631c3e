"""Inside a cell's process: timing the Trainer's steps, data-parallel ranks, profiling, the forked server's child."""
