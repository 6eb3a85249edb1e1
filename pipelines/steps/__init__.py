"""Step code: what the pipelines' components run, each also runnable on its own from a JSON spec."""
