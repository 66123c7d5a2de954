"""Path expansion of attention-only transformers with frozen patterns, and the composition of two layers.

Row convention, one sequence: the stream ``x_{l}`` is ``P x d_model``. With no
norms, no biases and every pattern ``A_{l,h}`` (``P x P``) frozen, layer ``l`` is

    x_{l+1} = x_{l} + sum_h A_{l,h} x_{l} W_OV^{l,h}          (W_OV = W_V W_O, d_model x d_model)

(the pattern acts on the left, mixing positions; ``W_OV`` on the right, mixing
features). Unrolled over ``L`` layers, ``x_{L}`` is the sum of ``(1 + H)^L`` *path
terms*: each layer is either skipped or passed through one of its ``H`` heads, so a
path through the heads ``(l_1, h_1), ..., (l_k, h_k)`` with ``l_1 < ... < l_k`` is

    A_{l_k,h_k} ... A_{l_1,h_1} x_{0} W_OV^{l_1,h_1} ... W_OV^{l_k,h_k}

the *direct path* (``k = 0``), a *single head* (``k = 1``) or a *virtual head*
(``k >= 2``, virtual weight ``W_OV^{l_1,h_1} ... W_OV^{l_k,h_k}``).

In two layers, a layer-1 head reads ``x_{1} = x_{0} + sum_h A_{0,h} x_{0} W_OV^{0,h}``
through its scores ``S = scale x_{1} W_QK x_{1}^T`` and its values ``A_{1,h'} x_{1}
W_OV^{1,h'}``: a layer-0 head on the query side of the scores is Q-composition, on
the key side K-composition, and on the value side V-composition (a virtual head).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import sympy as sp

from . import _atoms as at
from ._core import Assumption, Identity, Rule, Step
from ._induction import DEPTH, by_induction

__all__ = ["ov", "qk", "layer_update", "path_term", "path_terms", "path_expansion", "path_heads", "path_kind", "path_recurrence",
           "path_count", "Composition", "two_layer_composition", "composition_kind", "general", "ATTN_ONLY_FROZEN", "HEADS"]

ATTN_ONLY_FROZEN = (
    Assumption("attention-only", "an MLP adds a nonlinear function of the stream, which is no path term", lambda a: a.attn_only),
    Assumption("no norms", "a live norm divides the stream by its own scale (freeze it to keep the expansion)", lambda a: not a.has_norm),
    Assumption("no biases", "b_V W_O and b_O add terms that are no path's", lambda a: not (a.v_bias or a.o_bias)),
)
HEADS = sp.Symbol("H", integer=True, positive=True)
_FROZEN = ("A",)


def ov(l: object, h: object) -> sp.MatrixSymbol:
    """``W_OV^{l,h} = W_V^{l,h} W_O^{l,h}`` (``d_model x d_model``), the same atom as attention.ov_circuit's."""
    return at.atom("W_OV", "W_{OV}", at.D_MODEL, at.D_MODEL, l, h, sup=True)


def qk(l: object, h: object) -> sp.MatrixSymbol:
    """``W_QK^{l,h} = W_Q^{l,h} W_K^{l,h T}`` (``d_model x d_model``), the same atom as attention.qk_circuit's."""
    return at.atom("W_QK", "W_{QK}", at.D_MODEL, at.D_MODEL, l, h, sup=True)


def layer_update(l: object, n_heads: int) -> Rule:
    """The definition of layer ``l``: ``x_{l+1} = x_{l} + sum_h A_{l,h} x_{l} W_OV^{l,h}``."""
    x = at.stream(l)
    heads = sp.MatAdd(*[at.pattern(l, h) * x * ov(l, h) for h in range(n_heads)])
    return Rule(f"layer {l}'s update", "definition", {at.stream(l + 1): x + heads},
                "x_{l+1} = x_{l} + sum_h A_{l,h} x_{l} W_OV^{l,h} (attention-only, no biases, patterns frozen)")


def path_term(heads: tuple[tuple[int, int], ...]) -> sp.MatrixExpr:
    """The path through ``heads = ((l_1, h_1), ..., (l_k, h_k))``, layers increasing: patterns left, OV weights right."""
    if not heads:
        return at.stream(0)
    pats = [at.pattern(l, h) for l, h in reversed(heads)]
    return sp.MatMul(*pats, at.stream(0), *[ov(l, h) for l, h in heads])


def path_terms(L: int, H: int) -> tuple[sp.MatrixExpr, ...]:
    """The ``(1 + H)^L`` path terms, fewest heads first: every layer skipped (None) or through one head."""
    choices = itertools.product([None, *range(H)], repeat=L)
    paths = [tuple((l, h) for l, h in enumerate(c) if h is not None) for c in choices]
    return tuple(path_term(p) for p in sorted(paths, key=lambda p: (len(p), p)))


@functools.lru_cache(maxsize=64)
def path_expansion(L: int, H: int) -> Identity:
    """``paths.attention_only``: ``x_{L} = sum over the (1+H)^L paths`` for concrete ``L`` and ``H``.

    Derived by unfolding one layer at a time from the last (a checked rule
    application) and distributing (a checked expansion); the rhs is built
    independently by enumerating the paths, so the final check compares the two.
    Cached: an Identity is immutable (``path_expansion.__wrapped__`` rebuilds).
    """
    form, steps = at.stream(L), []
    for l in reversed(range(L)):
        rule = layer_update(l, H)
        form = rule.apply(form)
        steps.append(Step(form, f"definition: layer {l}'s update", rule))
        form = form.expand().doit()
        steps.append(Step(form, "distributivity"))
    rhs = sp.MatAdd(*path_terms(L, H)) if L else at.stream(0)
    return Identity(f"paths.attention_only[L={L},H={H}]", f"x_{{{L}}} = sum of the (1+{H})^{L} path terms", at.stream(L), rhs,
                    tuple(steps), ATTN_ONLY_FROZEN, frozen=_FROZEN, notes=f"{(1 + H) ** L} path terms")


def _factors(term: sp.MatrixExpr) -> list[sp.MatrixExpr]:
    """The matrix factors of a product (scalars dropped); a lone matrix is its own single factor."""
    if isinstance(term, sp.MatMul):
        return [f for f in term.args if isinstance(f, sp.MatrixExpr)]
    return [term]


def _kind(f: sp.Basic) -> tuple[str, tuple]:
    try:
        return at.atom_of(f) if isinstance(f, sp.MatrixSymbol) else ("", ())
    except KeyError:
        return "", ()


def path_heads(term: sp.MatrixExpr) -> tuple[tuple, ...]:
    """The heads ``(l, h)`` a path term passes through, in layer order (read from its OV factors)."""
    return tuple(idx for kind, idx in map(_kind, _factors(term)) if kind == "W_OV")


def path_kind(term: sp.MatrixExpr) -> str:
    """"direct" (no head), "single-head" (one) or "virtual-head" (two or more): a term's number of heads."""
    n = len(path_heads(term))
    return "direct" if n == 0 else "single-head" if n == 1 else "virtual-head"


def path_recurrence(L: int, H: int) -> Identity:
    """``x_{L+1} = T_L + sum_h A_{L,h} T_L W_OV^{L,h}``: each path of ``x_{L}`` once unchanged, once through each head.

    ``T_L`` is the explicit sum of ``x_{L}``'s path terms (``path_expansion(L, H)``,
    cited as a theorem); the new terms through head ``(L, h)`` all start with
    ``A_{L,h}``, which no term of ``T_L`` contains: the ``(1 + H) N(L)`` terms are distinct.
    """
    below = path_expansion(L, H)
    rule = layer_update(L, H)
    unfolded = rule.apply(at.stream(L + 1))
    theorem = Rule(below.id, "theorem", {at.stream(L): below.rhs}, below.statement)
    grouped = below.rhs + sp.MatAdd(*[sp.MatAdd(*[at.pattern(L, h) * t * ov(L, h) for t in path_terms(L, H)]) for h in range(H)])
    return Identity(f"paths.recurrence[L={L},H={H}]", "each path term of x_L appears once unchanged and once through each head of layer L",
                    at.stream(L + 1), grouped,
                    (Step(unfolded, f"definition: layer {L}'s update", rule),
                     Step(theorem.apply(unfolded), "path expansion of x_L", theorem),
                     Step(grouped, "distributivity")), ATTN_ONLY_FROZEN, frozen=_FROZEN)


def path_count(recurrences: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (2, 2))) -> Identity:
    """``paths.count``: ``N(L) = (1 + H)^L`` for every ``L`` and ``H``, by induction on ``L``.

    Base: ``N(0) = 1`` (``x_{0}`` is the only path). Step: ``N(L+1) = (1 + H) N(L)``,
    because every path term of ``x_{L}`` appears once unchanged and once through each
    of the ``H`` heads of layer ``L``, and these terms are distinct (those through head
    ``(L, h)`` and only those start with ``A_{L,h}``): :func:`path_recurrence`, checked
    for the concrete ``(L, H)`` in ``recurrences`` and attached as parts.
    """
    N = sp.Function("N")
    recurrence = Rule("each path continues unchanged or through one of H heads", "lemma", {N(DEPTH + 1): (1 + HEADS) * N(DEPTH)},
                      "N(L+1) = (1 + H) N(L): path_recurrence (checked for small L, H; tests compare with the expansions)")
    empty = Rule("the zero-layer model", "definition", {N(0): sp.Integer(1)}, "N(0) = 1: x_{0} is the only path")

    def claim(L):
        return N(L), (1 + HEADS) ** L

    return by_induction(
        "paths.count", "x_{L} has (1+H)^L path terms for every depth L", claim,
        lambda: [Step(sp.Integer(1), "definition: x_0 is the only path", empty)],
        lambda ih: [Step((1 + HEADS) * N(DEPTH), "each path term of x_L appears once unchanged and once through each head", recurrence),
                    Step((1 + HEADS) * (1 + HEADS) ** DEPTH, "induction hypothesis N(L) = (1+H)^L", ih)],
        ATTN_ONLY_FROZEN, frozen=_FROZEN, unrolled=tuple(path_recurrence(L, H) for L, H in recurrences),
    )


# ------------------------------------------------------------------ two-layer composition
_NO_ROTARY = Assumption("no rotary, no QK-norm", "the scores must be the bilinear form x W_QK x^T",
                        lambda a: a.positional != "rotary" and a.qk_norm == "none")
SCORE_KINDS = ("direct", "Q", "K", "QK")
OV_KINDS = ("ov_direct", "V")


def _group(kind: str, h: int, rows: sp.Expr, cols: sp.Expr) -> sp.MatrixSymbol:
    return at.atom("composition", f"T^{{{kind}}}", rows, cols, 1, h)


def composition_kind(term: sp.MatrixExpr) -> str:
    """Name a term of a layer-1 head by where a layer-0 OV weight sits.

    A scores term (it contains ``W_QK^{1,h}``): "Q" if some ``W_OV^{0,*}`` is left of
    ``W_QK`` (query side), "K" if some ``W_OV^{0,*}^T`` is right of it (key side),
    "QK" if both, "direct" if neither. A value term: "V" if it contains a
    ``W_OV^{0,*}`` (a virtual head), "ov_direct" otherwise.
    """
    factors = _factors(term)
    kinds = [_kind(f) for f in factors]
    layer0 = [k == "W_OV" and idx[0] == 0 for k, idx in kinds]
    layer0_t = [isinstance(f, sp.Transpose) and _kind(f.arg)[0] == "W_OV" and _kind(f.arg)[1][0] == 0 for f in factors]
    at_qk = [i for i, (k, _) in enumerate(kinds) if k == "W_QK"]
    if not at_qk:
        return "V" if any(layer0) else "ov_direct"
    i = at_qk[0]
    q, k = any(layer0[:i]), any(layer0_t[i + 1:])
    return "QK" if q and k else "Q" if q else "K" if k else "direct"


@dataclass(frozen=True)
class Composition:
    """Two layers' composition: for each layer-1 head, its scores and its write as sums of named terms.

    ``scores[h]``: ``S_{1,h} = T^{direct} + T^{Q} + T^{K} + T^{QK}``; ``ov[h]``:
    ``h_{1,h} = T^{ov_direct} + T^{V}``; ``terms[h][kind]``: the explicit terms of each group.
    """

    H0: int
    H1: int
    scores: tuple[Identity, ...]
    ov: tuple[Identity, ...]
    terms: dict[int, dict[str, tuple[sp.MatrixExpr, ...]]]


def _named(identity_id: str, statement: str, lhs, definition: Rule, update: Rule, groups: dict[str, list], h: int, shape) -> Identity:
    """lhs -> its definition -> layer 0's update substituted -> expanded -> the named groups."""
    form = definition.apply(lhs)
    steps = [Step(form, f"definition: {definition.name}", definition), Step(update.apply(form), "definition: layer 0's update", update)]
    expanded = sp.MatAdd(*[t for ts in groups.values() for t in ts])
    steps.append(Step(expanded, "distributivity; (A x W)^T = W^T x^T A^T"))
    names = {kind: _group(kind, h, *shape) for kind in groups}
    naming = Rule("the composition terms", "definition", {names[k]: sp.MatAdd(*ts) for k, ts in groups.items()},
                  "; ".join(f"T^{{{k}}} = {len(ts)} terms" for k, ts in groups.items()))
    rhs = sp.MatAdd(*names.values())
    steps.append(Step(rhs, "definition: the composition terms, named", naming))
    return Identity(identity_id, statement, lhs, rhs, tuple(steps), ATTN_ONLY_FROZEN + (_NO_ROTARY,), frozen=_FROZEN)


def two_layer_composition(H0: int, H1: int) -> Composition:
    """Expand every layer-1 head's scores ``scale x_1 W_QK^{1,h} x_1^T`` and write ``A_{1,h} x_1 W_OV^{1,h}`` over layer 0.

    With ``x_1 = x_0 + sum_a A_{0,a} x_0 W_OV^{0,a}``:

        S_{1,h} = scale [ x_0 W_QK x_0^T                                         (direct)
                        + sum_a A_{0,a} x_0 W_OV^{0,a} W_QK x_0^T                (Q-composition)
                        + sum_b x_0 W_QK W_OV^{0,b T} x_0^T A_{0,b}^T            (K-composition)
                        + sum_{a,b} A_{0,a} x_0 W_OV^{0,a} W_QK W_OV^{0,b T} x_0^T A_{0,b}^T ]   (QK)
        h_{1,h} = A_{1,h} x_0 W_OV^{1,h} + sum_a A_{1,h} A_{0,a} x_0 W_OV^{0,a} W_OV^{1,h}        (direct, V-composition)
    """
    from .attention import SCALE

    x0, update = at.stream(0), layer_update(0, H0)
    write = [at.pattern(0, a) * x0 * ov(0, a) for a in range(H0)]
    scores, ovs, terms = [], [], {}
    for h in range(H1):
        W = qk(1, h)
        groups = {
            "direct": [SCALE * x0 * W * x0.T],
            "Q": [SCALE * w * W * x0.T for w in write],
            "K": [SCALE * x0 * W * w.T for w in write],
            "QK": [SCALE * wa * W * wb.T for wa in write for wb in write],
        }
        S = at.atom("scores", "S", at.P, at.P, 1, h)
        definition = Rule("the layer-1 scores", "definition", {S: SCALE * at.stream(1) * W * at.stream(1).T},
                          "S_{1,h} = scale x_1 W_QK^{1,h} x_1^T (no biases, no rotary)")
        scores.append(_named(f"paths.composition.scores[h={h}]", "layer-1 scores = direct + Q- + K- + QK-composition terms", S,
                             definition, update, groups, h, (at.P, at.P)))
        A1, W1 = at.pattern(1, h), ov(1, h)
        ov_groups = {"ov_direct": [A1 * x0 * W1], "V": [A1 * w * W1 for w in write]}
        head_def = Rule("a layer-1 head's write", "definition", {at.head(1, h): A1 * at.stream(1) * W1}, "h_{1,h} = A_{1,h} x_1 W_OV^{1,h}")
        ovs.append(_named(f"paths.composition.ov[h={h}]", "layer-1 head write = direct + V-composition (virtual heads)", at.head(1, h),
                          head_def, update, ov_groups, h, (at.P, at.D_MODEL)))
        terms[h] = {k: tuple(v) for k, v in {**groups, **ov_groups}.items()}
    return Composition(H0, H1, tuple(scores), tuple(ovs), terms)


def general() -> list[Identity]:
    """The catalogue's share: the expansion for L = 1..3 (H = 2), the count for every L, the two-layer composition (H = 2)."""
    comp = two_layer_composition(2, 2)
    return [*(path_expansion(L, 2) for L in (1, 2, 3)), path_count(), *comp.scores, *comp.ov]
