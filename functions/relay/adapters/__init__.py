"""Adapters: the real implementations of Relay's ports."""
