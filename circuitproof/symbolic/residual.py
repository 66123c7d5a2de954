"""The residual stream: the update rule, its expansion over every depth, and where post-norm breaks it.

Row convention, one sequence: ``x_{l}`` is ``P x d_model``. ``a_{l}`` and ``m_{l}``
are what the attention and the MLP *add* to the stream (after their output norm
under the "output" and "sandwich" placements). The three block kinds:

- sequential: ``x^{mid}_{l} = x_{l} + a_{l}``, ``x_{l+1} = x^{mid}_{l} + m_{l}``
  (the MLP reads ``x^{mid}_{l}``);
- parallel: ``x_{l+1} = x_{l} + a_{l} + m_{l}`` (both read ``x_{l}``);
- attention-only: ``x_{l+1} = x_{l} + a_{l}``.

In all three ``x_{l+1} = x_{l} + c_{l}`` with ``c_{l}`` the layer's contribution,
and by induction ``x_{L} = x_{0} + sum_{l<L} c_{l}`` for every ``L``. Post-norm
(BERT) replaces the sum by ``N(x^{mid}_{l} + m_{l})``: the derivation stops at the
first step and names that term.
"""

from __future__ import annotations

import sympy as sp

from ..arch import Arch
from . import _atoms as at
from ._core import Assumption, Identity, Refutation, Rule, Step, check_step
from ._induction import DEPTH, by_induction

__all__ = ["block_kind", "contribution", "update_rules", "additive", "expansion", "unrolled_expansion", "post_norm_refutation",
           "partial_sum", "NO_POST_NORM"]

BLOCK_KINDS = ("sequential", "parallel", "attn_only")
NO_POST_NORM = Assumption(
    "no post-norm", "a norm after the residual add (BERT) replaces x + a + m by N(x + a + m)",
    lambda arch: not (arch.has_norm and arch.norm_placement == "post"),
)
_LAYER = sp.Symbol("l", integer=True, nonnegative=True)


def block_kind(arch: Arch) -> str:
    """"attn_only", "parallel" or "sequential"."""
    return "attn_only" if arch.attn_only else "parallel" if arch.parallel else "sequential"


def contribution(kind: str, l: object) -> sp.MatrixExpr:
    """``c_{l}``: what layer ``l`` adds, ``a_{l} + m_{l}`` (``a_{l}`` attention-only)."""
    return at.attn(l) if kind == "attn_only" else at.attn(l) + at.mlp(l)


def update_rules(kind: str, l: object) -> list[Rule]:
    """The definitions of layer ``l``'s residual adds, last add first (the order a derivation unfolds them)."""
    x, nxt = at.stream(l), at.stream(l + 1)
    if kind == "sequential":
        return [
            Rule("the MLP's residual add", "definition", {nxt: at.mid(l) + at.mlp(l)}, "x_{l+1} = x^{mid}_{l} + m_{l}"),
            Rule("the attention's residual add", "definition", {at.mid(l): x + at.attn(l)}, "x^{mid}_{l} = x_{l} + a_{l}"),
        ]
    return [Rule("the layer's residual add", "definition", {nxt: x + contribution(kind, l)}, f"x_{{l+1}} = x_{{l}} + c_{{l}} ({kind})")]


def _unfold(kind: str, l: object, form: sp.MatrixExpr) -> list[Step]:
    """Steps that replace ``x_{l+1}`` in ``form`` by ``x_{l} + c_{l}``, one residual add at a time."""
    steps = []
    for rule in update_rules(kind, l):
        form = rule.apply(form)
        steps.append(Step(form, f"definition: {rule.name} (layer {l})", rule))
    return steps


def additive(kind: str) -> Identity:
    """``residual.additive``: ``x_{l+1} = x_{l} + a_{l} + m_{l}`` for any layer ``l``."""
    l = _LAYER
    lhs, rhs = at.stream(l + 1), at.stream(l) + contribution(kind, l)
    return Identity(
        "residual.additive", "x_{l+1} = x_{l} + a_{l} + m_{l} (attention-only: x_{l} + a_{l})", lhs, rhs,
        tuple(_unfold(kind, l, lhs)), (NO_POST_NORM,),
        notes=f"block kind {kind}" + ("; the MLP reads x^{mid}_{l} = x_{l} + a_{l}" if kind == "sequential" else ""),
    )


def partial_sum(kind: str, L: object) -> sp.MatrixSymbol:
    """``S_{L} = sum_{l<L} c_{l}``, an atom defined by ``S_{0} = 0`` and ``S_{L+1} = S_{L} + c_{L}``."""
    return at.atom(f"partial_sum_{kind}", rf"\Sigma^{{{kind}}}", at.P, at.D_MODEL, L)


def unrolled_expansion(kind: str, L: int) -> Identity:
    """``x_{L} = x_{0} + sum_{l<L} c_{l}`` for a concrete ``L``, unfolding one layer at a time."""
    lhs = at.stream(L)
    rhs = at.stream(0) + sp.MatAdd(*[contribution(kind, l) for l in range(L)]) if L else at.stream(0)
    steps, form = [], lhs
    for l in reversed(range(L)):
        new = _unfold(kind, l, form)
        steps += new
        form = new[-1].expr
    return Identity(f"residual.expansion[L={L}]", f"x_{{{L}}} unrolled", lhs, rhs, tuple(steps), (NO_POST_NORM,))


def expansion(kind: str, depths: range = range(1, 7)) -> Identity:
    """``residual.expansion``: ``x_{L} = x_{0} + sum_{l<L} c_{l}`` for every L, by induction; unrolled for ``depths``."""

    def claim(L: sp.Expr) -> tuple[sp.MatrixExpr, sp.MatrixExpr]:
        return at.stream(L), at.stream(0) + partial_sum(kind, L)

    zero = sp.ZeroMatrix(at.P, at.D_MODEL)
    empty = Rule("the empty sum", "definition", {partial_sum(kind, 0): zero}, "S_{0} = 0")
    peel = Rule("the partial sum's last term", "definition",
                {partial_sum(kind, DEPTH + 1): partial_sum(kind, DEPTH) + contribution(kind, DEPTH)}, "S_{L+1} = S_{L} + c_{L}")

    def base() -> list[Step]:
        return [Step(at.stream(0) + partial_sum(kind, 0), "definition: the empty sum S_{0} = 0", empty)]

    def inductive(ih: Rule) -> list[Step]:
        steps = _unfold(kind, DEPTH, at.stream(DEPTH + 1))
        form = ih.apply(steps[-1].expr)
        steps.append(Step(form, "induction hypothesis x_{L} = x_{0} + S_{L}", ih))
        steps.append(Step(at.stream(0) + partial_sum(kind, DEPTH + 1), "definition: S_{L+1} = S_{L} + c_{L}", peel))
        return steps

    return by_induction(
        "residual.expansion", "x_{L} = x_{0} + sum_{l<L} (a_{l} + m_{l}) for every depth L", claim, base, inductive,
        (NO_POST_NORM,), notes=f"block kind {kind}", unrolled=tuple(unrolled_expansion(kind, L) for L in depths),
    )


def post_norm_refutation() -> Refutation:
    """Under post-norm, the additive step fails: ``x_{l+1} = N(x^{mid}_{l} + m_{l})``, not ``x_{l} + a_{l} + m_{l}``."""
    l = _LAYER
    normed = at.atom("norm_out", "N^{mlp}", at.P, at.D_MODEL, l)  # N(x^{mid}_{l} + m_{l})
    normed_mid = at.atom("norm_out", "N^{attn}", at.P, at.D_MODEL, l)  # N(x_{l} + a_{l})
    rules = [
        Rule("the MLP's add then its post-norm", "definition", {at.stream(l + 1): normed}, "x_{l+1} = N^{mlp}_{l}(x^{mid}_{l} + m_{l})"),
        Rule("the attention's add then its post-norm", "definition", {at.mid(l): normed_mid}, "x^{mid}_{l} = N^{attn}_{l}(x_{l} + a_{l})"),
    ]
    target = at.stream(l) + at.attn(l) + at.mlp(l)
    failing = Step(target, "the additive update x_{l+1} = x_{l} + a_{l} + m_{l}", rules[0])
    remainder = check_step(at.stream(l + 1), failing)
    return Refutation(
        "residual.additive", (), failing, remainder,
        "N^{mlp}_{l} = LN(x^{mid}_{l} + m_{l}) replaces the sum: the post-norm rescales and recentres the whole stream, "
        "so no component's write survives additively",
    )
