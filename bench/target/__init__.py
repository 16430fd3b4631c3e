"""Time to a target quality (MLPerf Training's measurement): seeded runs inside a cell process
(:mod:`bench.target.runs`) and their scoring (:mod:`bench.target.scoring`, no torch)."""
