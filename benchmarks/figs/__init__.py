"""One module per area: each declares FIGURES (and CHECKED_DOCS) for benchmarks/figures.py."""
