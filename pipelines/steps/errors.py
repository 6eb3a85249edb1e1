"""StepError, in a module of its own: the contract, the gate and every step raise it, and none of them need the
others to do so (it lived in contract.py, which made contract -> gate -> egress -> contract a circle)."""

from __future__ import annotations


class StepError(Exception):
    """Ends a step with `status` (4xx: the request was wrong; 5xx: something failed on the way)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
