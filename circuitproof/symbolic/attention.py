"""Attention: the head split, the QK circuit with its bias terms, rotary, the OV circuit, the gauge freedoms.

One layer ``l`` and head ``h``, row convention: the attention reads ``X``
(``P x d_model``, the stream after the input norm), ``q = X W_Q + 1 b_Q``,
``k = X W_K + 1 b_K``, ``v = X W_V + 1 b_V``, scores ``S = scale * q k^T``
(``P x P``, query rows, key columns), pattern ``A = softmax(mask(S))`` row-wise,
``z = A v`` and the head's write ``h = z W_O``. ``W_QK = W_Q W_K^T`` and
``W_OV = W_V W_O`` are ``d_model x d_model``. The seed's column-convention
``W_Q^T W_K`` is our ``W_Q W_K^T`` and its ``W_O W_V`` our ``W_V W_O``.
"""

from __future__ import annotations

import sympy as sp

from . import _atoms as at
from ._core import Assumption, Identity, Refutation, Rule, Step, check_step

__all__ = ["head_sum", "qk_circuit", "key_constant_terms", "key_bias_invariance_terms", "rotary_scores", "rotary_qk_refutation",
           "rows_sum_to_one", "ov_circuit", "gauge_qk", "gauge_ov", "gauge_qk_rotary_refutation", "linear_given_pattern", "NO_ROTARY"]

_l, _h = sp.Symbol("l", integer=True, nonnegative=True), sp.Symbol("h", integer=True, nonnegative=True)
SCALE = sp.Symbol("scale", positive=True)
NO_ROTARY = Assumption("no rotary, no QK-norm", "rotary makes the bilinear form depend on the offset i - j; QK-norm is nonlinear in q and k",
                       lambda arch: arch.positional != "rotary" and arch.qk_norm == "none")
NO_SOFTCAP = Assumption("no score softcap", "c tanh(S / c) is not bilinear in the stream", lambda arch: arch.attn_softcap is None)


def _w(name: str, l: object = _l, h: object = _h) -> sp.MatrixSymbol:
    return at.weight(name, l, h)


def _b(name: str, l: object = _l, h: object = _h) -> sp.MatrixSymbol:
    return at.bias(name, l, h)


# ------------------------------------------------------------------ head split
def head_sum(n_heads: int, l: object = _l, o_bias: bool = True) -> Identity:
    """``attention.head_sum``: ``concat_h(z_h) W_O + 1 b_O = sum_h z_h W_O^h + 1 b_O = sum_h h_h + 1 b_O``.

    ``W_O`` stacks the heads' ``W_O^h`` (``d_head x d_model``) vertically; the product
    with the concatenation of the ``z_h`` is the sum of the blocks' products.
    """
    zs = [at.z(l, h) for h in range(n_heads)]
    wos = [_w("W_O", l, h) for h in range(n_heads)]
    bias = at.ones() * at.bias("b_O", l) if o_bias else sp.ZeroMatrix(at.P, at.D_MODEL)
    concat = sp.BlockMatrix([zs]) * sp.BlockMatrix([[w] for w in wos])
    definition = Rule("the attention output", "definition", {at.attn_raw(l): concat + bias}, "o = concat_h(z_h) W_O + 1 b_O")
    per_head = sp.MatAdd(*[z * w for z, w in zip(zs, wos)]) + bias
    heads = Rule("a head's write", "definition", {z * w: at.head(l, h) for h, (z, w) in enumerate(zip(zs, wos))}, "h_h = z_h W_O^h")
    rhs = sp.MatAdd(*[at.head(l, h) for h in range(n_heads)]) + bias
    return Identity(
        "attention.head_sum", "attn_l = sum_h head_{l,h} + 1 b_O", at.attn_raw(l), rhs,
        (Step(concat + bias, "definition: the output projection of the concatenated heads", definition),
         Step(per_head, "block multiplication: [z_1 ... z_H] [W_O^1; ...; W_O^H] = sum_h z_h W_O^h"),
         Step(rhs, "definition: head_h = z_h W_O^h", heads)),
        notes=f"H = {n_heads}; GQA changes which v a head reads, not this sum over query heads",
    )


# ------------------------------------------------------------------ QK circuit
def _scores_definition(l: object = _l, h: object = _h) -> tuple[sp.MatrixSymbol, sp.MatrixExpr, Rule]:
    X, one = at.attn_input(l), at.ones()
    q = X * _w("W_Q", l, h) + one * _b("b_Q", l, h)
    k = X * _w("W_K", l, h) + one * _b("b_K", l, h)
    scores = at.atom("scores", "S", at.P, at.P, l, h)
    return scores, SCALE * q * k.T, Rule("the scores", "definition", {scores: SCALE * q * k.T}, "S = scale (X W_Q + 1 b_Q)(X W_K + 1 b_K)^T")


def qk_circuit(l: object = _l, h: object = _h) -> Identity:
    """``attention.qk_circuit``: ``S = scale (X W_QK X^T + X W_Q b_K^T 1^T + 1 b_Q W_K^T X^T + 1 b_Q b_K^T 1^T)``.

    The scores depend on ``W_Q`` and ``W_K`` only through ``W_QK = W_Q W_K^T`` and
    the bias terms, which appear explicitly.
    """
    scores, product, definition = _scores_definition(l, h)
    X, one = at.attn_input(l), at.ones()
    W_QK = at.atom("W_QK", "W_{QK}", at.D_MODEL, at.D_MODEL, l, h, sup=True)
    wq, wk, bq, bk = _w("W_Q", l, h), _w("W_K", l, h), _b("b_Q", l, h), _b("b_K", l, h)
    expanded = SCALE * (X * wq * wk.T * X.T + X * wq * bk.T * one.T + one * bq * wk.T * X.T + one * bq * bk.T * one.T)
    rhs = SCALE * (X * W_QK * X.T + X * wq * bk.T * one.T + one * bq * wk.T * X.T + one * bq * bk.T * one.T)
    return Identity(
        "attention.qk_circuit", "scores = scale * (x W_QK x^T + bias terms)", scores, rhs,
        (Step(product, "definition of the scores", definition),
         Step(expanded, "distributivity; (X W + 1 b)^T = W^T X^T + b^T 1^T"),
         Step(rhs, "definition W_QK = W_Q W_K^T", Rule("the QK circuit", "definition", {wq * wk.T: W_QK}, "W_QK = W_Q W_K^T"))),
        (NO_ROTARY, NO_SOFTCAP), frozen=("scale",),
        notes="the pattern is softmax(mask(S)); the terms ending in 1^T are constant along the key axis (key_bias_invariance)",
    )


def key_constant_terms(expr: sp.MatrixExpr) -> tuple[list[sp.MatrixExpr], list[sp.MatrixExpr]]:
    """Split the terms of expanded scores into (constant along the key axis, varying along it).

    A term is constant along the key axis (the same for every key column j) iff its
    last factor is ``1^T``: then it is ``u 1^T`` for a column ``u``, which softmax over
    j ignores. Shapes: every term ``P x P``.
    """
    terms = sp.Add.make_args(expr.expand()) if not isinstance(expr.expand(), sp.MatAdd) else expr.expand().args
    constant, varying = [], []
    for term in terms:
        factors = term.args if isinstance(term, sp.MatMul) else (term,)
        (constant if factors and factors[-1] == at.ones().T else varying).append(term)
    return constant, varying


def key_bias_invariance_terms() -> dict[str, list[sp.MatrixExpr]]:
    """``attention.key_bias_invariance``: which bias terms of the scores cancel in softmax and which do not."""
    constant, varying = key_constant_terms(qk_circuit().rhs)
    return {"cancel": constant, "remain": varying}


# ------------------------------------------------------------------ rotary
def _rotation(p: object) -> sp.MatrixSymbol:
    return at.atom("rotation", "R", at.D_HEAD, at.D_HEAD, p)


I_POS, J_POS = sp.Symbol("i", integer=True, nonnegative=True), sp.Symbol("j", integer=True, nonnegative=True)
ROTATIONS_COMPOSE = Rule(
    "rotations compose", "lemma", {_rotation(I_POS) * _rotation(J_POS).T: _rotation(I_POS - J_POS)},
    "R(i) R(j)^T = R(i - j): rotary rotates every pair by an angle linear in the position (soundness test: tests/symbolic)",
)


def rotary_scores() -> Identity:
    """With rotary: ``s_ij = x_i W_Q R(i) (x_j W_K R(j))^T = x_i W_Q R(i - j) W_K^T x_j^T``: one bilinear form per offset."""
    xi, xj = at.atom("row", "x", 1, at.D_MODEL, I_POS), at.atom("row", "x", 1, at.D_MODEL, J_POS)
    wq, wk = _w("W_Q"), _w("W_K")
    lhs = (xi * wq * _rotation(I_POS)) * (xj * wk * _rotation(J_POS)).T
    rhs = xi * wq * _rotation(I_POS - J_POS) * wk.T * xj.T
    return Identity(
        "attention.rotary_scores", "s_ij = x_i W_Q R(i - j) W_K^T x_j^T: a family of bilinear forms indexed by the offset i - j",
        lhs, rhs, (Step(xi * wq * _rotation(I_POS) * _rotation(J_POS).T * wk.T * xj.T, "transpose of a product"),
                   Step(rhs, "R(i) R(j)^T = R(i - j)", ROTATIONS_COMPOSE)),
        (Assumption("rotary", "the queries and keys are rotated by position", lambda arch: arch.positional == "rotary"),),
        notes="W_QK = W_Q W_K^T is the offset-0 member; no single matrix gives every score",
    )


def rotary_qk_refutation() -> Refutation:
    """The QK-circuit claim ``s_ij = x_i W_QK x_j^T`` under rotary leaves ``x_i W_Q (R(i - j) - I) W_K^T x_j^T``."""
    form = rotary_scores()
    xi, xj = at.atom("row", "x", 1, at.D_MODEL, I_POS), at.atom("row", "x", 1, at.D_MODEL, J_POS)
    W_QK = at.atom("W_QK", "W_{QK}", at.D_MODEL, at.D_MODEL, _l, _h, sup=True)
    failing = Step(xi * W_QK * xj.T, "the claim s_ij = x_i W_QK x_j^T", Rule("the QK circuit", "definition", {W_QK: _w("W_Q") * _w("W_K").T}))
    return Refutation("attention.qk_circuit", form.steps, failing, check_step(form.rhs, failing),
                      "x_i W_Q (R(i - j) - I) W_K^T x_j^T: the rotation between query and key, nonzero off the diagonal i = j")


# ------------------------------------------------------------------ OV circuit
def rows_sum_to_one(l: object = _l, h: object = _h) -> Rule:
    """The lemma ``A 1 = 1``: each row of a softmax is a probability distribution (soundness test: tests/symbolic)."""
    return Rule("rows of A sum to one", "lemma", {at.pattern(l, h) * at.ones(): at.ones()}, "A 1 = 1")


def ov_circuit(l: object = _l, h: object = _h) -> Identity:
    """``attention.ov_circuit``: ``h = A (X W_V + 1 b_V) W_O = A X W_OV + 1 b_V W_O`` because ``A 1 = 1``."""
    A, X, one = at.pattern(l, h), at.attn_input(l), at.ones()
    wv, wo, bv = _w("W_V", l, h), _w("W_O", l, h), _b("b_V", l, h)
    W_OV = at.atom("W_OV", "W_{OV}", at.D_MODEL, at.D_MODEL, l, h, sup=True)
    definition = Rule("a head's write", "definition", {at.head(l, h): A * (X * wv + one * bv) * wo}, "h = A v W_O")
    return Identity(
        "attention.ov_circuit", "head_i = sum_j A_ij x_j W_OV + b_V W_O", at.head(l, h), A * X * W_OV + one * bv * wo,
        (Step(A * (X * wv + one * bv) * wo, "definition: h = A v W_O, v = X W_V + 1 b_V", definition),
         Step(A * X * wv * wo + A * one * bv * wo, "distributivity"),
         Step(A * X * wv * wo + one * bv * wo, "the rows of A sum to one: A 1 = 1", rows_sum_to_one(l, h)),
         Step(A * X * W_OV + one * bv * wo, "definition W_OV = W_V W_O", Rule("the OV circuit", "definition", {wv * wo: W_OV}))),
        frozen=("A",), notes="X is the normalised input the attention reads; GQA: W_V of the key/value head h // group",
    )


def linear_given_pattern() -> Identity:
    """``attention.linear_given_pattern``: with ``A`` frozen, ``h(X + Y) = h(X) + h(Y) - h(0)``: affine in the input."""
    A, one = at.pattern(_l, _h), at.ones()
    X, Y = at.atom("input", "X", at.P, at.D_MODEL, "a"), at.atom("input", "Y", at.P, at.D_MODEL, "b")
    W_OV, c = at.atom("W_OV", "W_{OV}", at.D_MODEL, at.D_MODEL, _l, _h, sup=True), one * _b("b_V") * _w("W_O")

    def h(inp):
        return A * inp * W_OV + c

    return Identity(
        "attention.linear_given_pattern", "with the pattern frozen, a head is affine in what it reads", h(X + Y), h(X) + h(Y) - c,
        (Step(A * X * W_OV + A * Y * W_OV + c, "distributivity"),), frozen=("A",),
        notes="with live norms the input is N(x), and N(x + y) != N(x) + N(y): the head is not affine in the stream",
    )


# ------------------------------------------------------------------ gauge
def _invertible(name: str, dim: sp.Expr) -> sp.MatrixSymbol:
    return at.atom("gauge", name, dim, dim)


def gauge_qk() -> Identity:
    """``attention.gauge`` (QK): ``(X W_Q M)(X W_K M^{-T})^T = X W_Q W_K^T X^T`` for any invertible ``M``."""
    X, M = at.attn_input(_l), _invertible("M", at.D_HEAD)
    wq, wk = _w("W_Q"), _w("W_K")
    return Identity("attention.gauge_qk", "W_Q M, W_K M^{-T} leave the scores unchanged", (X * wq * M) * (X * wk * M.I.T).T,
                    X * wq * wk.T * X.T, (Step(X * wq * M * M.I * wk.T * X.T, "transpose of a product; (M^{-T})^T = M^{-1}"),
                                          Step(X * wq * wk.T * X.T, "M M^{-1} = I")),
                    (NO_ROTARY,), notes="without biases; with b_Q, b_K the same M acts on them: b_Q M, b_K M^{-T}")


def gauge_ov() -> Identity:
    """``attention.gauge`` (OV): ``A X (W_V N)(N^{-1} W_O) = A X W_V W_O`` for any invertible ``N``, with or without rotary."""
    A, X, N = at.pattern(_l, _h), at.attn_input(_l), _invertible("N", at.D_HEAD)
    wv, wo = _w("W_V"), _w("W_O")
    return Identity("attention.gauge_ov", "W_V N, N^{-1} W_O leave every head's write unchanged", A * X * (wv * N) * (N.I * wo),
                    A * X * wv * wo, (Step(A * X * wv * wo, "N N^{-1} = I"),), frozen=("A",),
                    notes="rotary acts on q and k only, so the OV gauge is unrestricted; b_V becomes b_V N")


def gauge_qk_rotary_refutation() -> Refutation:
    """Under rotary, ``W_Q M``, ``W_K M^{-T}`` change the scores unless ``M`` commutes with every ``R(p)``."""
    xi, xj = at.atom("row", "x", 1, at.D_MODEL, I_POS), at.atom("row", "x", 1, at.D_MODEL, J_POS)
    M, R = _invertible("M", at.D_HEAD), _rotation(I_POS - J_POS)
    wq, wk = _w("W_Q"), _w("W_K")
    gauged = xi * wq * M * R * M.I * wk.T * xj.T
    failing = Step(xi * wq * R * wk.T * xj.T, "the gauge leaves x_i W_Q R(i - j) W_K^T x_j^T unchanged")
    return Refutation("attention.gauge", (), failing, check_step(gauged, failing),
                      "x_i W_Q (M R M^{-1} - R) W_K^T x_j^T: zero only if M commutes with the rotations (e.g. M a rotation "
                      "within each rotary pair, or acting only on the unrotated coordinates)")
