"""The OV side of a head: the copying score and the OV circuit's prediction of the head's logit update.

Row convention (DESIGN.md): ``W_OV = W_V W_O``, the full OV circuit is ``E W_OV U``
``[V, V]``: row ``t`` is what attending to token ``t`` adds to the logits (``E``, ``U``:
the embedding and unembedding with norms folded, ``_effective``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import UnsupportedError
from ...arch import Arch
from .._trace import Trace
from .._weights import Weights
from ._effective import Effective, effective

__all__ = ["copying_score", "ov_eigenvalues", "OVPrediction", "ov_prediction"]

# sum |lambda| below this fraction of |W_O| |U E| |W_V| (Frobenius) is "no spectrum": not scored. float64 leaves
# ~1e-16 relative noise per eigenvalue of a rank-deficient matrix; 1e-12 keeps four orders of margin.
_NO_SPECTRUM = 1e-12


def ov_eigenvalues(eff: Effective) -> torch.Tensor:
    """``[L, H, Dh]`` complex: the eigenvalues of each head's full OV circuit ``E W_OV U`` that can be nonzero.

    ``E W_V W_O U`` is ``[V, V]`` with rank at most ``Dh``. ``eig(AB)`` and ``eig(BA)``
    agree on their nonzero eigenvalues (if ``AB v = lambda v``, ``lambda != 0``, then
    ``BA (B v) = lambda (B v)`` and ``B v != 0``), so with ``A = E W_V`` ``[V, Dh]`` and
    ``B = W_O U`` ``[Dh, V]`` the nonzero spectrum is that of the ``[Dh, Dh]`` product
    ``W_O (U E) W_V``; equivalently of the ``[D, D]`` ``W_OV U E`` (``A = E``,
    ``B = W_OV U``). ``U E`` ``[D, D]`` is formed once; no ``[V, V]`` matrix is.
    """
    if eff.U is None:
        raise UnsupportedError("ov_eigenvalues: unembed_transform makes the unembedding nonlinear: the full OV circuit is not a matrix")
    UE = eff.U @ eff.E  # [D, V] @ [V, D] -> [D, D]
    small = eff.W_O @ UE @ eff.W_V  # [L, H, Dh, D] @ [D, D] @ [L, H, D, Dh] -> [L, H, Dh, Dh]
    return torch.linalg.eigvals(small)


def copying_score(arch: Arch, weights: Weights, *, eff: Effective | None = None) -> torch.Tensor:
    """``[L, H]``: the copying score ``sum_i lambda_i / sum_i |lambda_i|`` of each head's full OV circuit, NaN where not scored.

    ``lambda_i`` are the eigenvalues of ``E W_OV U`` ``[V, V]`` (row convention; the
    paper's column form is ``W_U W_OV W_E``), computed through the ``[Dh, Dh]`` product
    of :func:`ov_eigenvalues` (zero eigenvalues add nothing to either sum). The
    numerator is real: complex eigenvalues come in conjugate pairs, and
    ``sum lambda = trace``. Score 1: every nonzero eigenvalue is positive (attending to
    ``t`` raises ``t``'s logit along every direction the head moves); -1: all negative
    (suppression); random heads scatter around 0. Source: Elhage et al. 2021, "A
    Mathematical Framework for Transformer Circuits", One-Layer Attention-Only
    Transformers, "Summarizing OV/QK matrices" (copying: positive eigenvalues).

    Invariant to positive scaling of ``W_OV`` and negated by a negative one (``c W_OV``
    has the eigenvalues ``c lambda``: the score becomes ``sign(c)`` times itself), to the OV gauge ``W_V N, N^{-1} W_O``
    (the spectrum of ``E W_OV U`` is unchanged) and to an orthogonal change of the
    residual basis (``E R, R^T W_OV R, R^T U``: the same product). With norms the maps are
    folded with frozen divisors (``_effective``): a positive per-position divisor
    scales a row of the circuit, and the score reads the circuit's linear part. NaN (not
    scored) where the spectrum is zero to rounding (``|lambda|`` sums below
    ``1e-12 |W_O| |U E| |W_V|``: a head writing only where ``U`` does not read, say; a
    defective nilpotent circuit can keep ~1e-8 rounding eigenvalues and is scored as noise). A head with ``d_head = 1`` has
    one real eigenvalue, so its score is exactly ``+-1``: the score cannot tell a rank-one
    copy head from a random one.
    """
    eff = effective(arch, weights) if eff is None else eff
    lam = ov_eigenvalues(eff)  # [L, H, Dh]
    total = lam.abs().sum(-1)  # [L, H]
    trace = lam.real.sum(-1)
    size = torch.linalg.matrix_norm(eff.W_O) * torch.linalg.matrix_norm(eff.U @ eff.E) * torch.linalg.matrix_norm(eff.W_V)
    score = trace / total
    return torch.where(total > _NO_SPECTRUM * size, score, torch.full_like(score, float("nan")))


@dataclass(frozen=True)
class OVPrediction:
    """A layer-0 head's logit update at every position, predicted from its OV circuit given its pattern: labelled parts.

    ``token + position + bias`` ``[B, P, V]`` each; their sum is the head's direct
    contribution to the raw logits with the norm divisors frozen at the trace's.
    ``measured`` ``[B, P, V]`` is the same quantity read from the forward pass:
    ``head_out[0, :, :, h] U / s_final``.
    """

    layer: int
    head: int
    token: torch.Tensor
    position: torch.Tensor
    bias: torch.Tensor
    measured: torch.Tensor

    @property
    def predicted(self) -> torch.Tensor:
        return self.token + self.position + self.bias


def _scale(trace: Trace, slot: str, layer: int | None) -> torch.Tensor:
    """A norm's divisor ``[B, P, 1]`` from the trace (1 where the norm is absent)."""
    nt = trace.norms.get(slot)
    if nt is None:
        return torch.ones(*trace.tokens.shape, 1, dtype=torch.float64)
    s = nt.scale if layer is None else nt.scale[layer]
    return s.to(torch.float64)


def ov_prediction(arch: Arch, weights: Weights, trace: Trace, head: int, *, layer: int = 0) -> OVPrediction:
    """The OV circuit's prediction of head ``(0, head)``'s logit update, given the trace's pattern and norm divisors.

    Layer 0 reads the embedding ``x_j = n_e(m (W_E[t_j] + W_pos[j]))``; with every divisor
    frozen at the trace's (``s_e`` embed, ``s_j`` attention input, ``s_f,i`` final norm;
    1 where absent) and ``A`` the head's pattern, the head adds to the raw logits at ``i``::

        token_i    = sum_j A_ij / (s_e,j s_j) (E W_V' W_O U)[t_j] / s_f,i     (the full OV circuit's row t_j)
        position_i = sum_j A_ij / (s_e,j s_j) (P W_V' W_O U)[j]   / s_f,i
        bias_i     = (sum_j A_ij (b_e W_V' / s_j + b_in W_V) + b_V) W_O U / s_f,i

    (``W_V' = L_in W_V``, ``E``, ``P``, ``U`` as in ``_effective``; ``b_e``, ``b_in`` the
    LayerNorm biases: ``b_e`` passes through the input norm, ``b_in`` is added after it;
    ``sum_j A_ij = 1``). For a copy head (``E W_OV U = lambda I``) the
    token part at ``i`` is ``sum_j A_ij lambda e_{t_j} / (s_e,j s_j s_f,i)``: the attended
    token's logit rises by ``alpha lambda`` over the divisors. Supported: layer 0 (later
    layers read other heads' writes too), norm none, pre or parallel
    (UnsupportedError otherwise).
    """
    if layer != 0:
        raise UnsupportedError(f"ov_prediction: layer={layer}: only layer 0 reads the embedding alone; later layers read other writes too")
    if arch.has_norm and arch.norm_placement != "pre":
        raise UnsupportedError(f"ov_prediction: norm_placement={arch.norm_placement!r} normalises the heads' sum; "
                               "supported: 'pre', parallel, none")
    if not 0 <= head < arch.n_heads:
        raise ValueError(f"ov_prediction: head={head!r} is not in range(n_heads={arch.n_heads})")
    eff = effective(arch, weights)
    if eff.U is None:
        raise UnsupportedError("ov_prediction: unembed_transform makes the unembedding nonlinear")
    w = weights.to(torch.float64) if weights.dtype != torch.float64 else weights
    t = trace.tokens
    A = trace.pattern[0, :, head].to(torch.float64)  # [B, P, P]
    s_e, s_in, s_f = _scale(trace, "embed", None), _scale(trace, "attn_in", 0), _scale(trace, "final", None)  # [B, P, 1]
    W_V, W_O = eff.W_V[0, head], eff.W_O[0, head]  # [D, Dh], [Dh, D]
    weight = A / (s_e * s_in).transpose(-1, -2)  # [B, P, P]: A_ij / (s_e,j s_j)
    token = weight @ (eff.E[t] @ W_V @ W_O @ eff.U) / s_f  # [B, P, V]: rows of the full OV circuit, gathered first
    if eff.P is not None:
        position = weight @ (eff.P[: t.shape[1]] @ W_V @ W_O @ eff.U) / s_f  # [B, P, P] @ [P, V] -> [B, P, V]
    else:
        position = torch.zeros_like(token)
    D = arch.d_model
    b_e = w["ln_embed_b"] if "ln_embed_b" in w else torch.zeros(D, dtype=torch.float64)  # passes through L_in: reads W_V'
    b_in = w["ln_attn_in_b"][0] if "ln_attn_in_b" in w else torch.zeros(D, dtype=torch.float64)  # added after it: reads W_V
    W_V_raw = w.W_V[0, head // arch.group_size]  # [D, Dh]
    v_bias = (A @ (1 / s_in)) * (b_e @ W_V) + b_in @ W_V_raw  # [B, P, 1] * [Dh] + [Dh]: sum_j A_ij (b_e W_V' / s_j + b_in W_V)
    if arch.v_bias:
        v_bias = v_bias + w.b_V[0, head // arch.group_size]
    bias = v_bias @ W_O @ eff.U / s_f  # [B, P, V]
    measured = trace.head_out[0, :, :, head].to(torch.float64) @ eff.U / s_f  # [B, P, D] @ [D, V]
    return OVPrediction(0, head, token, position, bias, measured)

