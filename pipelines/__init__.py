"""Relay's pipeline definitions, thin components, step code and the compiled catalog."""
