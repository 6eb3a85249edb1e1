"""`python -m pipelines.steps.ratchet spec.json result.json`."""

from pipelines.steps.contract import main
from pipelines.steps.ratchet.step import ratchet

if __name__ == "__main__":
    raise SystemExit(main(ratchet))
