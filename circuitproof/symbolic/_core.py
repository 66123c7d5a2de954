"""Identities and their checked derivations.

An :class:`Identity` is one small immutable object: an id, ``lhs`` and ``rhs``
(sympy matrix expressions in the row convention), the :class:`Assumption` s on
the architecture under which it holds, and its derivation: a list of
:class:`Step` s from ``lhs`` to ``rhs``. Every step is checked when the identity
is made, by :func:`check_step`:

- *algebra*: ``(previous - current).expand().doit()`` reduces to zero. Expansion
  of non-commutative matrix polynomials is a sound canonicalisation: it only
  applies distributivity, associativity, transposition of products and the
  cancellation of ``M M^-1``.
- *a named rule*: the step's :class:`Rule` (a definition of the model, the
  induction hypothesis, or a lemma such as "the rows of A sum to one") rewrites
  the previous form, and the difference with the current form then reduces to
  zero as above. Lemmas have their own soundness tests (tests/symbolic).

A step that does not check raises :class:`DerivationError` showing the step and
the remainder. Nothing is accepted on trust.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy as sp

from .. import CircuitproofError
from ..arch import Arch
from ._shapes import check_shapes

__all__ = ["Assumption", "Rule", "Step", "Identity", "Refutation", "DerivationError", "check_step", "is_zero", "ALWAYS"]


class DerivationError(CircuitproofError):
    """A derivation step does not follow from the previous one.

    The message shows the identity, the step, its justification and the
    remainder that did not reduce to zero. Cause: a wrong step (a dropped term, a
    rule that does not apply). Fix the step; never accept it on trust.
    """


@dataclass(frozen=True)
class Assumption:
    """A precondition on the architecture: ``holds(arch)`` with the reason it is needed."""

    name: str
    reason: str
    holds: Callable[[Arch], bool]

    def __repr__(self) -> str:
        return f"Assumption({self.name!r})"


ALWAYS = Assumption("always", "holds for every architecture of the family", lambda arch: True)


@dataclass(frozen=True)
class Rule:
    """A named rewrite: replace each key of ``mapping`` by its value.

    A key is a matrix expression; a key that is a product (``A * 1``) also
    matches that run of consecutive factors inside a longer product.
    ``kind`` is "definition" (how the model computes), "hypothesis" (the induction
    hypothesis) or "lemma" (a fact with its own soundness test).

    Before/after, e.g. the lemma ``rows of A sum to one``: ``A 1 b_V W_O -> 1 b_V W_O``.
    """

    name: str
    kind: str
    mapping: Mapping[sp.Basic, sp.Basic]
    doc: str = ""

    def apply(self, expr: sp.Basic) -> sp.Basic:
        """``expr`` with every occurrence of every key replaced."""
        out = expr
        for old, new in self.mapping.items():
            out = _replace(out, old, new)
        return out


def _replace(expr: sp.Basic, old: sp.Basic, new: sp.Basic) -> sp.Basic:
    """Replace ``old`` by ``new`` in ``expr``: whole subtrees, and runs of factors inside products."""
    if not isinstance(old, sp.MatMul):
        return expr.xreplace({old: new})
    pattern = old.args

    def walk(e: sp.Basic) -> sp.Basic:
        if not e.args:
            return e
        args = [walk(a) for a in e.args]
        if isinstance(e, sp.MatMul):
            i, out = 0, []
            while i < len(args):
                if tuple(args[i : i + len(pattern)]) == tuple(pattern):
                    out.append(new)
                    i += len(pattern)
                else:
                    out.append(args[i])
                    i += 1
            return sp.MatMul(*out)
        return e.func(*args)

    return walk(expr)


@dataclass(frozen=True)
class Step:
    """One form of the derivation, the justification for reaching it, and the rule used (if any)."""

    expr: sp.Basic
    why: str
    rule: Rule | None = None


def is_zero(expr: sp.Basic) -> bool:
    """Whether ``expr`` reduces to zero by expansion (matrix or scalar)."""
    if expr.has(sp.BlockMatrix):
        expr = sp.block_collapse(expr)
    reduced = expr.expand().doit() if hasattr(expr, "doit") else expr
    if isinstance(reduced, sp.MatrixExpr):
        reduced = reduced.expand().doit()
        return isinstance(reduced, sp.ZeroMatrix) or reduced == 0
    return sp.simplify(reduced) == 0


def check_step(previous: sp.Basic, step: Step) -> sp.Basic | None:
    """None if ``step`` follows from ``previous``, else the remainder that does not vanish.

    With a rule, the rule rewrites both forms (sound: it replaces a matrix by one
    equal to it), before and after expansion, and their difference must vanish.
    """
    current = step.expr
    pairs = [(previous, current)]
    if step.rule is not None:
        rule = step.rule
        pairs = [(rule.apply(previous), rule.apply(current)), (rule.apply(previous.expand().doit()), rule.apply(current.expand().doit()))]
    remainder = None
    for before, after in pairs:
        diff = before - after
        if is_zero(diff):
            return None
        remainder = diff.expand().doit()
    return remainder


@dataclass(frozen=True)
class Refutation:
    """Where a derivation of a claim breaks: the steps that held, the step that fails, and what is left over."""

    claim: str
    steps: tuple[Step, ...]
    failing: Step
    remainder: sp.Basic
    term: str

    def describe(self) -> str:
        return f"{self.claim}: the step '{self.failing.why}' fails; it leaves {self.remainder} ({self.term})"


@dataclass(frozen=True)
class Identity:
    """An identity ``lhs == rhs`` with its assumptions and a checked derivation from lhs to rhs.

    Construction checks shapes of every form and every step; a step that does not
    follow raises :class:`DerivationError`.
    """

    id: str
    statement: str
    lhs: sp.Basic
    rhs: sp.Basic
    steps: tuple[Step, ...]
    assumptions: tuple[Assumption, ...] = (ALWAYS,)
    frozen: tuple[str, ...] = ()
    notes: str = ""
    parts: tuple[Identity, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        for form in (self.lhs, self.rhs, *(s.expr for s in self.steps)):
            check_shapes(form, where=self.id)
        previous = self.lhs
        for number, step in enumerate(self.steps, 1):
            remainder = check_step(previous, step)
            if remainder is not None:
                raise DerivationError(
                    f"{self.id}: step {number} ('{step.why}') does not follow.\n  from: {previous}\n  to:   {step.expr}\n"
                    f"  remainder: {remainder}"
                )
            previous = step.expr
        if not is_zero(previous - self.rhs):
            raise DerivationError(f"{self.id}: the derivation ends at {previous}, not at the rhs {self.rhs}")

    def applies(self, arch: Arch) -> tuple[bool, str]:
        """Whether every assumption holds for ``arch``, and the reason of the first that does not."""
        for a in self.assumptions:
            if not a.holds(arch):
                return False, f"{a.name}: {a.reason}"
        return True, "all assumptions hold"

    def render(self, fmt: str = "markdown") -> str:
        from ._render import render

        return render(self, fmt)

    def compile(self):
        """Both sides as functions of named tensors: ``compiled.lhs(env)``, ``compiled.rhs(env)`` (see :mod:`._compile`)."""
        from ._compile import compile_identity

        return compile_identity(self)
