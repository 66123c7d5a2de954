"""The numeric layer (torch): canonical weights, the reference forward pass and its trace.

Public names: :class:`Weights` (with :func:`weight_shapes`), :func:`run`,
:class:`Trace`, :class:`NormTrace`, :class:`TokenError`. Adapters to real
implementations live in ``circuitproof.numeric.adapters``; causal interventions
(zero- and mean-ablation, activation patching) in ``circuitproof.numeric.interventions``;
hand-built circuits (previous-token, copy, duplicate-token, induction) in
``circuitproof.numeric.circuits``; head signatures (copying, previous-token,
duplicate-token, induction, Q/K/V composition, positional QK: ``head_table``) in
``circuitproof.numeric.signatures``. This layer never imports sympy at module level.
"""

from ._trace import NormTrace, Trace
from ._weights import Weights, weight_shapes
from .reference import TokenError, run

__all__ = ["Weights", "weight_shapes", "run", "Trace", "NormTrace", "TokenError"]
