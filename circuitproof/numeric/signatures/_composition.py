"""Q-, K- and V-composition scores between every earlier head and every later head.

Source: Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits",
Two-Layer Attention-Only Transformers, "Three kinds of composition" (virtual weights and
the composition scores). The paper writes column vectors: ``W_OV^col = W_O W_V`` and
``W_QK = W_Q^T W_K`` (the same matrix as our ``W_Q W_K^T``), and defines, for head
``h1`` of an earlier layer and ``h2`` of a later one,

    Q: |W_QK^{h2 T} W_OV^{h1}|_F / (|W_QK^{h2 T}|_F |W_OV^{h1}|_F)
    K: |W_QK^{h2} W_OV^{h1}|_F / (|W_QK^{h2}|_F |W_OV^{h1}|_F)
    V: |W_OV^{h2} W_OV^{h1}|_F / (|W_OV^{h2}|_F |W_OV^{h1}|_F)

In the row convention (``W_OV = W_V W_O = (W_OV^col)^T``, transposes keep Frobenius
norms) these read

    Q(h1 -> h2) = |W_OV^{h1} W_QK^{h2}|_F   / (|W_OV^{h1}|_F |W_QK^{h2}|_F)     h2's queries read h1's write
    K(h1 -> h2) = |W_OV^{h1} W_QK^{h2 T}|_F / (|W_OV^{h1}|_F |W_QK^{h2}|_F)     h2's keys read h1's write
    V(h1 -> h2) = |W_OV^{h1} W_OV^{h2}|_F   / (|W_OV^{h1}|_F |W_OV^{h2}|_F)     h2's values read h1's write

(the score ``x_i W_QK x_j^T`` takes ``x_i = y W_OV^{h1}`` for Q, ``x_j = y W_OV^{h1}``
for K). Every ratio lies in ``[0, 1]`` and is invariant to scaling either matrix, to
both heads' gauges and to an orthogonal change of the residual basis. Random heads do
not score 0: if the earlier head's write ``W_O`` has a law invariant under
``W_O -> W_O R`` for orthogonal ``R`` (i.i.d. Gaussian entries), ``E[ratio^2] = 1 / D``
exactly, whatever the ranks (``E[R B B^T R^T] = |B|_F^2 I / D`` for Haar ``R``, so
``E |A R B|_F^2 = |A|_F^2 |B|_F^2 / D``); :func:`composition_baseline` is that
``1 / sqrt(D)``, and a score means something only against it at the same ``d_model``.

Computed without forming any ``[D, D]`` product (TransformerLens ``FactoredMatrix``
style): with ``Gv = W_V^T W_V``, ``Go = W_O W_O^T``, ``Gq = W_Q^T W_Q``,
``Gk = W_K^T W_K`` (``[Dh, Dh]``) and the virtual weight ``X = W_O^{h1} W^{h2}``
``[Dh, Dh]``, ``|W_V^{h1} X W'^T|_F^2 = tr(X^T Gv^{h1} X G'^{h2})``.
"""

from __future__ import annotations

import math

import torch

from ...arch import Arch
from .._weights import Weights
from ._effective import Effective, effective

__all__ = ["COMPOSITIONS", "composition_scores", "composition_baseline", "qk_composition_supported"]

COMPOSITIONS = ("q", "k", "v")


def composition_baseline(d_model: int) -> float:
    """``1 / sqrt(d_model)``: the root-mean-square composition score of rotation-invariant random heads (module docstring)."""
    if not isinstance(d_model, int) or d_model < 1:
        raise ValueError(f"composition_baseline: d_model={d_model!r} must be an integer >= 1")
    return 1 / math.sqrt(d_model)


def qk_composition_supported(arch: Arch) -> str | None:
    """None if Q- and K-composition are defined for ``arch``; otherwise why not (rotary, QK-norm)."""
    if arch.positional == "rotary":
        return "rotary: the QK form x_i W_Q R(i-j) W_K^T x_j^T depends on the offset; there is no one W_QK"
    if arch.qk_norm != "none":
        return f"qk_norm={arch.qk_norm!r}: queries and keys are normalised, W_QK is not the form the head applies"
    return None


def _frob2(X: torch.Tensor, G1: torch.Tensor, G2: torch.Tensor) -> torch.Tensor:
    """``tr(X^T G1 X G2)`` ``= |F1 X F2^T|_F^2`` for ``G1 = F1^T F1``, ``G2 = F2^T F2``; X [..., a, b], G1 [..., a, a], G2 [..., b, b]."""
    return ((G1 @ X) * (X @ G2)).sum((-2, -1))  # tr(X^T G1 X G2) = sum((G1 X) * (X G2)): both Gram matrices symmetric


def composition_scores(arch: Arch, weights: Weights, *, eff: Effective | None = None) -> dict[str, torch.Tensor]:
    """``{"q", "k", "v": [L, H, L, H]}``: score of ``(l1, h1) -> (l2, h2)``, NaN unless ``l1 < l2`` (not scored).

    The equations are the module docstring's, on the norm-folded maps of ``_effective``
    (``W_Q' = L_in W_Q`` etc., ``W_O' = W_O L_out``; divisors frozen, biases set aside):
    with norms live the raw weights are not what a head applies. Q and K are NaN
    everywhere under rotary or QK-norm (:func:`qk_composition_supported`). A head with a
    zero ``W_OV`` or ``W_QK`` scores NaN (0 / 0).
    """
    eff = effective(arch, weights) if eff is None else eff
    L, H = arch.n_layers, arch.n_heads
    Gq = eff.W_Q.transpose(-1, -2) @ eff.W_Q  # [L, H, Dh, Dh]
    Gk = eff.W_K.transpose(-1, -2) @ eff.W_K
    Gv = eff.W_V.transpose(-1, -2) @ eff.W_V
    Go = eff.W_O @ eff.W_O.transpose(-1, -2)
    ov = ((Gv * Go).sum((-2, -1))).sqrt()  # [L, H]: |W_OV|_F = sqrt(tr(Gv Go))
    qk = ((Gq * Gk).sum((-2, -1))).sqrt()  # [L, H]: |W_QK|_F = sqrt(tr(Gq Gk))
    nan = torch.full((L, H, L, H), float("nan"), dtype=torch.float64)
    out = {name: nan.clone() for name in COMPOSITIONS}
    qk_ok = qk_composition_supported(arch) is None
    for l1 in range(L - 1):
        later = slice(l1 + 1, L)
        W_O1 = eff.W_O[l1][:, None, None]  # [H, 1, 1, Dh, D]: broadcast over the later (layer, head)
        G1 = Gv[l1][:, None, None]  # [H, 1, 1, Dh, Dh]
        pairs = {
            "q": (eff.W_Q[later], Gk[later], qk[later]),  # X = W_O1 W_Q2, then W_K2: |W_V1 X W_K2^T|
            "k": (eff.W_K[later], Gq[later], qk[later]),  # X = W_O1 W_K2, then W_Q2: |W_V1 X W_Q2^T|
            "v": (eff.W_V[later], Go[later], ov[later]),  # X = W_O1 W_V2, then W_O2: |W_V1 X W_O2|
        }
        for name, (W2, G2, norm2) in pairs.items():
            if name != "v" and not qk_ok:
                continue
            X = W_O1 @ W2  # [H, L', H, Dh, Dh]: the virtual weights
            num = _frob2(X, G1, G2).clamp_min(0).sqrt()  # [H, L', H]
            out[name][l1, :, later] = num / (ov[l1][:, None, None] * norm2)  # [h1, l2, h2]
    return out

