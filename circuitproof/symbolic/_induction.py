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

from ._core import ALWAYS, Assumption, Identity, Rule, Step

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
    assumptions: tuple[Assumption, ...] = (ALWAYS,),
    frozen: tuple[str, ...] = (),
    notes: str = "",
    unrolled: tuple[Identity, ...] = (),
    variable: sp.Symbol = DEPTH,
    hypothesis_rewrite: dict | None = None,
) -> Identity:
    """An Identity for every ``variable >= 0`` (the depth ``L`` by default), from a checked base case and inductive step.

    ``hypothesis_rewrite`` states ``P(n)`` as another rewrite than ``lhs(n) -> rhs(n)``
    (e.g. ``{A B_n: B_{n+1} - b}`` for ``A B_n + b = B_{n+1}``); it must be ``P(n)`` rearranged.
    """
    n = variable
    lhs0, rhs0 = claim(sp.Integer(0))
    base = Identity(f"{id}[{n}=0]", "base case", lhs0, rhs0, tuple(base_steps()), assumptions)
    lhs_n, rhs_n = claim(n)
    lhs_next, rhs_next = claim(n + 1)
    ih = hypothesis(lhs_n, rhs_n)
    if hypothesis_rewrite is not None:
        ih = Rule(ih.name, ih.kind, hypothesis_rewrite, ih.doc)
    step = Identity(f"{id}[{n}->{n}+1]", "inductive step", lhs_next, rhs_next, tuple(inductive_steps(ih)), assumptions)
    theorem = Rule(
        f"induction on {n}", "theorem", {lhs_n: rhs_n},
        doc=f"P(0) holds ({base.id}) and P({n}) implies P({n}+1) ({step.id}), each checked step by step",
    )
    return Identity(
        id, statement, lhs_n, rhs_n, (Step(rhs_n, f"by induction on {n}: base case and inductive step, both checked", theorem),),
        assumptions, frozen, notes, parts=(base, step, *unrolled),
    )
