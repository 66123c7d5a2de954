"""The numeric meaning of the opaque functions the claims' identities apply.

Activations and a norm's standardisation are :class:`~circuitproof.symbolic.seed.Apply`
nodes named by :func:`activation` and :func:`standardize`. Importing this module
registers their meaning, with array methods only (no torch import), with the compiler
(:func:`~circuitproof.symbolic._compile.register_opaque`), as ``norms`` registers
softmax's and log-softmax's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import sympy as sp

from ._compile import CompileError, register_opaque
from .seed import Apply

__all__ = ["activation", "standardize"]

# ------------------------------------------------------------------ opaque functions
_SQRT2, _TANH_C = math.sqrt(2.0), math.sqrt(2.0 / math.pi)
_ACTIVATIONS: dict[str, Callable] = {
    "gelu": lambda t: 0.5 * t * (1 + (t / _SQRT2).erf()),
    "gelu_tanh": lambda t: 0.5 * t * (1 + (_TANH_C * (t + 0.044715 * t * t * t)).tanh()),
    "relu": lambda t: t.clamp_min(0),
    "silu": lambda t: t * t.sigmoid(),
}


def activation(name: str, arg: sp.MatrixExpr) -> Apply:
    """``act(arg)`` entrywise: gelu ``x Phi(x)``, gelu_tanh, relu ``max(x, 0)``, silu ``x sigmoid(x)``."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation: name={name!r} must be one of {sorted(_ACTIVATIONS)}")
    return Apply(name, arg)


def standardize(norm: str, eps: float, arg: sp.MatrixExpr) -> Apply:
    """A norm without its gain and bias, row by row: LayerNorm ``(x - mean) / sqrt(var + eps)``, RMSNorm ``x / sqrt(mean(x^2) + eps)``."""
    if norm not in ("layernorm", "rmsnorm"):
        raise ValueError(f"standardize: norm={norm!r} must be 'layernorm' or 'rmsnorm'")
    return Apply(f"{norm}[eps={float(eps)!r}]", arg)


def _standardize(norm: str, eps: float) -> Callable:
    def f(t):
        c = t - t.mean(-1, keepdim=True) if norm == "layernorm" else t
        return c / (c.pow(2).mean(-1, keepdim=True) + eps).sqrt()

    return f


def _evaluator(name: str) -> Callable:
    if name in _ACTIVATIONS:
        return _ACTIVATIONS[name]
    for norm in ("layernorm", "rmsnorm"):
        if name.startswith(f"{norm}[eps="):
            return _standardize(norm, float(name[len(norm) + 5 : -1]))
    raise CompileError(f"no numeric meaning for the opaque function {name!r}")


register_opaque(Apply, lambda node: (_evaluator(node.args[0].name), node.args[1]))
