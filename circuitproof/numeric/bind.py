"""Bind the symbolic layer's atoms to the tensors of a Trace and Weights.

A compiled identity (``circuitproof.symbolic``) reads atoms by name; each atom
has a kind and indices (``("head", (1, 2))`` is head 2 of layer 1). :func:`bind`
returns, for each atom, the tensor it stands for, with a leading batch axis
where the trace has one, so that ``compiled.lhs(env)`` and ``compiled.rhs(env)``
evaluate on the whole batch at once. Shapes (B batch, P positions): streams and
sublayer outputs ``[B, P, d_model]``, patterns ``[B, P, P]``, weights as matrices
(``W_Q^{l,h}`` is ``W_Q[l, h]``; key/value heads are looked up as ``h // group``),
biases as ``1 x n`` rows, the absent ones as zeros.

Frozen pieces are *definitions*, read from the run: the final norm's scale
(``S_f^{-1} = diag(1 / s)``), its gains ``G_f = diag(g)`` and the centring
``C = I - 11^T / d_model``. ``W_QK`` and ``W_OV`` are the products that define
them. An atom the trace cannot supply (an adapter that does not observe the
scores) raises :class:`Unbindable`, which the caller reports as INCONCLUSIVE.
This module imports no sympy.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .. import CircuitproofError
from ..arch import Arch
from ._trace import Trace
from ._weights import Weights
from .reference import norm as reference_norm

__all__ = ["bind", "Unbindable"]


class Unbindable(CircuitproofError):
    """An atom the trace or weights cannot supply (e.g. scores an adapter does not observe); report INCONCLUSIVE."""


def _written(arch: Arch, trace: Trace, part: str, l: int) -> torch.Tensor:
    """What sublayer ``part`` ("attn" or "mlp") adds to the stream at layer ``l``: after its output norm, if any."""
    raw = trace.attn_out if part == "attn" else trace.mlp_out
    if raw is None:
        raise Unbindable(f"the trace has no {part}_out")
    slot = f"{part}_out"
    if arch.has_norm and arch.norm_placement in ("output", "sandwich"):
        return trace.norms[slot].output[l]
    return raw[l]


def _final_scale(arch: Arch, weights: Weights, trace: Trace) -> torch.Tensor:
    nt = trace.norms["final"]
    if nt.scale is not None:
        return nt.scale[..., 0]
    # an adapter observed only the norm's input: its scale is the norm's own definition
    return reference_norm(arch, nt.input, weights.ln_final_w, weights.get("ln_final_b")).scale[..., 0]


def _atom(kind: str, idx: tuple, arch: Arch, w: Weights, t: Trace) -> torch.Tensor:
    dtype = t.resid_pre.dtype
    if kind == "stream":
        (l,) = idx
        return t.resid_pre[l] if l < arch.n_layers else t.final_resid
    if kind == "mid":
        if t.resid_mid is None:
            raise Unbindable("the trace has no mid-layer stream (parallel or attention-only blocks)")
        return t.resid_mid[idx[0]]
    if kind in ("attn", "mlp"):
        return _written(arch, t, kind, idx[0])
    if kind == "attn_raw":
        return t.attn_out[idx[0]]
    if kind == "head":
        l, h = idx
        return t.head_out[l, :, :, h]
    if kind == "z":
        l, h = idx
        return t.z[l, :, :, h]
    if kind == "pattern":
        l, h = idx
        return t.pattern[l, :, h]
    if kind == "scores":
        if t.scores is None:
            raise Unbindable("the trace has no pre-softmax scores")
        l, h = idx
        return t.scores[l, :, h]
    if kind == "attn_input":
        (l,) = idx
        return t.norms["attn_in"].output[l] if "attn_in" in t.norms else t.resid_pre[l]
    if kind == "ones":
        return torch.ones(t.tokens.shape[1], 1, dtype=dtype)
    if kind == "logits":
        if t.logits is None:
            raise Unbindable("the trace has no logits")
        return t.logits
    if kind in ("W_Q", "W_O"):
        l, h = idx
        return w[kind][l, h]
    if kind in ("W_K", "W_V"):
        l, h = idx
        return w[kind][l, h // arch.group_size]
    if kind == "W_QK":
        l, h = idx
        return w.W_Q[l, h] @ w.W_K[l, h // arch.group_size].mT
    if kind == "W_OV":
        l, h = idx
        return w.W_V[l, h // arch.group_size] @ w.W_O[l, h]
    if kind in ("W_U", "W_E"):
        return w[kind]
    if kind in ("W_in", "W_out"):
        return w[kind][idx[0]]
    if kind.startswith("b_"):
        return _bias(kind, idx, arch, w, dtype)
    if kind == "final_scale_inv":
        return torch.diag_embed(1.0 / _final_scale(arch, w, t))
    if kind == "final_gain":
        g = w.ln_final_w
        return torch.diag(1 + g if arch.norm_gain == "one_plus_w" else g)
    if kind == "centring":
        D = arch.d_model
        return torch.eye(D, dtype=dtype) - torch.full((D, D), 1.0 / D, dtype=dtype)
    if kind == "final_bias":
        return w.ln_final_b[None]
    raise Unbindable(f"no tensor for atoms of kind {kind!r}")


_BIAS_SHAPES = {"b_Q": "d_head", "b_K": "d_head", "b_V": "d_head", "b_O": "d_model", "b_U": "d_vocab", "b_in": "d_mlp", "b_out": "d_model"}


def _bias(kind: str, idx: tuple, arch: Arch, w: Weights, dtype: torch.dtype) -> torch.Tensor:
    """A bias as a ``1 x n`` row; zeros where the architecture has none."""
    present = w.get(kind)
    if present is None:
        return torch.zeros(1, getattr(arch, _BIAS_SHAPES[kind]), dtype=dtype)
    if kind in ("b_K", "b_V"):
        l, h = idx
        return present[l, h // arch.group_size][None]
    if kind == "b_Q":
        l, h = idx
        return present[l, h][None]
    if kind == "b_U":
        return present[None]
    return present[idx[0]][None]


def bind(atoms: Mapping[str, tuple[str, tuple]], arch: Arch, weights: Weights, trace: Trace,
         scalars: Mapping[str, float] | None = None) -> dict[str, object]:
    """``name -> tensor`` for every atom (kind, indices) in ``atoms``; scalars (``scale``) from ``scalars`` or the Arch."""
    scalars = {"scale": arch.scale, **(scalars or {})}
    w = weights.to(trace.resid_pre.dtype) if weights.dtype != trace.resid_pre.dtype else weights
    env: dict[str, object] = {}
    for name, (kind, idx) in atoms.items():
        if kind == "scalar":
            if name not in scalars:
                raise Unbindable(f"no value for the scalar {name!r}")
            env[name] = scalars[name]
        else:
            env[name] = _atom(kind, idx, arch, w, trace)
    return env
