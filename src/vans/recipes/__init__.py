"""End-to-end recipes: the paper's method run from nothing to its results table."""
