"""Command-line tools for scripts and CI pipelines."""
