"""The positional QK structure: the attention score as a function of the query's and key's positions.

Learned positions (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits", One-Layer Attention-Only Transformers, the QK circuit's positional terms):
the stream holds ``x_i = e_{t_i} + p_i``, so the score ``x_i W_QK x_j^T`` has the purely
positional term ``S_ij = p_i W_QK p_j^T * scale``; as a matrix
``S = P W_Q' (P W_K')^T * scale`` ``[n, n]`` (``P``, ``W_Q'``, ``W_K'`` the folded maps of
``_effective``: ``m W_pos L_embed``, ``L_in W_Q``, ``L_in W_K``).

Rotary: there is no positional vector; the score of query content ``a`` at ``i`` and
key content ``b`` at ``j`` is ``(a W_Q') R(i - j) (b W_K')^T * scale`` (``R`` the rotary
rotation of :func:`~circuitproof.numeric.reference.rotary`; ``q R_i (k R_j)^T = q R(i-j) k^T``
because rotations compose). Its positional structure is read on the mean token
``e = mean_t E[t]``: ``S_ij = (e W_Q') R_i (e W_K' R_j)^T * scale``, which is the score
averaged over independent uniform query and key tokens (the score is bilinear in the
two contents) with the norm divisors frozen.

As a function of the offset ``delta = j - i`` (the key relative to the query: the
previous token is ``delta = -1``), :meth:`PositionalQK.profile` averages ``S`` over the
pairs at that offset that the layer's mask allows. Biases (``b_Q``, ``b_K``) are set
aside. For a head whose QK reads positions only (``circuits.previous_token``, or any
model with constant token embeddings), ``S`` is the forward pass's score exactly and
:meth:`PositionalQK.pattern` its pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import UnsupportedError
from ...arch import Arch
from .._weights import Weights
from ..reference import attention_mask, rotary, softcap
from ._effective import Effective, effective

__all__ = ["PositionalQK", "positional_qk"]


@dataclass(frozen=True)
class PositionalQK:
    """``scores`` ``[L, H, n, n]``: the positional score ``S_ij`` of every head (scaled, before softcap and mask)."""

    arch: Arch
    scores: torch.Tensor
    kind: str  # "learned" or "rotary (mean token)"

    @property
    def n_pos(self) -> int:
        return self.scores.shape[-1]

    def _masks(self) -> torch.Tensor:
        """``[L, 1, n, n]`` bool: the key positions each layer lets each query see."""
        return torch.stack([attention_mask(self.arch, l, self.n_pos) for l in range(self.arch.n_layers)])[:, None]

    def pattern(self) -> torch.Tensor:
        """``[L, H, n, n]``: ``softmax_j(mask(softcap(S)))``, the pattern a head whose QK reads positions only would have."""
        scores = softcap(self.scores, self.arch.attn_softcap)
        return torch.softmax(scores.masked_fill(~self._masks(), float("-inf")), dim=-1)

    def profile(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(offsets [2n-1], values [L, H, 2n-1])``: ``mean_i S[i, i + delta]`` over allowed pairs; NaN where none is allowed."""
        n = self.n_pos
        offsets = torch.arange(-(n - 1), n)
        i = torch.arange(n)[:, None]
        delta = torch.arange(n)[None, :] - i  # [n, n]: j - i
        allowed = self._masks()[:, 0]  # [L, n, n]
        onehot = (delta[None] == offsets[:, None, None]) & allowed[:, None]  # [L, 2n-1, n, n]
        counts = onehot.sum((-2, -1))  # [L, 2n-1]
        sums = torch.einsum("lhij,lkij->lhk", self.scores, onehot.to(self.scores.dtype))  # [L, H, 2n-1]
        values = sums / counts[:, None].to(sums.dtype)
        return offsets, torch.where(counts[:, None] > 0, values, torch.full_like(values, float("nan")))

    def preferred_offset(self) -> torch.Tensor:
        """``[L, H]`` long: the offset ``delta = j - i`` at which the profile is largest (allowed offsets only)."""
        offsets, values = self.profile()
        return offsets[values.nan_to_num(float("-inf")).argmax(-1)]

    def previous_token(self) -> torch.Tensor:
        """``[L, H]``: ``mean_{i >= 1} pattern[i, i - 1]``, the previous-token score a positional-only head would have."""
        if self.n_pos < 2:
            raise ValueError(f"PositionalQK.previous_token: n_pos={self.n_pos} must be >= 2")
        A = self.pattern()
        return torch.diagonal(A, offset=-1, dim1=-2, dim2=-1).mean(-1)  # A[i, i-1], i = 1 .. n-1


def positional_qk(arch: Arch, weights: Weights, *, n_pos: int | None = None, eff: Effective | None = None) -> PositionalQK:
    """The positional QK structure of every head over ``n_pos`` positions (default ``n_ctx``); equations in the module docstring.

    Raises :class:`~circuitproof.UnsupportedError` for ``positional="none"`` (no
    positional QK: only the causal mask carries position) and for QK-norm (the score
    is not bilinear), ``ValueError`` naming ``n_pos`` if it is < 2 or (learned) > n_ctx.
    """
    if arch.positional == "none":
        raise UnsupportedError("positional_qk: positional='none' has no positional QK structure (supported: 'learned', 'rotary')")
    if arch.qk_norm != "none":
        raise UnsupportedError(f"positional_qk: qk_norm={arch.qk_norm!r} normalises queries and keys: the score is not a bilinear form")
    n = arch.n_ctx if n_pos is None else n_pos
    if not isinstance(n, int) or isinstance(n, bool) or n < 2 or (arch.positional == "learned" and n > arch.n_ctx):
        raise ValueError(f"positional_qk: n_pos={n_pos!r} must be an integer in [2, n_ctx={arch.n_ctx}] (learned positions)"
                         if arch.positional == "learned" else f"positional_qk: n_pos={n_pos!r} must be an integer >= 2")
    eff = effective(arch, weights) if eff is None else eff
    if arch.positional == "learned":
        q = eff.P[:n] @ eff.W_Q  # [n, D] @ [L, H, D, Dh] -> [L, H, n, Dh]
        k = eff.P[:n] @ eff.W_K
        return PositionalQK(arch, q @ k.transpose(-1, -2) * arch.scale, "learned")  # [L, H, n, n]
    e = eff.E.mean(0)  # [D]: the mean token
    positions = torch.arange(n)
    q0 = (e @ eff.W_Q)[:, None].expand(-1, n, -1, -1)  # [L, H, Dh] -> [L, n, H, Dh]: the same content at every position
    k0 = (e @ eff.W_K)[:, None].expand(-1, n, -1, -1)
    q, k = rotary(arch, q0, positions), rotary(arch, k0, positions)  # rotated by position: [L, n, H, Dh]
    scores = q.transpose(1, 2) @ k.permute(0, 2, 3, 1) * arch.scale  # [L, H, n, Dh] @ [L, H, Dh, n] -> [L, H, n, n]
    return PositionalQK(arch, scores, "rotary (mean token)")
