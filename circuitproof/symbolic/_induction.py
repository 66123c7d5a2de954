"""Proof by induction over the depth, and the cross-check by explicit unrolling.

``by_induction`` proves a statement ``P(L): lhs(L) == rhs(L)`` for every depth
``L >= 0`` from two checked identities:

- the base case ``P(0)``;
- the inductive step ``P(L + 1)``, derived with ``L`` a sympy symbol, using
  ``P(L)`` only as the named rule "induction hypothesis" (``lhs(L) -> rhs(L)``).

Both are :class:`~circuitproof.symbolic.Identity` objects, so each of their steps
is checked. The result is an Identity for symbolic ``L`` whose single step cites
the two parts; ``unrolled`` identities for concrete ``L = 1..6`` are derived
separately, step by step, as a cross-check.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from ._core import Assumption, Identity, Rule, Step

__all__ = ["DEPTH", "by_induction", "hypothesis"]

DEPTH = sp.Symbol("L", integer=True, nonnegative=True)


def hypothesis(lhs: sp.Basic, rhs: sp.Basic) -> Rule:
    """The induction hypothesis ``P(L)`` as a rewrite ``lhs(L) -> rhs(L)``."""
    return Rule("induction hypothesis", "hypothesis", {lhs: rhs}, doc=f"P(L): {lhs} = {rhs}")


def by_induction(
    id: str,
    statement: str,
    claim: Callable[[sp.Expr], tuple[sp.Basic, sp.Basic]],
    base_steps: Callable[[], list[Step]],
    inductive_steps: Callable[[Rule], list[Step]],
    assumptions: tuple[Assumption, ...],
    frozen: tuple[str, ...] = (),
    notes: str = "",
    unrolled: tuple[Identity, ...] = (),
) -> Identity:
    """An Identity for every depth ``L``, proved from a checked base case and a checked inductive step."""
    lhs0, rhs0 = claim(sp.Integer(0))
    base = Identity(f"{id}[L=0]", "base case", lhs0, rhs0, tuple(base_steps()), assumptions)
    lhs_l, rhs_l = claim(DEPTH)
    lhs_next, rhs_next = claim(DEPTH + 1)
    step = Identity(f"{id}[L->L+1]", "inductive step", lhs_next, rhs_next, tuple(inductive_steps(hypothesis(lhs_l, rhs_l))), assumptions)
    theorem = Rule(
        "induction on L", "theorem", {lhs_l: rhs_l},
        doc=f"P(0) holds ({base.id}) and P(L) implies P(L+1) ({step.id}), each checked step by step",
    )
    return Identity(
        id, statement, lhs_l, rhs_l, (Step(rhs_l, "by induction on L: base case and inductive step, both checked", theorem),),
        assumptions, frozen, notes, parts=(base, step, *unrolled),
    )
