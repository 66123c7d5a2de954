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

:func:`bind_stacked` binds one kind for many indices at once (the heads of a
per-head identity), ``[N, *shape]``, with the indexing expressions :func:`bind` uses;
:func:`bound_atoms` keeps what was bound with the trace, for the next check on it, and
:func:`bound_weight_atoms` what was bound from the weights alone, for every trace of them.
This module imports no sympy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import torch

from .. import CircuitproofError
from ..arch import Arch
from ._kept import kept_per_weights
from ._tables import kv_of_head
from ._trace import Trace
from ._weights import Weights
from .reference import norm as reference_norm

__all__ = ["bind", "bind_stacked", "bound_atoms", "bound_weight_atoms", "WEIGHT_KINDS", "Unbindable"]


class Unbindable(CircuitproofError):
    """An atom the trace or weights cannot supply (e.g. scores an adapter does not observe); report INCONCLUSIVE."""


def _written(arch: Arch, trace: Trace, part: str, l: int) -> torch.Tensor:
    """What sublayer ``part`` ("attn" or "mlp") adds to the stream at layer ``l``: after its output norm, if any."""
    layered = _layered_written(arch, trace, part)
    if layered is None:
        raise Unbindable(f"the trace has no {part}_out")
    return layered[l]


def _final_scale(arch: Arch, weights: Weights, trace: Trace) -> torch.Tensor:
    nt = trace.norms["final"]
    if nt.scale is not None:
        return nt.scale[..., 0]
    # an adapter observed only the norm's input: its scale is the norm's own definition
    return reference_norm(arch, nt.input, weights.ln_final_w, weights.get("ln_final_b")).scale[..., 0]


def _scores(t: Trace) -> torch.Tensor:
    if t.scores is None:
        raise Unbindable("the trace has no pre-softmax scores")
    return t.scores


def _kv(arch: Arch, h: object) -> object:
    """The key/value head that query head ``h`` (an int or an index tensor) reads: ``h // group`` (``h`` itself without GQA)."""
    return h if arch.group_size == 1 else kv_of_head(arch.n_heads, arch.group_size)[h]


# The atoms that index a stacked tensor of the trace or the weights by their layer (and head).
# The same expression serves one index and a group's, as 1-D index tensors: advanced indices
# separated by slices come first, so a group's result is [N, *shape] (bind_stacked).
_INDEXED: dict[str, Callable[..., torch.Tensor]] = {
    "head": lambda arch, w, t, l, h: t.head_out[l, :, :, h],
    "z": lambda arch, w, t, l, h: t.z[l, :, :, h],
    "pattern": lambda arch, w, t, l, h: t.pattern[l, :, h],
    "scores": lambda arch, w, t, l, h: _scores(t)[l, :, h],
    "attn_input": lambda arch, w, t, l: (t.norms["attn_in"].output if "attn_in" in t.norms else t.resid_pre)[l],
    "attn_raw": lambda arch, w, t, l: t.attn_out[l],
    "W_Q": lambda arch, w, t, l, h: w.W_Q[l, h],
    "W_O": lambda arch, w, t, l, h: w.W_O[l, h],
    "W_K": lambda arch, w, t, l, h: w.W_K[l, _kv(arch, h)],  # query head h reads key/value head h // group
    "W_V": lambda arch, w, t, l, h: w.W_V[l, _kv(arch, h)],
    "W_QK": lambda arch, w, t, l, h: w.W_Q[l, h] @ w.W_K[l, _kv(arch, h)].mT,
    "W_OV": lambda arch, w, t, l, h: w.W_V[l, _kv(arch, h)] @ w.W_O[l, h],
    "W_in": lambda arch, w, t, l: w.W_in[l],
    "W_out": lambda arch, w, t, l: w.W_out[l],
}


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
    if kind in _INDEXED:
        return _INDEXED[kind](arch, w, t, *idx)
    if kind == "ones":
        return torch.ones(t.tokens.shape[1], 1, dtype=dtype)
    if kind == "logits":
        if t.logits is None:
            raise Unbindable("the trace has no logits")
        return t.logits
    if kind in ("W_U", "W_E"):
        return w[kind]
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
        return present[l, _kv(arch, h)].unsqueeze(-2)
    if kind == "b_Q":
        l, h = idx
        return present[l, h].unsqueeze(-2)
    if kind == "b_U":
        return present[None]
    return present[idx[0]].unsqueeze(-2)


@functools.lru_cache(maxsize=1024)
def _columns(indices: tuple[tuple, ...]) -> list[torch.Tensor]:
    """``[N]`` long tensors, one per index position of ``indices`` (kept per indices: read-only)."""
    return [torch.tensor(column) for column in zip(*indices)]


def _layered_written(arch: Arch, t: Trace, part: str) -> torch.Tensor | None:
    """``[L, B, P, D]``: what sublayer ``part`` writes at every layer (:func:`_written`'s tensor before its layer index)."""
    raw = t.attn_out if part == "attn" else t.mlp_out
    if raw is None:
        return None
    return t.norms[f"{part}_out"].output if arch.has_norm and arch.norm_placement in ("output", "sandwich") else raw


# kind -> f(arch, trace, the largest layer asked for) -> the tensor that atom (kind, (l,)) indexes at l, or None (bind one by one)
_BY_LAYER: dict[str, Callable[[Arch, Trace, int], torch.Tensor | None]] = {
    "stream": lambda arch, t, top: t.resid_pre if top < arch.n_layers else None,  # x_L is no layer's resid_pre
    "mid": lambda arch, t, top: t.resid_mid,
    "attn": lambda arch, t, top: _layered_written(arch, t, "attn"),
    "mlp": lambda arch, t, top: _layered_written(arch, t, "mlp"),
}


def bind_stacked(kind: str, indices: list[tuple], arch: Arch, weights: Weights, trace: Trace) -> torch.Tensor | None:
    """The atoms ``(kind, idx)`` for every ``idx`` in ``indices``, stacked: ``[N, *shape]``, in one indexing operation.

    Equal to stacking each one's tensor from :func:`bind`. None for a kind that is not an
    index into the trace's or the weights' stacked tensors by layer and head (bind those one by one).
    """
    if kind in _BY_LAYER:  # the streams and sublayer writes of several layers: one index into the layer axis
        layers = [idx[0] for idx in indices]
        stacked = _BY_LAYER[kind](arch, trace, max(layers))
        return None if stacked is None else stacked[_columns(tuple(indices))[0]]
    if kind not in _INDEXED and kind not in _BIAS_SHAPES or kind == "b_U":
        return None
    dtype = trace.resid_pre.dtype
    w = weights.to(dtype) if weights.dtype != dtype else weights
    columns = _columns(tuple(indices))  # [N] per index position: the layers, the heads
    if kind in _BIAS_SHAPES:
        if kind not in w:
            return torch.zeros(len(indices), 1, getattr(arch, _BIAS_SHAPES[kind]), dtype=dtype)
        return _bias(kind, tuple(columns), arch, w, dtype)
    return _INDEXED[kind](arch, w, trace, *columns)


# kinds whose tensor is a function of the weights, their Arch and the dtype alone: the same for every trace of those weights
WEIGHT_KINDS = frozenset({"W_Q", "W_K", "W_V", "W_O", "W_QK", "W_OV", "W_in", "W_out", "W_U", "W_E", *_BIAS_SHAPES, "final_gain",
                          "final_bias", "centring"})


def bound_weight_atoms(weights: Weights, dtype: torch.dtype) -> dict[tuple, object]:
    """The atoms of weight kinds (:data:`WEIGHT_KINDS` and the like) already bound from ``weights`` in ``dtype``,
    ``(kind, indices, live) -> tensor``, kept with the Weights object (:func:`~circuitproof.numeric._kept.kept_per_weights`):
    such an atom bound once serves every trace of them.
    """
    return kept_per_weights(weights, ("bound atoms", dtype), dict)


def bound_atoms(trace: Trace, weights: Weights) -> dict[tuple, object]:
    """The atoms already bound from ``trace`` and ``weights``, ``(kind, indices, live) -> tensor``, kept on the trace.

    Both are immutable, so an atom bound once serves every later check on them (the
    claims checked on one forward pass read the same streams, patterns and weights).
    The weights are kept with their entry, so that their id cannot be reused while the
    trace lives.
    """
    entry = trace._bound.get(id(weights))
    if entry is None or entry[0] is not weights:
        entry = trace._bound[id(weights)] = (weights, {})
    return entry[1]


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
