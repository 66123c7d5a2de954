"""Trained models that ship with circuitproof: ground truth grown by gradient descent, not built by hand.

:func:`load_induction` returns the two-layer attention-only transformer trained by
``python -m circuitproof.numeric.trained.train_induction`` on repeated random sequences:
a previous-token head in layer 0, induction heads in layer 1 reading it through
K-composition (docs/trained-induction.md has the numbers). :func:`induction_record` is the
run's record (hyperparameters, losses, diagnostics per head, the first steps' losses and
the weights' sha256), written by the same script beside the weights.
"""

from __future__ import annotations

import json
from importlib import resources

from ...arch import Arch
from .._weights import Weights

__all__ = ["INDUCTION_RECORD", "INDUCTION_WEIGHTS", "induction_record", "load_induction"]

INDUCTION_WEIGHTS = "induction_2l.safetensors"
INDUCTION_RECORD = "induction_2l.json"


def load_induction() -> tuple[Arch, Weights]:
    """``(arch, weights)`` of the shipped induction model (float32, read from the installed package)."""
    with resources.as_file(resources.files(__name__) / INDUCTION_WEIGHTS) as path:
        weights = Weights.load(path)
    return weights.arch, weights


def induction_record() -> dict:
    """The training run's record (the JSON beside the weights)."""
    return json.loads((resources.files(__name__) / INDUCTION_RECORD).read_text())
