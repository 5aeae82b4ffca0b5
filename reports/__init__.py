"""Reports generated from result files by a command (kernel benchmarks, the scaling study)."""
