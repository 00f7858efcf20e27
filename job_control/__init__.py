"""What users do to jobs (create, run, cancel, retry, view): for the API, the CLI, the bridge
and the benchmarks."""
