"""Relay: one trigger file or message becomes exactly one Kubeflow Pipelines run."""
