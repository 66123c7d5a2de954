"""Opaque functions and the compiler the claims catalogue evaluates its identities with.

Activations and a norm's standardisation are :class:`~circuitproof.symbolic.seed.Apply`
nodes named by :func:`activation` and :func:`standardize`; :func:`compile_extra` gives
them, softmax and log-softmax their numeric meaning with array methods only (no torch
import), beside what :func:`~circuitproof.symbolic.compile_expr` compiles;
:func:`compile_magnitude` bounds the magnitude of the terms of an expression (the scale
errors are measured against); :func:`compile_identity_extra` compiles both sides of an
identity.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import sympy as sp

from . import _atoms as at
from ._compile import CompiledIdentity, CompileError, compile_expr
from ._core import Identity
from .norms import LogSoftmax, RowWise, Softmax
from .seed import Apply

__all__ = ["activation", "standardize", "compile_extra", "compile_magnitude", "compile_identity_extra"]

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


def compile_extra(expr: sp.Basic) -> Callable[[Mapping[str, object]], object]:
    """``f(env)`` like :func:`~circuitproof.symbolic.compile_expr`, also through Apply, RowWise and Hadamard nodes."""
    if isinstance(expr, Apply):
        inner, fn = compile_extra(expr.args[1]), _evaluator(expr.args[0].name)
        return lambda env: fn(inner(env))
    if isinstance(expr, RowWise):
        inner, fn = compile_extra(expr.arg), type(expr).evaluate
        return lambda env: fn(inner(env))
    if not expr.has(Apply, RowWise):
        return compile_expr(expr)
    parts = [compile_extra(a) for a in expr.args]
    if isinstance(expr, sp.MatAdd):
        return lambda env: functools.reduce(lambda a, b: a + b, (p(env) for p in parts))
    if isinstance(expr, sp.HadamardProduct):
        return lambda env: functools.reduce(lambda a, b: a * b, (p(env) for p in parts))
    if isinstance(expr, sp.MatMul):
        return _matmul(expr, parts)
    raise CompileError(f"cannot compile {type(expr).__name__} around an opaque function: {expr}")


def compile_magnitude(expr: sp.Basic) -> Callable[[Mapping[str, object]], object]:
    """``f(env)``: an entrywise bound on the magnitude of the terms that make up ``expr``.

    Each atom counts by its absolute value, a sum by the sum of its terms' magnitudes
    and a product by the product of its factors' (``|A B| <= |A| |B|``), so that a
    result that is small by cancellation keeps the scale of what cancelled. Rounding
    error in evaluating ``expr`` is bounded by a small multiple of this scale, not of
    ``|expr|``. A softmax or log-softmax row counts by the larger of its result and the
    largest magnitude of its argument's row: an absolute error ``d`` in the scores moves
    ``softmax(s)_i`` by ``p_i (d_i - sum_j p_j d_j)``, at most ``2 max|d|``, and float
    rounding makes ``d ~ u |s|``, so large scores leave a pattern error of ``u max|s|``,
    not of ``u``. An inverse or another opaque function counts by the absolute value of
    its result.
    """
    if isinstance(expr, (Softmax, LogSoftmax)):
        value, argument = compile_extra(expr), compile_magnitude(expr.args[0])

        def row_scale(env):
            scores = argument(env).nan_to_num(posinf=0.0)  # a masked entry (-inf) has no rounding to carry
            return abs(value(env)).maximum(scores.amax(-1, keepdim=True))

        return row_scale
    if isinstance(expr, (Apply, RowWise, sp.Inverse)):
        value = compile_extra(expr)
        return lambda env: abs(value(env))
    if isinstance(expr, sp.MatrixSymbol) or isinstance(expr, sp.Symbol):
        value = compile_expr(expr)
        return lambda env: abs(value(env))
    if isinstance(expr, sp.ZeroMatrix):
        return lambda env: 0.0
    if isinstance(expr, sp.Expr) and expr.is_number:
        value = abs(float(expr))
        return lambda env: value
    parts = [compile_magnitude(a) for a in expr.args]
    if isinstance(expr, (sp.MatAdd, sp.Add)):
        return lambda env: functools.reduce(lambda a, b: a + b, (p(env) for p in parts))
    if isinstance(expr, sp.HadamardProduct) or (isinstance(expr, sp.Mul) and not isinstance(expr, sp.MatMul)):
        return lambda env: functools.reduce(lambda a, b: a * b, (p(env) for p in parts))
    if isinstance(expr, sp.MatMul):
        return _matmul(expr, parts)
    if isinstance(expr, sp.Transpose):
        return lambda env: parts[0](env).mT
    if isinstance(expr, sp.Pow) and expr.exp == -1:
        return lambda env: 1.0 / parts[0](env)
    value = compile_extra(expr)
    return lambda env: abs(value(env))


def compile_identity_extra(identity: Identity) -> CompiledIdentity:
    """Both sides of ``identity`` compiled with :func:`compile_extra`; the atoms as ``Identity.compile`` reports them."""
    plain = _atoms_table(identity)
    return CompiledIdentity(identity.id, compile_extra(identity.lhs), compile_extra(identity.rhs), plain)


def _atoms_table(identity: Identity) -> dict[str, tuple[str, tuple]]:
    names = set()
    for side in (identity.lhs, identity.rhs):
        names |= {s.name for s in side.atoms(sp.MatrixSymbol)}
        names |= {s.name for s in side.free_symbols if isinstance(s, sp.Symbol) and not s.is_integer}
    table = {}
    for name in sorted(names):
        try:
            table[name] = at.atom_of(sp.MatrixSymbol(name, 1, 1))
        except KeyError:
            table[name] = ("scalar", ())
    return table


def _matmul(expr: sp.MatMul, parts: list[Callable]) -> Callable[[Mapping[str, object]], object]:
    """``f(env)`` of a product from its compiled factors: the matrices multiplied in order, then the scalar factors."""
    mats = [p for a, p in zip(expr.args, parts) if isinstance(a, sp.MatrixExpr)]
    scalars = [p for a, p in zip(expr.args, parts) if not isinstance(a, sp.MatrixExpr)]

    def product(env):
        out = functools.reduce(lambda a, b: a @ b, (m(env) for m in mats))
        for c in scalars:
            out = c(env) * out
        return out

    return product
