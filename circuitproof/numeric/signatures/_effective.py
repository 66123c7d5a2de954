"""The linear maps a head applies, read from any :class:`Weights`: norms folded with their divisors frozen.

With a norm live, the raw weights are not what a head applies: a pre-norm head reads
``n(x) = x C G / s + b`` (row convention; ``C = I - 1 1^T / D`` centres a LayerNorm,
``C = I`` for RMSNorm; ``G = diag(g)`` the effective gain ``w`` or ``1 + w``; ``s`` the
per-position divisor). Freezing ``s`` (a scalar per position) and setting the biases
aside, every norm is the linear map ``L = C G``, and the weight-based signatures
read these maps (shapes; ``L`` layers, ``H`` query heads, ``D`` d_model, ``Dh`` d_head)::

    E    = m W_E L_embed                      [V, D]       token embeddings as the stream holds them
    P    = m W_pos L_embed                    [n_ctx, D]   (learned positions)
    W_Q' = L_in W_Q,  W_K' = L_in W_K,  W_V' = L_in W_V   [L, H, D, Dh]   (query head h reads kv head h // group)
    W_O' = W_O L_out                          [L, H, Dh, D]   (output / sandwich norms on the sublayer's output)
    U    = L_final W_U                        [D, V]

``L_in`` is the attention input norm (``attn_in``: pre, sandwich, parallel), ``L_out``
the norm on the attention output (``attn_out`` under ``output`` and ``sandwich``
placements), ``L_final`` the final norm; an absent norm is ``I``. This is the fold of
the symbolic layer's ``norms.fold_layernorm`` / ``fold_rmsnorm`` (``W <- C G W``;
``properties._transforms.folded`` compiles it, and a test checks the two agree), restated
here because the numeric layer may not import the properties layer. ``folded`` also
centres ``W_U`` over the vocabulary; ``U`` here does not, so the copying matrix is the
paper's ``W_E W_OV W_U``.

Unsupported, with the reason (:class:`~circuitproof.UnsupportedError`): post-norm
blocks (``x = n(x + attn(x))`` renormalises every earlier write with the whole stream,
so no head has a map of its own into the stream) and BERT's unembedding transform
(``U`` is not linear).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import UnsupportedError
from ...arch import Arch
from .._weights import Weights

__all__ = ["Effective", "effective", "norm_linear"]


def norm_linear(arch: Arch, weights: Weights, slot: str, layer: int | None, x: torch.Tensor, *, side: str = "left") -> torch.Tensor:
    """Apply a norm's linear part ``L = C G`` (divisor frozen, bias set aside) to a stack of matrices.

    ``side="left"``: ``x L`` for ``x [..., D]`` (a row vector, or a matrix whose rows are
    read through the norm: ``x C`` subtracts each row's mean, then the columns are scaled
    by ``g``). ``side="right"``: ``L x`` for ``x [..., D, k]`` (a map applied after the norm:
    ``C G x`` scales the rows by ``g`` and subtracts the mean over the ``D`` axis).
    An absent slot is the identity. ``layer`` indexes a per-layer slot (None: embed, final).
    """
    name = f"ln_{slot}_w"
    if name not in weights:
        return x
    w = weights[name] if layer is None else weights[name][layer]
    g = 1 + w if arch.norm_gain == "one_plus_w" else w  # [D]
    centre = arch.norm == "layernorm"
    if side == "left":
        x = x - x.mean(dim=-1, keepdim=True) if centre else x  # x C
        return x * g  # (x C) G
    gx = g[:, None] * x  # G x
    return gx - gx.mean(dim=-2, keepdim=True) if centre else gx  # C (G x)


@dataclass(frozen=True)
class Effective:
    """The linear maps heads apply (module docstring): norms folded, divisors frozen, biases set aside.

    ``W_Q, W_K, W_V [L, H, D, Dh]`` are per query head (GQA expanded); ``U`` is None where
    the unembedding is not linear; ``notes`` say what was frozen or set aside.
    """

    arch: Arch
    E: torch.Tensor
    P: torch.Tensor | None
    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    U: torch.Tensor | None
    notes: tuple[str, ...]


def _check_supported(arch: Arch, what: str) -> None:
    if arch.has_norm and arch.norm_placement == "post":
        raise UnsupportedError(
            f"{what}: norm_placement='post' renormalises every earlier write together with the whole stream, so a head has no "
            "linear map of its own into the stream; supported placements: 'pre', 'output', 'sandwich' (and norm='none')"
        )


def effective(arch: Arch, weights: Weights) -> Effective:
    """The folded linear maps of every head of ``weights`` (float64), as the module docstring defines them.

    Raises :class:`~circuitproof.UnsupportedError` for post-norm blocks,
    :class:`~circuitproof.WeightsError` for weights of another Arch.
    """
    from ... import WeightsError

    if weights.arch != arch:
        raise WeightsError(f"effective: weights are for {weights.arch!r}, not for {arch!r}")
    _check_supported(arch, "effective")
    w = weights.to(torch.float64) if weights.dtype != torch.float64 else weights
    m = arch.embed_scale
    E = norm_linear(arch, w, "embed", None, m * w.W_E)  # [V, D]
    P = norm_linear(arch, w, "embed", None, m * w.W_pos) if arch.positional == "learned" else None  # [n_ctx, D]
    kv = torch.arange(arch.n_heads) // arch.group_size  # query head -> its key/value head
    reads = {}
    for name in ("W_Q", "W_K", "W_V"):
        W = w[name] if name == "W_Q" else w[name][:, kv]  # [L, H, D, Dh]
        reads[name] = torch.stack([norm_linear(arch, w, "attn_in", l, W[l], side="right") for l in range(arch.n_layers)])
    out_norm = arch.has_norm and arch.norm_placement in ("output", "sandwich")
    W_O = torch.stack([norm_linear(arch, w, "attn_out", l, w.W_O[l]) if out_norm else w.W_O[l] for l in range(arch.n_layers)])
    U = None if arch.unembed_transform else norm_linear(arch, w, "final", None, w.W_U, side="right")  # [D, V]
    notes = ["biases set aside (b_Q, b_K, b_V, b_O, norm biases): the maps are the linear parts"]
    if arch.has_norm:
        notes.append("norm divisors frozen: each norm is its linear part C G (C centres a LayerNorm, I for RMSNorm)")
    if arch.unembed_transform:
        notes.append("unembed_transform: the unembedding is not linear (U is None)")
    return Effective(arch, E, P, reads["W_Q"], reads["W_K"], reads["W_V"], W_O, U, tuple(notes))
