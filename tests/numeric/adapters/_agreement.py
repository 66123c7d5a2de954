"""Comparing two traces of the same model: the reference's and a real implementation's.

Errors are relative to the scale of the quantity compared: ``max|a - b| / max|b|``
(patterns are probabilities, their scale is 1). Every comparison reports the
worst field, its error and the tolerance, so that a failure says where.
"""

from __future__ import annotations

import torch

from circuitproof.numeric import Trace

# fields compared when both traces have them; a missing field on the real side is an error
COMPARED = ("logits", "resid_pre", "resid_mid", "resid_post", "pattern", "head_out", "attn_out", "mlp_out")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max|actual - expected| / max(max|expected|, tiny)``, in float64."""
    a, e = actual.double(), expected.double()
    if a.shape != e.shape:
        raise AssertionError(f"shapes differ: {list(a.shape)} vs {list(e.shape)}")
    scale = max(e.abs().max().item(), torch.finfo(torch.float64).tiny)
    return (a - e).abs().max().item() / scale


def trace_errors(real: Trace, ref: Trace, fields: tuple[str, ...] = COMPARED) -> dict[str, float]:
    """Relative error of each field present in ``ref`` (the real trace must have it too)."""
    out = {}
    for name in fields:
        expected = getattr(ref, name)
        if expected is None:
            continue
        actual = getattr(real, name)
        if actual is None:
            raise AssertionError(f"the real trace lacks {name!r}, which the reference has")
        out[name] = relative_error(actual, expected)
    return out


def assert_traces_agree(real: Trace, ref: Trace, rtol: float, fields: tuple[str, ...] = COMPARED) -> dict[str, float]:
    """Every compared field within ``rtol`` relative error; returns the errors (for ``note``)."""
    errors = trace_errors(real, ref, fields)
    worst = max(errors, key=errors.get)
    if errors[worst] > rtol:
        detail = ", ".join(f"{k}={v:.2e}" for k, v in errors.items())
        raise AssertionError(f"{worst} differs by {errors[worst]:.3e} relative (tolerance {rtol:g}); all: {detail}")
    return errors
