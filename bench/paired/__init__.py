"""The paired-rounds engine: is B faster than A? Interleaved rounds, retakes, the paired estimator and the verdict."""
