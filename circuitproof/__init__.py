"""circuitproof: prove, property-test and audit the claims of the Transformer Circuits Framework.

Public names: :class:`Arch` and the error hierarchy rooted at
:class:`CircuitproofError`. The layers live in the subpackages
``circuitproof.symbolic`` (sympy derivations), ``circuitproof.numeric``
(weights, the reference transformer, adapters), ``circuitproof.properties``
(claims and Hypothesis strategies) and ``circuitproof.verify`` (audits).
"""

from __future__ import annotations

__all__ = ["Arch", "CircuitproofError", "ShapeError", "WeightsError", "UnsupportedError"]
__version__ = "0.1.0"


class CircuitproofError(Exception):
    """Root of every error circuitproof raises on purpose; catch this to catch them all."""


class ShapeError(CircuitproofError, ValueError):
    """A tensor or matrix has the wrong shape.

    The message names the tensor, the expected and the actual shape. Cause: weights
    built for another Arch, or a transpose missing in a conversion. Fix: compare
    with ``circuitproof.numeric.weight_shapes(arch)``.
    """


class WeightsError(CircuitproofError, ValueError):
    """A set of weights is incomplete, has extra tensors, or mixes dtypes.

    Fix: build them from ``weight_shapes(arch)``, or use ``Weights.random``.
    """


class UnsupportedError(CircuitproofError, NotImplementedError):
    """A model, architecture feature or input that circuitproof cannot handle.

    The message names what is unsupported and lists what is.
    """


from .arch import Arch  # noqa: E402  (errors first: submodules import them)
