"""Weights against behaviour: where a weight-based prediction and the forward pass disagree, listed one by one.

Two predictions are checked, each computed from the weights by this package and compared
with a forward pass (the reference run of the probe, or a given trace):

- ``ov_prediction``: every layer-0 head's logit update predicted by its OV circuit given
  its pattern and the frozen norm divisors (:func:`ov_prediction`: token + position +
  bias parts) against ``head_out U / s_final`` from the trace. Exact up to rounding:
  a head disagrees when ``max |predicted - measured| > rtol * scale``, ``scale`` the
  largest magnitude of the parts and the measurement (two-sided: the error is
  symmetric in the two routes), ``rtol = 1e-10`` in float64 because the routes differ
  only in the order of a few products and sums (rounding ~1e-15 of their terms), so
  a missing term (a bias, a divisor, a position) moves the result by O(1), never 1e-10.
- ``positional_previous``: a head whose positional QK alone would make it a previous-token
  head (``positional_previous >= threshold``) against its measured previous-token score
  on the probe; they disagree when one is at or above ``threshold`` and the other below
  it. The positional prediction ignores the token content of the scores, so random
  heads may disagree: that is what the list is for.

Every disagreement is reported with its head, place and both numbers; nothing is
averaged over heads or positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...arch import Arch
from .._trace import Trace
from .._weights import Weights
from ..reference import run
from ._ov import ov_prediction
from ._positional import positional_qk
from ._table import probe_tokens

__all__ = ["Disagreement", "disagreements", "checked", "RTOL_OV", "RTOL_OV_REASON"]

RTOL_OV = 1e-10
RTOL_OV_REASON = ("float64: the prediction and the trace differ only in the order of a few products and sums (rounding ~1e-15 of "
                  "their terms); a missing term moves the logits by O(1)")


@dataclass(frozen=True)
class Disagreement:
    """One head where a weight-based prediction and the forward pass disagree.

    ``where`` locates the worst entry (``(batch, position, token)`` for the OV
    prediction, ``()`` for a per-head score); ``tolerance`` is relative for the OV
    prediction and the threshold for a score.
    """

    signature: str
    layer: int
    head: int
    where: tuple[int, ...]
    predicted: float
    measured: float
    error: float
    tolerance: float
    why: str

    def __str__(self) -> str:
        return (f"{self.signature} L{self.layer}H{self.head} at {self.where}: predicted {self.predicted:.6g}, measured "
                f"{self.measured:.6g} (error {self.error:.3g}, tolerance {self.tolerance:g}): {self.why}")


def _ov(arch: Arch, weights: Weights, trace: Trace, rtol: float) -> list[Disagreement]:
    out = []
    for h in range(arch.n_heads):
        p = ov_prediction(arch, weights, trace, h)
        parts = torch.stack([p.token.abs(), p.position.abs(), p.bias.abs(), p.measured.abs()])
        scale = float(parts.max())
        diff = (p.predicted - p.measured).abs()
        error = float(diff.max())
        if error > rtol * scale:
            where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
            out.append(Disagreement("ov_prediction", 0, h, where, float(p.predicted[where]), float(p.measured[where]), error / scale,
                                    rtol, "the OV circuit given the pattern and frozen divisors does not give the head's logit update"))
    return out


def _positional(arch: Arch, weights: Weights, trace: Trace, threshold: float) -> list[Disagreement]:
    from ._patterns import pattern_score

    predicted = positional_qk(arch, weights, n_pos=trace.tokens.shape[1]).previous_token()  # [L, H]
    measured = pattern_score("previous_token", trace.pattern.to(torch.float64), trace.tokens)  # [L, H]
    out = []
    for l in range(arch.n_layers):
        for h in range(arch.n_heads):
            p, m = float(predicted[l, h]), float(measured[l, h])
            if (p >= threshold) != (m >= threshold):
                why = ("the positional QK makes it a previous-token head, the forward pass does not (token content outweighs it)"
                       if p >= threshold else "a previous-token head in the forward pass that its positional QK does not explain")
                out.append(Disagreement("positional_previous", l, h, (), p, m, abs(p - m), threshold, why))
    return out


def disagreements(arch: Arch, weights: Weights, tokens: torch.Tensor | None = None, *, trace: Trace | None = None,
                  threshold: float = 0.5, rtol: float = RTOL_OV) -> list[Disagreement]:
    """Every head where a weight-based prediction of this package disagrees with the forward pass (module docstring).

    The forward pass is ``trace`` if given, else the reference run of ``tokens`` (default
    :func:`probe_tokens`). A prediction the architecture does not support (``ov_prediction``
    beyond pre-norm, or a nonlinear unembedding; ``positional_previous`` without positions
    or with QK-norm, or on a trace of one position, which has no previous token) is
    skipped, not counted as agreement: :func:`checked` lists what can run.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"disagreements: threshold={threshold!r} must lie in (0, 1)")
    if not rtol > 0:
        raise ValueError(f"disagreements: rtol={rtol!r} must be > 0")
    w = weights.to(torch.float64) if weights.dtype != torch.float64 else weights
    if trace is None:
        trace = run(arch, w, probe_tokens(arch) if tokens is None else tokens)
    out: list[Disagreement] = []
    for name, check in (("ov_prediction", lambda: _ov(arch, w, trace, rtol)),
                        ("positional_previous", lambda: _positional(arch, w, trace, threshold))):
        if name == "positional_previous" and trace.tokens.shape[1] < 2:
            continue  # one position: nothing to attend to but itself
        if name in checked(arch):
            out += check()
    return out


def checked(arch: Arch) -> tuple[str, ...]:
    """The predictions :func:`disagreements` can check on ``arch`` (the others do not apply: see their Unsupported reasons)."""
    names = []
    if not arch.unembed_transform and (not arch.has_norm or arch.norm_placement == "pre"):
        names.append("ov_prediction")
    if arch.positional != "none" and arch.qk_norm == "none" and (not arch.has_norm or arch.norm_placement != "post"):
        names.append("positional_previous")
    return tuple(names)
