"""Studies that measure the search itself (fidelity_runs: cheap evaluations)."""
