"""Launching a cell: its process, the forked server, revisions' worktrees, the executors (local, forked, submitit)."""
