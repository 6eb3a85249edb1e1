"""Benchmarks run by `make bench`: measured against a baseline in the same run, reported as ratios."""
