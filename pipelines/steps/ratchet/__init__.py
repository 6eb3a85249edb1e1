"""The ratchet step: export algorithms to a destination, validate them, benchmark them against a bar that only rises.

Pure parts: `workflow` (the seed's workflow file), `placeholders` (`.my` and `<algo>` rewriting) and `baseline`
(the ratchet decision); I/O: `export` (the source), `clusters` (the destination), `ledger` (the results location);
`stages` runs them in order and `step` is the step contract's entry point.
"""
