"""The seed's own formulas, in its column convention, translated to rows, with what they leave out.

The seed writes column vectors: a position's stream is ``x^{col}`` (``d_model x 1``),
weights act on the left (``W_Q^{col}``: ``d_head x d_model``, ``W_U^{col}``:
``d_vocab x d_model``). circuitproof writes rows (DESIGN.md). The translation, a
checked step in every derivation here, is transposition:

    x^{col} = x^T,   W^{col} = W^T   (W_Q, W_K, W_V: d_model x d_head; W_O: d_head x d_model; W_U: d_model x d_vocab)

so the seed's ``x_i^T W_Q^T W_K x_j`` is our ``x_i W_Q W_K^T x_j^T``, its ``W_O W_V x_j``
is ``(x_j W_V W_O)^T`` and its ``W_U x`` is ``(x W_U)^T``. A sequence's columns stack
into ``X^{col} = X^T`` (``d_model x P``).

For each formula: an Identity where it is exact (its Assumptions say when), an
Identity with the explicit remainder under the general architecture, and the
Refutation naming that remainder. The remainder is the symbolic reason behind the
counterexamples the property tests find. The seed's two analogies are proved too:
the linear recurrence unrolled (by induction on n) and exact attribution in a
linear factor model, broken by an interaction term.
"""

from __future__ import annotations

import functools

import sympy as sp
from sympy.core.symbol import Str

from . import _atoms as at
from ._core import ALWAYS, Assumption, Identity, Refutation, Rule, Step, check_step
from ._induction import by_induction
from .attention import I_POS, J_POS, SCALE, head_sum, rows_sum_to_one
from .logits import NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD
from .norms import Softmax, shift_invariance
from .residual import NO_POST_NORM, unrolled_expansion

__all__ = ["Apply", "translations", "update_rule", "logits_linear", "logits_heads", "qk_formula", "ov_formula", "recurrence",
           "factor_model", "seed_formulas", "general", "refutations", "N_STEPS"]

_l, _h = sp.Symbol("l", integer=True, nonnegative=True), sp.Symbol("h", integer=True, nonnegative=True)
L_SYM = sp.Symbol("L", integer=True, nonnegative=True)
N_STEPS = sp.Symbol("n", integer=True, nonnegative=True)
Result = tuple[Identity, Identity, Refutation]


class Apply(sp.MatrixExpr):
    """An opaque sublayer ``name(arg)`` (Attn, MLP, a norm) with its argument's shape; equal iff the arguments are."""

    def __new__(cls, name: str | Str, arg: sp.MatrixExpr):
        return sp.Basic.__new__(cls, name if isinstance(name, Str) else Str(name), sp.sympify(arg))

    @property
    def shape(self):
        return self.args[1].shape

    def _sympystr(self, printer) -> str:
        return f"{self.args[0].name}({printer._print(self.args[1])})"

    def _latex(self, printer) -> str:
        return rf"{self.args[0].name}\left({printer._print(self.args[1])}\right)"


def _col(name: str, rows, cols, *idx) -> sp.MatrixSymbol:
    return at.atom("column", f"{name}^{{col}}", rows, cols, *idx)


def _columns(pairs: dict) -> Rule:
    return Rule("the column convention", "definition", {c: r.T for c, r in pairs.items()},
                "the seed's column vectors and left-acting weights are our rows and right-acting weights transposed")


def _zero(expr: sp.MatrixExpr) -> sp.MatrixExpr:
    return sp.ZeroMatrix(*expr.shape)


def _triple(name: str, statement: str, general: Identity, seed_form, vanish: dict, assumptions: tuple, term: str, previous=None) -> Result:
    """(exact, general, refutation): the general derivation, then its remainder vanishing under ``assumptions``."""
    rule = Rule("the assumptions", "definition", vanish, "; ".join(a.name for a in assumptions))
    exact = Identity(f"seed.{name}", statement, general.lhs, seed_form,
                     general.steps + (Step(seed_form, "under the assumptions every remainder term vanishes", rule),), assumptions)
    previous = general.rhs if previous is None else previous
    failing = Step(seed_form if not isinstance(seed_form, Softmax) else seed_form.arg, f"the seed's claim: {statement}")
    return exact, general, Refutation(f"seed.{name}", general.steps, failing, check_step(previous, failing), term)


def translations() -> dict[str, Identity]:
    """The column convention checked: the seed's QK, OV and logit expressions equal our row forms."""
    xi, xj = at.atom("row", "x", 1, at.D_MODEL, I_POS), at.atom("row", "x", 1, at.D_MODEL, J_POS)
    ci, cj = _col("x", at.D_MODEL, 1, I_POS), _col("x", at.D_MODEL, 1, J_POS)
    wq, wk, wv, wo = (at.weight(n, _l, _h) for n in ("W_Q", "W_K", "W_V", "W_O"))
    cq, ck, cv = (_col(n, at.D_HEAD, at.D_MODEL, _l, _h) for n in ("W_Q", "W_K", "W_V"))
    co, cu = _col("W_O", at.D_MODEL, at.D_HEAD, _l, _h), _col("W_U", at.D_VOCAB, at.D_MODEL)
    xL, cL = at.stream(L_SYM), _col("x", at.D_MODEL, at.P, L_SYM)
    cases = {
        "qk": (ci.T * cq.T * ck * cj, xi * wq * wk.T * xj.T, {ci: xi, cj: xj, cq: wq, ck: wk}, "x_i^T W_Q^T W_K x_j = x_i W_Q W_K^T x_j^T"),
        "ov": (co * cv * cj, (xj * wv * wo).T, {cj: xj, cv: wv, co: wo}, "W_O W_V x_j = (x_j W_V W_O)^T"),
        "logits": (cu * cL, (xL * at.weight("W_U")).T, {cu: at.weight("W_U"), cL: xL}, "W_U x_L = (x_L W_U)^T"),
    }
    return {k: Identity(f"seed.translation.{k}", s, lhs, rhs, (Step(rhs, "x^{col} = x^T, W^{col} = W^T", _columns(m)),))
            for k, (lhs, rhs, m, s) in cases.items()}


# ------------------------------------------------------------------ the update rule
def update_rule() -> dict[str, Identity | Refutation]:
    """``x_{l+1} = x + Attn(x) + MLP(x + Attn(x))``: exact for sequential blocks.

    Parallel blocks leave ``MLP(x) - MLP(x + Attn(x))``; post-norm is refuted.
    """
    x, a, m, mid, nxt = at.stream(_l), at.attn(_l), at.mlp(_l), at.mid(_l), at.stream(_l + 1)
    attn, mlp = Apply(r"Attn_{l}", x), lambda arg: Apply(r"MLP_{l}", arg)
    seed_form = sp.MatAdd(x, attn, mlp(x + attn))
    reads = Rule("what the sublayers compute", "definition", {a: attn}, "a_l = Attn_l(x_l) (pre-norm: Attn reads N(x_l))")
    seq_rules = [Rule("the MLP's residual add", "definition", {nxt: mid + m}), Rule("the MLP reads x^{mid}", "definition", {m: mlp(mid)}),
                 Rule("the attention's residual add", "definition", {mid: x + a}), reads]
    form, steps = nxt, []
    for rule in seq_rules:
        form = rule.apply(form)
        steps.append(Step(form, f"definition: {rule.name}", rule))
    sequential = Identity("seed.update_rule", "x_{l+1} = x + Attn(x) + MLP(x + Attn(x))", nxt, seed_form, tuple(steps),
                          (NO_POST_NORM, Assumption("sequential blocks", "parallel blocks feed the MLP x, not x + Attn(x)",
                                                    lambda arch: not arch.parallel and not arch.attn_only)))
    par_def = Rule("the parallel block", "definition", {nxt: x + a + mlp(x), a: attn}, "x_{l+1} = x + Attn(x) + MLP(x)")
    remainder = sp.MatAdd(mlp(x), -mlp(x + attn))
    parallel = Identity("seed.update_rule.parallel", "parallel: x_{l+1} = x + Attn(x) + MLP(x + Attn(x)) + [MLP(x) - MLP(x + Attn(x))]",
                        nxt, sp.MatAdd(seed_form, remainder),
                        (Step(x + attn + mlp(x), "definition: the parallel block (both sublayers read x)", par_def),
                         Step(sp.MatAdd(seed_form, remainder), "add and subtract MLP(x + Attn(x))")), (NO_POST_NORM,))
    failing = Step(seed_form, "the seed's update rule")
    par_ref = Refutation("seed.update_rule (parallel blocks)", parallel.steps, failing, check_step(parallel.rhs, failing),
                         "MLP(x) - MLP(x + Attn(x)): a parallel block's MLP reads x, not x + Attn(x)")
    y = Apply(r"LN1_{l}", x + attn)
    post = Rule("the post-norm block", "definition", {nxt: Apply(r"LN2_{l}", y + mlp(y))},
                "x_{l+1} = LN2(y + MLP(y)), y = LN1(x + Attn(x))")
    post_step = Step(Apply(r"LN2_{l}", y + mlp(y)), "definition: the post-norm block (BERT)", post)
    post_ref = Refutation("seed.update_rule (post-norm)", (post_step,), failing, check_step(post_step.expr, failing),
                          "LN2(y + MLP(y)) - x - Attn(x) - MLP(x + Attn(x)), y = LN1(x + Attn(x)): the norms replace the sums")
    return {"update_rule.sequential": sequential, "update_rule.parallel": parallel, "update_rule.parallel.refuted": par_ref,
            "update_rule.post_norm.refuted": post_ref}


# ------------------------------------------------------------------ logits
_LOGITS = at.atom("logits", "logits", at.P, at.D_VOCAB)
_PRECAP = at.atom("logits_precap", "logits^{pre}", at.P, at.D_VOCAB)
_R_CAP = at.atom("remainder", "R^{softcap}", at.P, at.D_VOCAB)
_R_NORM = at.atom("remainder", "R^{norm}", at.P, at.D_VOCAB, L_SYM)


def _readout_steps(L: object) -> tuple[list[Step], sp.MatrixExpr]:
    """logits -> x_L W_U + R^{norm} + 1 b_U + R^{softcap}, with the final norm and the softcap as named remainders."""
    xL, W_U, b_U, one = at.stream(L), at.weight("W_U"), at.bias("b_U"), at.ones()
    Nf, R_norm = at.atom("norm_out", "N_{f}", at.P, at.D_MODEL, L), at.atom("remainder", "R^{norm}", at.P, at.D_VOCAB, L)
    cap = Rule("the logit softcap", "definition", {_LOGITS: _PRECAP + _R_CAP},
               "logits = c tanh(z / c) = z + R^{softcap} (0 without a softcap)")
    unembed = Rule("the unembedding", "definition", {_PRECAP: Nf * W_U + one * b_U}, "z = N_f(x_L) W_U + 1 b_U")
    norm = Rule("the final norm's remainder", "definition", {R_norm: (Nf - xL) * W_U},
                "R^{norm} = (N_f(x_L) - x_L) W_U (0 without a final norm)")
    form = xL * W_U + R_norm + one * b_U + _R_CAP
    return [Step(_PRECAP + _R_CAP, "definition: the logit softcap", cap),
            Step(Nf * W_U + one * b_U + _R_CAP, "definition: the unembedding", unembed),
            Step(form, "definition: the final norm's remainder", norm)], form


def logits_linear() -> Result:
    """``logits = W_U x_L`` (column): ``logits = (W_U^{col} x_L^{col})^T + R^{norm} + 1 b_U + R^{softcap}``."""
    steps, form = _readout_steps(L_SYM)
    cu, cL = _col("W_U", at.D_VOCAB, at.D_MODEL), _col("x", at.D_MODEL, at.P, L_SYM)
    seed_form = sp.Transpose(cu * cL)
    rem = sp.MatAdd(*(t for t in form.args if t != at.stream(L_SYM) * at.weight("W_U")))
    steps.append(Step(sp.MatAdd(seed_form, rem), "the column convention", _columns({cu: at.weight("W_U"), cL: at.stream(L_SYM)})))
    general = Identity("seed.logits_linear.general", "logits = (W_U x_L)^col + final norm + b_U + softcap remainders", _LOGITS,
                       sp.MatAdd(seed_form, rem), tuple(steps), (ALWAYS,))
    no_bias = Assumption("no unembedding bias", "b_U adds 1 b_U to every position", lambda a: not a.unembed_bias)
    vanish = {_R_NORM: _zero(_R_NORM), at.bias("b_U"): _zero(at.bias("b_U")), _R_CAP: _zero(_R_CAP)}
    assumptions = (NO_FINAL_NORM, no_bias, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD)
    return _triple("logits_linear", "logits = W_U x_L", general, seed_form, vanish, assumptions,
                   "R^{norm} + 1 b_U + R^{softcap}: the final norm (N_f(x_L) - x_L) W_U, the unembedding bias, the softcap")


def logits_heads(L: int = 2, H: int = 2) -> Result:
    """``logits = W_U x_0 + sum_{l,h} W_U Attn_h(x)`` for concrete ``L``, ``H``, sequential blocks with every bias.

    Remainder: ``sum_l m_l W_U`` (MLPs) ``+ sum_l 1 b_O^l W_U + R^{norm} + 1 b_U + R^{softcap}``.
    A head's write ``h_{l,h}`` includes its ``1 b_V W_O`` (attention.ov_circuit).
    """
    steps, form = _readout_steps(L)
    expansion = unrolled_expansion("sequential", L)
    form = form.xreplace({at.stream(L): expansion.rhs})
    theorem = Rule(expansion.id, "theorem", {at.stream(L): expansion.rhs}, expansion.statement)
    steps.append(Step(form, f"residual expansion, L = {L}", theorem))
    split = {at.attn(l): head_sum(H, l).rhs for l in range(L)}
    form = form.xreplace(split)
    steps.append(Step(form, "attention.head_sum: a_l = sum_h h_{l,h} + 1 b_O^l", Rule("attention.head_sum", "theorem", split)))
    W_U, one = at.weight("W_U"), at.ones()
    cu, c0 = _col("W_U", at.D_VOCAB, at.D_MODEL), _col("x", at.D_MODEL, at.P, 0)
    ch = {(l, h): _col("h", at.D_MODEL, at.P, l, h) for l in range(L) for h in range(H)}
    seed_form = sp.MatAdd(sp.Transpose(cu * c0), *[sp.Transpose(cu * c) for c in ch.values()])
    rem = sp.MatAdd(*[at.mlp(l) * W_U for l in range(L)], *[one * at.bias("b_O", l) * W_U for l in range(L)],
                    at.atom("remainder", "R^{norm}", at.P, at.D_VOCAB, L), one * at.bias("b_U"), _R_CAP)
    cols = _columns({cu: W_U, c0: at.stream(0), **{c: at.head(l, h) for (l, h), c in ch.items()}})
    steps.append(Step(sp.MatAdd(seed_form, rem), "distributivity; the column convention", cols))
    general = Identity(f"seed.logits_heads.general[L={L},H={H}]",
                       "logits = W_U x_0 + sum W_U Attn_h + MLP, b_O, final norm, b_U, softcap terms", _LOGITS,
                       sp.MatAdd(seed_form, rem), tuple(steps), (NO_POST_NORM, NO_TRANSFORM_HEAD))
    vanish = {**{at.mlp(l): _zero(at.mlp(l)) for l in range(L)}, **{at.bias("b_O", l): _zero(at.bias("b_O", l)) for l in range(L)},
              at.atom("remainder", "R^{norm}", at.P, at.D_VOCAB, L): _zero(_LOGITS), at.bias("b_U"): _zero(at.bias("b_U")),
              _R_CAP: _zero(_R_CAP)}
    assumptions = (Assumption("attention-only", "an MLP writes m_l W_U, no head's", lambda a: a.attn_only),
                   Assumption("no b_O, no b_U", "1 b_O W_U and 1 b_U are no head's", lambda a: not (a.o_bias or a.unembed_bias)),
                   NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_POST_NORM, NO_TRANSFORM_HEAD)
    return _triple("logits_heads", "logits = W_U x_0 + sum_{l,h} W_U Attn_h(x)", general, seed_form, vanish, assumptions,
                   "sum_l (m_l + 1 b_O^l) W_U + R^{norm} + 1 b_U + R^{softcap}: MLPs, output biases, final norm, b_U, softcap")


# ------------------------------------------------------------------ QK and OV
def qk_formula() -> Result:
    """``alpha_ij = softmax_j(x_i^T W_Q^T W_K x_j / sqrt(d))``, as ``A = softmax(X W_Q W_K^T X^T / sqrt(d_head) + M + remainder)``.

    With ``q = X W_Q + 1 b_Q``, ``k = X W_K + 1 b_K`` the key-constant bias terms cancel
    in the softmax; what remains is ``scale 1 b_Q W_K^T X^T`` (the query bias meets every
    key differently), ``(scale - d_head^{-1/2}) X W_Q W_K^T X^T`` (d must be d_head and the
    scale the default), ``R^{rot}`` (rotary, QK-norm) and ``R^{softcap}``. ``X`` is the
    attention's input (the normalised stream); ``M`` the mask (0 or -inf).
    """
    X, one, A = at.attn_input(_l), at.ones(), at.pattern(_l, _h)
    wq, wk, bq, bk = at.weight("W_Q", _l, _h), at.weight("W_K", _l, _h), at.bias("b_Q", _l, _h), at.bias("b_K", _l, _h)
    M = at.atom("mask", "M", at.P, at.P, _l)
    R_rot, R_cap = at.atom("remainder", "R^{rot}", at.P, at.P, _l, _h), at.atom("remainder", "R^{scap}", at.P, at.P, _l, _h)
    pattern = Rule("the pattern", "definition", {A: Softmax(SCALE * (X * wq + one * bq) * (X * wk + one * bk).T + R_rot + R_cap + M)},
                   "A = softmax(scale q k^T + R^{rot} + R^{scap} + M): rotary/QK-norm and the score softcap as named corrections")
    rest = SCALE * X * wq * wk.T * X.T + SCALE * one * bq * wk.T * X.T + R_rot + R_cap + M
    u = SCALE * (X * wq * bk.T + one * bq * bk.T)
    cX, cq, ck = _col("X", at.D_MODEL, at.P, _l), _col("W_Q", at.D_HEAD, at.D_MODEL, _l, _h), _col("W_K", at.D_HEAD, at.D_MODEL, _l, _h)
    d = 1 / sp.sqrt(at.D_HEAD)
    seed_scores = d * cX.T * cq.T * ck * cX
    rem = sp.MatAdd(SCALE * one * bq * wk.T * X.T, (SCALE - d) * X * wq * wk.T * X.T, R_rot, R_cap)
    steps = (Step(pattern.mapping[A], "definition: the pattern", pattern),
             Step(Softmax(rest + u * one.T), "distributivity: the terms X W_Q b_K^T 1^T and 1 b_Q b_K^T 1^T are u 1^T"),
             Step(Softmax(rest), "softmax is invariant to adding a per-row constant", shift_invariance(rest, u, one, Softmax)),
             Step(Softmax(sp.MatAdd(seed_scores, M, rem)), "scale = d_head^{-1/2} + (scale - d_head^{-1/2}); the column convention",
                  _columns({cX: X, cq: wq, ck: wk})))
    general = Identity("seed.qk.general", "A = softmax(x W_Q W_K^T x^T / sqrt(d_head) + M + remainder)", A,
                       Softmax(sp.MatAdd(seed_scores, M, rem)),
                       steps, (ALWAYS,), frozen=(), notes="b_K cancels entirely; b_Q does not")
    vanish = {bq: _zero(bq), R_rot: _zero(R_rot), R_cap: _zero(R_cap), SCALE: d}
    assumptions = (Assumption("no query bias", "1 b_Q W_K^T X^T varies along the key axis", lambda a: not a.q_bias),
                   Assumption("no rotary, no QK-norm", "the scores are then the bilinear form",
                              lambda a: a.positional != "rotary" and a.qk_norm == "none"),
                   Assumption("no score softcap", "c tanh(S / c) is not bilinear", lambda a: a.attn_softcap is None),
                   Assumption("scale 1/sqrt(d_head)", "the seed divides by sqrt(d): d must be d_head",
                              lambda a: abs(a.scale - a.d_head ** -0.5) < 1e-12))
    return _triple("qk", "alpha_ij = softmax_j(x_i^T W_Q^T W_K x_j / sqrt(d))", general, Softmax(seed_scores + M), vanish, assumptions,
                   "scale 1 b_Q W_K^T X^T + (scale - d_head^{-1/2}) X W_QK X^T + R^{rot} + R^{scap} inside the softmax",
                   previous=general.rhs.arg)


def ov_formula() -> Result:
    """``Delta x_i = sum_j alpha_ij W_O W_V x_j``: ``h = (W_O^{col} W_V^{col} x^{col} A^T)^T + A (X - x) W_V W_O + 1 b_V W_O``.

    ``X`` is what the head reads (``N(x)`` under pre-norm), ``x`` the stream the seed means.
    """
    A, X, x, one = at.pattern(_l, _h), at.attn_input(_l), at.stream(_l), at.ones()
    wv, wo, bv = at.weight("W_V", _l, _h), at.weight("W_O", _l, _h), at.bias("b_V", _l, _h)
    cx, cv, co = _col("x", at.D_MODEL, at.P, _l), _col("W_V", at.D_HEAD, at.D_MODEL, _l, _h), _col("W_O", at.D_MODEL, at.D_HEAD, _l, _h)
    seed_form = sp.Transpose(co * cv * cx * A.T)
    rem = sp.MatAdd(A * (X - x) * wv * wo, one * bv * wo)
    definition = Rule("a head's write", "definition", {at.head(_l, _h): A * (X * wv + one * bv) * wo}, "h = A (X W_V + 1 b_V) W_O")
    steps = (Step(A * (X * wv + one * bv) * wo, "definition: h = A v W_O", definition),
             Step(A * X * wv * wo + A * one * bv * wo, "distributivity"),
             Step(A * X * wv * wo + one * bv * wo, "the rows of A sum to one", rows_sum_to_one()),
             Step(sp.MatAdd(A * x * wv * wo, rem), "X = x + (X - x)"),
             Step(sp.MatAdd(seed_form, rem), "the column convention", _columns({cx: x, cv: wv, co: wo})))
    general = Identity("seed.ov.general", "head = sum_j A_ij x_j W_V W_O + A (X - x) W_OV + 1 b_V W_O", at.head(_l, _h),
                       sp.MatAdd(seed_form, rem),
                       steps, (ALWAYS,), frozen=("A",))
    assumptions = (Assumption("no value bias", "b_V adds 1 b_V W_O", lambda a: not a.v_bias),
                   Assumption("the head reads the stream", "pre-norm heads read N(x), not x",
                              lambda a: not a.has_norm or a.norm_placement in ("post", "output")))
    return _triple("ov", "Delta x_i = sum_j alpha_ij W_O W_V x_j", general, seed_form, {bv: _zero(bv), X: x}, assumptions,
                   "A (X - x) W_V W_O + 1 b_V W_O: the normalised input and the value bias")


# ------------------------------------------------------------------ the recurrence analogy
def _induction(id: str, statement: str, claim, base, inductive, hypothesis: dict | None = None, parts: tuple = ()) -> Identity:
    """:func:`by_induction` on ``n`` (base ``n = 0``, step ``n -> n + 1``), with an optional rewrite form of the hypothesis."""
    return by_induction(id, statement, claim, base, inductive, unrolled=parts, variable=N_STEPS, hypothesis_rewrite=hypothesis)


def recurrence(depths: range = range(1, 7)) -> Identity:
    """``x_{n+1} = A x_n + b``  =>  ``x_n = A^n x_0 + B_n``, ``B_n = sum_{k<n} A^k b`` (``B_0 = 0``, ``B_{n+1} = B_n + A^n b``).

    Lemma (its own induction): ``A B_n + b = B_{n+1}``. Unrolled for ``n`` in ``depths`` with the sum written out.
    """
    d = sp.Symbol("d_state", integer=True, positive=True)
    A, b = at.atom("recurrence", "A^{rec}", d, d), at.atom("recurrence", "b^{rec}", d, 1)
    x, B = (lambda n: at.atom("recurrence_state", "x^{rec}", d, 1, n)), (lambda n: at.atom("recurrence_sum", "B^{rec}", d, 1, n))
    n = N_STEPS
    step_def = lambda k: Rule("the recurrence", "definition", {x(k + 1): A * x(k) + b}, "x_{n+1} = A x_n + b")  # noqa: E731
    peel = lambda k: Rule("the partial sum", "definition", {B(k + 1): B(k) + A ** k * b}, "B_{n+1} = B_n + A^n b")  # noqa: E731
    empty = Rule("the empty sum", "definition", {B(0): _zero(B(0))}, "B_0 = 0")
    lemma = _induction("seed.recurrence.shift", "A B_n + b = B_{n+1}", lambda k: (A * B(k) + b, B(k + 1)),
                       lambda: [Step(b, "B_0 = 0", empty),
                                Step(B(1), "B_1 = B_0 + A^0 b = b", Rule("B_1", "definition", {**peel(0).mapping, **empty.mapping}))],
                       lambda ih: [Step(A * (B(n) + A ** n * b) + b, "definition of B_{n+1}", peel(n)),
                                   Step(A * B(n) + b + A ** (n + 1) * b, "distributivity; A A^n = A^{n+1}"),
                                   Step(B(n + 1) + A ** (n + 1) * b, "induction hypothesis", ih),
                                   Step(B(n + 2), "definition of B_{n+2}", peel(n + 1))],
                       hypothesis={A * B(n): B(n + 1) - b})
    shift = Rule(lemma.id, "lemma", {A * B(n): B(n + 1) - b}, "A B_n + b = B_{n+1}, proved by induction")
    unrolled = []
    for m in depths:
        form, steps = x(m), []
        for k in reversed(range(m)):
            form = step_def(k).apply(form)
            steps.append(Step(form, f"definition: x_{k + 1} = A x_{k} + b", step_def(k)))
        explicit = A ** m * x(0) + sp.MatAdd(*[A ** k * b if k else b for k in range(m)])
        unrolled.append(Identity(f"seed.recurrence[n={m}]", f"x_{m} = A^{m} x_0 + sum_(k<{m}) A^k b", x(m), explicit, tuple(steps)))
    return _induction(
        "seed.recurrence", "x_n = A^n x_0 + sum_{k<n} A^k b for every n", lambda k: (x(k), A ** k * x(0) + B(k)),
        lambda: [Step(A ** 0 * x(0) + B(0), "A^0 = I; B_0 = 0", empty)],
        lambda ih: [Step(A * x(n) + b, "definition of x_{n+1}", step_def(n)),
                    Step(A * (A ** n * x(0) + B(n)) + b, "induction hypothesis", ih),
                    Step(A ** (n + 1) * x(0) + A * B(n) + b, "distributivity; A A^n = A^{n+1}"),
                    Step(A ** (n + 1) * x(0) + B(n + 1), "lemma A B_n + b = B_{n+1}", shift)],
        parts=(lemma, *unrolled))


# ------------------------------------------------------------------ the factor-model analogy
def factor_model(K: int = 3) -> dict[str, Identity | Refutation]:
    """``r = sum_k beta_k f_k + eps``: the ablation effects ``phi_k = r - r|_{f_k=0} = beta_k f_k`` sum to ``r - eps`` exactly.

    With an interaction ``beta_12 f_1 f_2`` the effects over-count it once (remainder
    ``-beta_12 f_1 f_2``), and no per-factor attribution ``g_k(f_k)`` covers it: the
    unattributed part has mixed partial ``d^2 / df_1 df_2 = beta_12``, which every sum of
    one-factor functions has zero.
    """
    f = sp.symbols(f"f_1:{K + 1}", real=True)
    beta = sp.symbols(f"beta_1:{K + 1}", real=True)
    eps, b12, r = sp.Symbol("epsilon", real=True), sp.Symbol("beta_12", real=True), sp.Symbol("r", real=True)
    phi = sp.symbols(f"phi_1:{K + 1}", real=True)
    linear = sum(bk * fk for bk, fk in zip(beta, f)) + eps
    out: dict[str, Identity | Refutation] = {}
    for name, R in (("linear", linear), ("interaction", linear + b12 * f[0] * f[1])):
        model = Rule("the factor model", "definition", {r: R}, f"r = {R}")
        effects = Rule("the per-factor attribution", "definition", {p: R - R.subs(fk, 0) for p, fk in zip(phi, f)},
                       "phi_k = r - r|_{f_k = 0}: the effect of ablating factor k")
        attributed = sum(phi) + eps
        if name == "linear":
            out["factor_model"] = Identity("seed.factor_model", "r = sum_k phi_k + eps: exact per-factor attribution", r, attributed,
                                           (Step(R, "definition: the linear factor model", model),
                                            Step(attributed, "definition: phi_k, the ablation effect of f_k", effects)))
            continue
        failing = Step(attributed, "the per-factor ablation effects sum to r - eps", effects)
        out["factor_model.interaction.refuted"] = Refutation(
            "seed.factor_model", (Step(R, "definition: with an interaction", model),), failing, check_step(R, failing),
            "-beta_12 f_1 f_2: the interaction, counted in both f_1's and f_2's effects")
        g = [sp.Function(f"g_{k + 1}") for k in range(K)]
        unattributed = sp.Derivative(R - eps - sum(gk(fk) for gk, fk in zip(g, f)), f[0], f[1])
        out["factor_model.interaction.mixed_partial"] = Identity(
            "seed.factor_model.mixed_partial",
            "for every per-factor attribution g_k(f_k), d^2/df_1 df_2 (r - eps - sum_k g_k(f_k)) = beta_12",
            unattributed, b12, (Step(b12, "differentiate: a function of one factor has zero mixed partial; beta_12 f_1 f_2 has beta_12"),))
    return out


def seed_formulas(L: int = 2, H: int = 2) -> dict[str, Identity | Refutation]:
    """Every seed formula, keyed by a short name: ``name`` exact, ``name.general`` with remainder, ``name.refuted``."""
    return dict(_formulas(L, H))


def general() -> list[Identity]:
    """The catalogue's share: every Identity of :func:`seed_formulas`."""
    return [v for v in _formulas(2, 2).values() if isinstance(v, Identity)]


def refutations() -> list[Refutation]:
    """The catalogue's share: every Refutation of :func:`seed_formulas`."""
    return [v for v in _formulas(2, 2).values() if isinstance(v, Refutation)]


@functools.lru_cache(maxsize=8)
def _formulas(L: int, H: int) -> dict[str, Identity | Refutation]:
    out: dict[str, Identity | Refutation] = {f"translation.{k}": v for k, v in translations().items()}
    out.update(update_rule())
    for name, (exact, general, ref) in (("logits_linear", logits_linear()), ("logits_heads", logits_heads(L, H)), ("qk", qk_formula()),
                                         ("ov", ov_formula())):
        out.update({name: exact, f"{name}.general": general, f"{name}.refuted": ref})
    out["recurrence"] = recurrence()
    out.update(factor_model())
    return out
