"""The `relay` command: drop or publish triggers, follow the runs they become, check them against the catalog."""
