"""Compile matrix expressions into straight-line functions of named tensors.

``compile_expr(expr)`` returns ``f(env)``: ``env`` maps each atom's name to an
array whose last two axes are the atom's matrix axes; any leading axes (batch)
broadcast. Only Python operators, ``.mT`` and an inverse are used, besides the
registered opaque functions, so the symbolic layer never imports torch: the same
function evaluates torch tensors and, when no opaque function occurs
(``f.plain``), NumPy arrays. ``lambdify`` is not used because its torch printer
handles 2-D matrices only.

=========================== ==============================
sympy node                  evaluated as
=========================== ==============================
MatrixSymbol ``n``          ``env[n]``
MatAdd                      ``a + b + ...``
MatMul (scalar c, factors)  ``c * (f1 @ f2 @ ...)``
Transpose                   ``t.mT``
Inverse                     ``t.inverse()`` (a NumPy array: ``numpy.linalg.inv``)
HadamardProduct             ``a * b``
ZeroMatrix                  ``0``
Symbol ``s`` / Number       ``env[s]`` / ``float``
an opaque node              its registered function of its argument (:func:`register_opaque`:
                            softmax and log-softmax row by row, activations, a norm's standardisation)
=========================== ==============================

:func:`compile_program` compiles several expressions, and the magnitude of the terms
of others (:func:`compile_magnitude`), into one function that returns them all. It
writes the Python source of that function, one line per distinct node: a subexpression
that occurs twice, in one expression or in several (an identity's two sides and the
magnitude of its right side share their atoms and many products), is computed once,
and evaluating is a straight run of array operations with no interpretation of the tree.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sympy as sp

from .. import CircuitproofError

__all__ = ["compile_expr", "compile_program", "compile_magnitude", "compile_identity", "register_opaque", "softmax_magnitude",
           "CompiledIdentity", "atoms_of"]


class CompileError(CircuitproofError):
    """An expression node the compiler does not know, or an atom missing from the environment."""


def atoms_of(expr: sp.Basic) -> tuple[str, ...]:
    """Names of the matrix and scalar symbols ``expr`` reads, sorted."""
    names = {s.name for s in expr.atoms(sp.MatrixSymbol)} | {s.name for s in expr.free_symbols if isinstance(s, sp.Symbol) and not s.is_integer}
    return tuple(sorted(names))


# node class -> (resolve(node) -> (function of an array, the node's argument), whether its magnitude is a row's)
_OPAQUE: dict[type, tuple[Callable[[sp.Basic], tuple[Callable, sp.Basic]], bool]] = {}


def register_opaque(cls: type, resolve: Callable[[sp.Basic], tuple[Callable, sp.Basic]], *, row_magnitude: bool = False) -> None:
    """Give the nodes of class ``cls`` (and its subclasses) a numeric meaning: ``resolve(node) -> (fn, argument)``.

    The node evaluates as ``fn(argument)``; ``fn`` uses array methods only. Its magnitude
    (:func:`compile_magnitude`) is ``|fn(argument)|``, or with ``row_magnitude`` the larger of
    that and the largest magnitude of the argument's row (softmax: see :func:`compile_magnitude`).
    """
    _OPAQUE[cls] = (resolve, row_magnitude)


def _opaque(expr: sp.Basic) -> tuple[Callable[[sp.Basic], tuple[Callable, sp.Basic]], bool] | None:
    for cls in type(expr).__mro__:
        if cls in _OPAQUE:
            return _OPAQUE[cls]
    return None


def _is_number(expr: sp.Basic) -> bool:
    return isinstance(expr, (sp.Integer, sp.Float, sp.Rational)) or (isinstance(expr, sp.Expr) and expr.is_number)


@dataclass
class _Writer:
    """The lines of one function ``_program(env)``, a variable per distinct node (value or magnitude)."""

    lines: list[str] = field(default_factory=list)
    namespace: dict[str, object] = field(default_factory=dict)  # the opaque functions the lines call
    memo: dict[tuple[str, sp.Basic], str] = field(default_factory=dict)  # ("v" | "m", node) -> its variable or literal
    plain: bool = True  # no opaque function: only operators, .mT and inverses, which NumPy arrays evaluate as torch tensors do

    def emit(self, code: str) -> str:
        name = f"t{len(self.lines)}"
        self.lines.append(f"    {name} = {code}")
        return name

    def function(self, fn: Callable) -> str:
        name = f"f{len(self.namespace)}"
        self.namespace[name] = fn
        return name

    def value(self, expr: sp.Basic) -> str:
        key = ("v", expr)
        if key not in self.memo:
            self.memo[key] = self._value(expr)
        return self.memo[key]

    def magnitude(self, expr: sp.Basic) -> str:
        key = ("m", expr)
        if key not in self.memo:
            self.memo[key] = self._magnitude(expr)
        return self.memo[key]

    def _value(self, expr: sp.Basic) -> str:
        if isinstance(expr, sp.MatrixSymbol):
            return self.emit(f"env[{expr.name!r}]")
        if isinstance(expr, sp.ZeroMatrix):
            return "0.0"
        if _is_number(expr):
            return repr(float(expr))
        if isinstance(expr, sp.Symbol):
            return self.emit(f"env[{expr.name!r}]")
        opaque = _opaque(expr)
        if opaque is not None:
            fn, arg = opaque[0](expr)
            self.plain = False
            return self.emit(f"{self.function(fn)}({self.value(arg)})")
        if isinstance(expr, (sp.MatAdd, sp.Add)):
            return self.emit(" + ".join(self.value(a) for a in expr.args))
        if isinstance(expr, sp.MatMul):
            return self._product(expr, self.value)
        if isinstance(expr, (sp.Mul, sp.HadamardProduct)):
            return self.emit(" * ".join(self.value(a) for a in expr.args))
        if isinstance(expr, sp.Transpose):
            return self.emit(f"{self.value(expr.arg)}.mT")
        if isinstance(expr, sp.Inverse):
            return self.emit(f"{self.function(_inverse)}({self.value(expr.arg)})")
        if isinstance(expr, sp.Pow) and expr.exp == -1:
            return self.emit(f"1.0 / {self.value(expr.base)}")
        raise CompileError(f"cannot compile {type(expr).__name__} node {expr}")

    def _product(self, expr: sp.MatMul, part: Callable[[sp.Basic], str]) -> str:
        """The matrices multiplied in order, then the scalar factors, each of ``part`` (value or magnitude)."""
        out = " @ ".join(part(a) for a in expr.args if isinstance(a, sp.MatrixExpr))
        for scalar in (a for a in expr.args if not isinstance(a, sp.MatrixExpr)):
            out = f"{part(scalar)} * ({out})"
        return self.emit(out)

    def _magnitude(self, expr: sp.Basic) -> str:
        opaque = _opaque(expr)
        if opaque is not None and opaque[1]:
            argument = self.magnitude(opaque[0](expr)[1])
            return self.emit(f"{self.function(softmax_magnitude)}({self.value(expr)}, {argument})")
        if opaque is not None or isinstance(expr, (sp.Inverse, sp.MatrixSymbol, sp.Symbol)):
            return self.emit(f"abs({self.value(expr)})")
        if isinstance(expr, sp.ZeroMatrix):
            return "0.0"
        if _is_number(expr):
            return repr(abs(float(expr)))
        if isinstance(expr, (sp.MatAdd, sp.Add)):
            return self.emit(" + ".join(self.magnitude(a) for a in expr.args))
        if isinstance(expr, sp.MatMul):
            return self._product(expr, self.magnitude)
        if isinstance(expr, (sp.Mul, sp.HadamardProduct)):
            return self.emit(" * ".join(self.magnitude(a) for a in expr.args))
        if isinstance(expr, sp.Transpose):
            return self.emit(f"{self.magnitude(expr.arg)}.mT")
        if isinstance(expr, sp.Pow) and expr.exp == -1:
            return self.emit(f"1.0 / {self.magnitude(expr.base)}")
        return self.emit(f"abs({self.value(expr)})")


def softmax_magnitude(value, argument_magnitude):
    """The magnitude of a softmax or log-softmax row: ``max(|value|, the largest finite entry of argument_magnitude's row)``.

    Shapes: ``value`` and ``argument_magnitude`` ``[..., n]`` (torch tensors); the result ``[..., n]``.
    The rule of :func:`compile_magnitude` (rounding ``d ~ u |s|`` in the scores moves ``softmax(s)_i`` by
    at most ``2 max|d|``); an infinite entry of the argument's magnitude (a masked score) does not count.
    """
    return abs(value).maximum(argument_magnitude.nan_to_num(posinf=0.0).amax(-1, keepdim=True))


def _inverse(t):
    """``t^{-1}`` over the last two axes: ``t.inverse()`` for a torch tensor, ``numpy.linalg.inv`` for a NumPy array."""
    inverse = getattr(t, "inverse", None)
    if inverse is not None:
        return inverse()
    import numpy

    return numpy.linalg.inv(t)


_PROGRAMS = itertools.count()


def compile_program(values: Sequence[sp.Basic], magnitudes: Sequence[sp.Basic] = ()) -> Callable[[Mapping[str, object]], tuple]:
    """``f(env) -> (value of each of values..., magnitude of each of magnitudes...)``, every distinct node computed once.

    ``f.plain`` is True when no opaque function occurs: ``f`` then evaluates NumPy arrays as
    well as torch tensors (operators, ``.mT`` and inverses only). Raises :class:`CompileError` for a node it does not know (when compiling) and for an
    atom missing from ``env`` (when evaluating).
    """
    writer = _Writer()
    outputs = [writer.value(e) for e in values] + [writer.magnitude(e) for e in magnitudes]
    source = "def _program(env):\n" + "".join(line + "\n" for line in writer.lines) + f"    return ({''.join(o + ', ' for o in outputs)})\n"
    namespace = dict(writer.namespace)
    exec(compile(source, f"<circuitproof program {next(_PROGRAMS)}>", "exec"), namespace)  # noqa: S102 - our own generated source
    program = namespace["_program"]

    def evaluate(env: Mapping[str, object]) -> tuple:
        try:
            return program(env)
        except KeyError as err:
            raise CompileError(f"no tensor bound to atom {err.args[0]!r}; bound: {sorted(env)}") from None

    evaluate.source = source  # what was compiled, for a reader
    evaluate.plain = writer.plain  # True: evaluates NumPy arrays as well as torch tensors (no opaque function)
    return evaluate


def compile_expr(expr: sp.Basic) -> Callable[[Mapping[str, object]], object]:
    """``f(env)`` evaluating ``expr`` on named arrays (see the module table)."""
    program = compile_program((expr,))
    return lambda env: program(env)[0]


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
    program = compile_program((), (expr,))
    return lambda env: program(env)[0]


@dataclass(frozen=True)
class CompiledIdentity:
    """Both sides of an identity as functions of named tensors, and the atoms they read.

    ``sides(env) -> (lhs, rhs, magnitude of rhs's terms)`` evaluates all three in one
    program, each shared subexpression once.
    """

    id: str
    lhs: Callable[[Mapping[str, object]], object]
    rhs: Callable[[Mapping[str, object]], object]
    atoms: dict[str, tuple[str, tuple]]  # name -> (kind, indices), see _atoms.atom_of; scalars as ("scalar", ())
    sides: Callable[[Mapping[str, object]], tuple] | None = None


def compile_identity(identity) -> CompiledIdentity:
    """Both sides of ``identity`` compiled, each alone and together with the magnitude of the right side's terms."""
    from ._atoms import atom_of

    names = sorted(set(atoms_of(identity.lhs)) | set(atoms_of(identity.rhs)))
    kinds = {}
    for name in names:
        try:
            kinds[name] = atom_of(sp.MatrixSymbol(name, 1, 1))
        except KeyError:
            kinds[name] = ("scalar", ())
    return CompiledIdentity(identity.id, compile_expr(identity.lhs), compile_expr(identity.rhs), kinds,
                            compile_program((identity.lhs, identity.rhs), (identity.rhs,)))
