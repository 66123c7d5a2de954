"""What one forward pass computed: the :class:`Trace`.

Every tensor carries its layer axis first where there is one, so that
``trace.resid_pre[l]`` is the stream entering layer ``l``. Shapes
(``L`` layers, ``B`` batch, ``P`` positions, ``H`` query heads, ``K`` key/value
heads, ``D`` d_model, ``Dh`` d_head, ``M`` d_mlp, ``V`` d_vocab):

================ ======================== ==============================================
field            shape                    meaning
================ ======================== ==============================================
tokens           [B, P]                   the input token ids
embed            [B, P, D]                m (W_E[t] + W_pos[p]), before the embedding norm
resid_pre        [L, B, P, D]             x_l, the stream entering layer l (x_0 = resid_pre[0])
resid_mid        [L, B, P, D] or None     the stream between attention and MLP (sequential blocks with an MLP)
resid_post       [L, B, P, D]             x_{l+1}, the stream leaving layer l
q                [L, B, P, H, Dh]         queries after QK-norm and rotary
k, v             [L, B, P, K, Dh]         keys (after QK-norm and rotary) and values
scores           [L, B, H, P, P] or None  q k^T * scale (softcapped), before the mask
pattern          [L, B, H, P, P]          A, softmax over the key axis; rows sum to 1
z                [L, B, P, H, Dh]         z_h = sum_j A_ij v_j (head h reads kv head h // group)
head_out         [L, B, P, H, D]          head_{l,h} = z_h W_O[l, h]
attn_out         [L, B, P, D]             sum_h head_{l,h} + b_O, before any output norm
mlp_pre          [L, B, P, M] or None     x W_in + b_in (the "up" branch if gated)
mlp_post         [L, B, P, M] or None     the hidden activation that enters W_out
mlp_out          [L, B, P, D] or None     mlp(x), before any output norm
norms            dict[str, NormTrace]     every norm, keyed by slot (below)
final_resid      [B, P, D]                x_L, the stream before the final norm (= resid_post[-1])
logits_raw       [B, P, V]                x W_U + b_U before the logit softcap
logits           [B, P, V]                the model's output
================ ======================== ==============================================

``norms`` keys: ``"embed"``, ``"final"``, ``"transform"`` (shapes [B, P, ...]),
the per-layer slots of ``Arch.norm_slots()`` and ``"q"``, ``"k"`` (shapes
[L, B, P, ...]). A :class:`NormTrace` holds the norm's ``input``, its ``scale``
(the divisor ``sqrt(var + eps)`` or ``sqrt(mean(x^2) + eps)``, with a trailing
axis of size 1) and its ``output``. An adapter that cannot observe a field
leaves it ``None`` and says so in its documentation.

A Trace is immutable, its tensors read-only: the atoms that checks bind from it
(``circuitproof.numeric.bind``) are kept with it, so that the claims checked on one
forward pass share them (``dataclasses.replace`` makes a Trace with none kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..arch import Arch

__all__ = ["Trace", "NormTrace"]


@dataclass(frozen=True)
class NormTrace:
    """One norm's input, divisor and output: ``output = (input - mean) / scale * g + b``."""

    input: torch.Tensor
    scale: torch.Tensor | None
    output: torch.Tensor


@dataclass(frozen=True)
class Trace:
    """What one forward pass computed (shapes in the module docstring)."""

    arch: Arch
    tokens: torch.Tensor
    embed: torch.Tensor | None
    resid_pre: torch.Tensor
    resid_mid: torch.Tensor | None
    resid_post: torch.Tensor
    q: torch.Tensor | None
    k: torch.Tensor | None
    v: torch.Tensor | None
    scores: torch.Tensor | None
    pattern: torch.Tensor
    z: torch.Tensor | None
    head_out: torch.Tensor
    attn_out: torch.Tensor
    mlp_pre: torch.Tensor | None
    mlp_post: torch.Tensor | None
    mlp_out: torch.Tensor | None
    logits_raw: torch.Tensor | None
    logits: torch.Tensor | None
    norms: dict[str, NormTrace] = field(default_factory=dict)
    # bound atoms, per weights: id(weights) -> (weights, {(kind, indices, live): tensor}); see bind.bound_atoms
    _bound: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def final_resid(self) -> torch.Tensor:
        """x_L, the stream leaving the last layer: ``[B, P, D]``."""
        return self.resid_post[-1]

    @property
    def x0(self) -> torch.Tensor:
        """x_0, the stream entering layer 0 (after the embedding norm): ``[B, P, D]``."""
        return self.resid_pre[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor this trace holds, flat: fields by name, norms as ``norm.<slot>.<part>``."""
        out: dict[str, torch.Tensor] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                out[name] = value
        for slot, nt in self.norms.items():
            for part in ("input", "scale", "output"):
                value = getattr(nt, part)
                if value is not None:
                    out[f"norm.{slot}.{part}"] = value
        return out
