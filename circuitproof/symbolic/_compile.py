"""Compile matrix expressions into functions of named tensors.

``compile_expr(expr)`` returns ``f(env)``: ``env`` maps each atom's name to an
array whose last two axes are the atom's matrix axes; any leading axes (batch)
broadcast. Only Python operators and array methods are used (``@``, ``+``, ``*``,
``.mT``, ``.inverse()``), so the symbolic layer never imports torch: the same
function evaluates torch tensors in the numeric layer. ``lambdify`` is not used
because its torch printer handles 2-D matrices only.

=========================== ==============================
sympy node                  evaluated as
=========================== ==============================
MatrixSymbol ``n``          ``env[n]``
MatAdd                      ``a + b + ...``
MatMul (scalar c, factors)  ``c * (f1 @ f2 @ ...)``
Transpose                   ``t.mT``
Inverse                     ``t.inverse()``
HadamardProduct             ``a * b``
ZeroMatrix                  ``0``
Symbol ``s`` / Number       ``env[s]`` / ``float``
=========================== ==============================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import reduce

import sympy as sp

from .. import CircuitproofError

__all__ = ["compile_expr", "compile_identity", "CompiledIdentity", "atoms_of"]


class CompileError(CircuitproofError):
    """An expression node the compiler does not know, or an atom missing from the environment."""


def atoms_of(expr: sp.Basic) -> tuple[str, ...]:
    """Names of the matrix and scalar symbols ``expr`` reads, sorted."""
    names = {s.name for s in expr.atoms(sp.MatrixSymbol)} | {s.name for s in expr.free_symbols if isinstance(s, sp.Symbol) and not s.is_integer}
    return tuple(sorted(names))


def _lookup(env: Mapping[str, object], name: str) -> object:
    try:
        return env[name]
    except KeyError:
        raise CompileError(f"no tensor bound to atom {name!r}; bound: {sorted(env)}") from None


def compile_expr(expr: sp.Basic) -> Callable[[Mapping[str, object]], object]:
    """``f(env)`` evaluating ``expr`` on named arrays (see the module table)."""
    if isinstance(expr, sp.MatrixSymbol):
        name = expr.name
        return lambda env: _lookup(env, name)
    if isinstance(expr, sp.ZeroMatrix):
        return lambda env: 0.0
    if isinstance(expr, (sp.Integer, sp.Float, sp.Rational)) or (isinstance(expr, sp.Expr) and expr.is_number):
        value = float(expr)
        return lambda env: value
    if isinstance(expr, sp.Symbol):
        name = expr.name
        return lambda env: _lookup(env, name)
    parts = [compile_expr(a) for a in expr.args]
    if isinstance(expr, (sp.MatAdd, sp.Add)):
        return lambda env: reduce(lambda a, b: a + b, (p(env) for p in parts))
    if isinstance(expr, sp.MatMul):
        scalars = [p for a, p in zip(expr.args, parts) if not isinstance(a, sp.MatrixExpr)]
        mats = [p for a, p in zip(expr.args, parts) if isinstance(a, sp.MatrixExpr)]

        def matmul(env):
            out = reduce(lambda a, b: a @ b, (m(env) for m in mats))
            for s in scalars:
                out = s(env) * out
            return out

        return matmul
    if isinstance(expr, sp.Mul):
        return lambda env: reduce(lambda a, b: a * b, (p(env) for p in parts))
    if isinstance(expr, sp.Transpose):
        return lambda env: parts[0](env).mT
    if isinstance(expr, sp.Inverse):
        return lambda env: parts[0](env).inverse()
    if isinstance(expr, sp.HadamardProduct):
        return lambda env: reduce(lambda a, b: a * b, (p(env) for p in parts))
    if isinstance(expr, sp.Pow) and expr.exp == -1:
        return lambda env: 1.0 / parts[0](env)
    raise CompileError(f"cannot compile {type(expr).__name__} node {expr}")


@dataclass(frozen=True)
class CompiledIdentity:
    """Both sides of an identity as functions of named tensors, and the atoms they read."""

    id: str
    lhs: Callable[[Mapping[str, object]], object]
    rhs: Callable[[Mapping[str, object]], object]
    atoms: dict[str, tuple[str, tuple]]  # name -> (kind, indices), see _atoms.atom_of; scalars as ("scalar", ())


def compile_identity(identity) -> CompiledIdentity:
    from ._atoms import atom_of

    names = sorted(set(atoms_of(identity.lhs)) | set(atoms_of(identity.rhs)))
    kinds = {}
    for name in names:
        try:
            kinds[name] = atom_of(sp.MatrixSymbol(name, 1, 1))
        except KeyError:
            kinds[name] = ("scalar", ())
    return CompiledIdentity(identity.id, compile_expr(identity.lhs), compile_expr(identity.rhs), kinds)
