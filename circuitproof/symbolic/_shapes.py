"""Shape checks that sympy does not make.

With symbolic dimensions sympy accepts ``W_Q * W_Q`` for two ``d_model x d_head``
matrices (it cannot prove ``d_model != d_head``). circuitproof's dimensions are
distinct symbols by convention, so a product is valid only when each factor's
columns are *structurally* its right neighbour's rows, and a sum only when the
shapes are equal. :func:`check_shapes` walks an expression and raises
:class:`~circuitproof.ShapeError` naming both matrices.
"""

from __future__ import annotations

import sympy as sp

from .. import ShapeError

__all__ = ["check_shapes"]


def _shape(e: sp.Basic) -> tuple[sp.Expr, sp.Expr] | None:
    return tuple(e.shape) if isinstance(e, sp.MatrixExpr) else None


def check_shapes(expr: sp.Basic, where: str = "") -> None:
    """Raise ShapeError if any product or sum in ``expr`` pairs structurally different dimensions."""
    prefix = f"{where}: " if where else ""
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.MatMul):
            mats = [a for a in node.args if isinstance(a, sp.MatrixExpr)]
            for left, right in zip(mats, mats[1:]):
                if sp.simplify(left.shape[1] - right.shape[0]) != 0:
                    raise ShapeError(
                        f"{prefix}product {left} * {right}: {left} is {left.shape[0]} x {left.shape[1]}, "
                        f"{right} is {right.shape[0]} x {right.shape[1]}; {left.shape[1]} != {right.shape[0]}"
                    )
        elif isinstance(node, (sp.MatPow, sp.Inverse)):
            base = node.args[0]
            if sp.simplify(base.shape[0] - base.shape[1]) != 0:
                raise ShapeError(f"{prefix}{node}: {base} is {base.shape[0]} x {base.shape[1]}, not square")
        elif isinstance(node, (sp.MatAdd, sp.HadamardProduct)):
            shapes = {(a, _shape(a)) for a in node.args if _shape(a) is not None}
            first = next(iter(shapes))
            for other in shapes:
                if any(sp.simplify(x - y) != 0 for x, y in zip(first[1], other[1])):
                    raise ShapeError(f"{prefix}sum of {first[0]} ({first[1]}) and {other[0]} ({other[1]}): shapes differ")
