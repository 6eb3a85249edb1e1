"""Mutation testing of Relay's core: `make mutate` (see run.py)."""
