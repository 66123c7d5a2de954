"""The verify layer: runs claims on a target and reports verdicts.

Will hold ``audit(model, tokens=None, *, dtype=torch.float64, seed=0) -> Report``
(PASS / FAIL / NOT_APPLICABLE / INCONCLUSIVE per claim, with the measured error),
the ``circuitproof verify`` command line and the pytest plugin.
"""

__all__: list[str] = []
