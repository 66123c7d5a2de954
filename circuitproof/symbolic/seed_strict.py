"""Seed sentences stricter than any catalogue claim, derived as the seed states them, with what they leave out.

The catalogue states what holds in general (a head is *affine* given its pattern, the
attention output carries ``b_O``, the QK scale is ``scale``); the seed states stricter
forms. Each builder here returns ``(exact, general, refutation)`` like
:mod:`~circuitproof.symbolic.seed`: the general derivation with its remainder, the
seed's form with the assumptions under which the remainder vanishes, and the
refutation naming the remainder (row convention):

======================= ======================================================== ==================================
builder                 the seed's form                                          remainder
======================= ======================================================== ==================================
:func:`head_linear`     ``h(x + y) = h(x) + h(y)`` ("a linear function")         ``-h(0) = -(1 b_V W_O + A 1 b W_OV)``
:func:`layer_split`     ``x_{l+1} = x_l + sum_h h_{l,h} + m_l`` ("f = sum Attn + MLP") ``1 b_O``; an output norm on ``a_l``
:func:`qk_d_model`      ``A = softmax(x W_QK x^T / sqrt(d_model))`` (d read as d_model) ``(scale - d_model^{-1/2}) X W_QK X^T``
:func:`factor_risk`     variance = the sum of the per-factor ablation effects     ``-2 beta_1 beta_2 C_12``
======================= ======================================================== ==================================

``factor_risk`` also proves the attribution that *is* exact for risk: Euler's,
``sigma^2 = sum_k beta_k d(sigma^2)/d beta_k / 2`` (``sigma^2`` is homogeneous of degree 2).
"""

from __future__ import annotations

import functools

import sympy as sp

from . import _atoms as at
from ._core import ALWAYS, Assumption, Identity, Refutation, Rule, Step, check_step
from .attention import SCALE, head_sum
from .norms import RowWise, Softmax
from .residual import NO_POST_NORM, update_rules

__all__ = [
    "NO_INPUT_NORM_BIAS",
    "NO_OUTPUT_BIAS",
    "NO_OUTPUT_NORM",
    "NO_VALUE_BIAS",
    "factor_risk",
    "general",
    "head_linear",
    "layer_split",
    "qk_d_model",
    "refutations",
]

_l, _h = sp.Symbol("l", integer=True, nonnegative=True), sp.Symbol("h", integer=True, nonnegative=True)
Result = tuple[Identity, Identity, Refutation]

NO_VALUE_BIAS = Assumption("no value bias", "b_V adds 1 b_V W_O whatever the input: h(0) != 0", lambda a: not a.v_bias)
NO_INPUT_NORM_BIAS = Assumption("no bias in the attention's input norm", "a LayerNorm's bias b makes N(0) = 1 b, so h(0) = A 1 b W_OV",
                                lambda a: not (a.norm == "layernorm" and "attn_in" in a.norm_slots()))
NO_OUTPUT_NORM = Assumption("no norm on a sublayer's output", "an output, sandwich or post norm rescales the sublayer's write",
                            lambda a: not a.has_norm or a.norm_placement == "pre")
NO_OUTPUT_BIAS = Assumption("no output bias", "b_O is added once per layer, in no head", lambda a: not a.o_bias)


def _zero(expr: sp.MatrixExpr) -> sp.MatrixExpr:
    return sp.ZeroMatrix(*expr.shape)


def _exact(id: str, statement: str, general: Identity, seed_form, vanish: dict, assumptions: tuple, term: str,
           notation: Rule | None = None) -> Result:
    """(exact, general, refutation): the general derivation, then one step in which its remainder vanishes under ``assumptions``.

    ``notation`` (e.g. the column convention) identifies the seed's symbols with ours in the
    refutation's failing step; for a softmax the remainder is that of its argument.
    """
    rule = Rule("the assumptions", "definition", vanish, "; ".join(a.name for a in assumptions))
    exact = Identity(id, statement, general.lhs, seed_form,
                     general.steps + (Step(seed_form, "under the assumptions every remainder term vanishes", rule),), assumptions,
                     frozen=general.frozen)
    softmax = isinstance(seed_form, RowWise)  # the remainder is the difference of the arguments
    failing = Step(seed_form.arg if softmax else seed_form, f"the seed's claim: {statement}", notation)
    return exact, general, Refutation(id, general.steps, failing, check_step(general.rhs.arg if softmax else general.rhs, failing), term)


# ------------------------------------------------------------------ a head, linear given its pattern
@functools.lru_cache(maxsize=8)
def head_linear(norm: str = "none") -> Result:
    """``h(x + y) = h(x) + h(y)`` with the pattern (and the input norm's scale) frozen: linear, not affine.

    General (``claims_extra.head_affine``): ``h(x + y) = h(x) + h(y) - h(0)``,
    ``h(0) = 1 b_V W_O`` (``+ A 1 b W_OV`` under a LayerNorm input norm with bias ``b``).
    Exact without a value bias and without that norm bias.
    """
    from .claims_extra import head_affine

    general = head_affine(norm)
    A, one = at.pattern(_l, _h), at.ones()
    W_OV = at.atom("W_OV", "W_{OV}", at.D_MODEL, at.D_MODEL, _l, _h, sup=True)
    b_V, b_in = at.bias("b_V", _l, _h), at.atom("in_bias", "b^{in}", 1, at.D_MODEL, _l)
    h0 = one * b_V * at.weight("W_O", _l, _h) + (A * one * b_in * W_OV if norm == "layernorm" else sp.ZeroMatrix(at.P, at.D_MODEL))
    vanish = {b_V: _zero(b_V), **({b_in: _zero(b_in)} if norm == "layernorm" else {})}
    assumptions = general.assumptions + (NO_VALUE_BIAS,) + ((NO_INPUT_NORM_BIAS,) if norm == "layernorm" else ())
    return _exact(f"seed.head_linear[{norm}]", "for a fixed pattern, a head is linear in the stream: h(x + y) = h(x) + h(y)",
                  general, general.rhs + h0, vanish, assumptions,
                  "-h(0) = -(1 b_V W_O + A 1 b W_OV): the value bias (and a LayerNorm input bias) make the head affine")


# ------------------------------------------------------------------ f = sum_h Attn_h + MLP
@functools.lru_cache(maxsize=32)
def layer_split(kind: str, n_heads: int) -> Result:
    """``x_{l+1} = x_l + sum_h h_{l,h} + m_l``: the seed's ``f = sum_h Attn_h + MLP`` (attention-only: no ``m_l``).

    General: ``x_{l+1} = x_l + sum_h h_{l,h} + 1 b_O + m_l`` from the residual adds
    (no post-norm), ``a_l = o_l`` (no norm on the attention's output) and the head split.
    """
    l = _l
    x, nxt, a, o, m = at.stream(l), at.stream(l + 1), at.attn(l), at.attn_raw(l), at.mlp(l)
    form, steps = nxt, []
    for rule in update_rules(kind, l):
        form = rule.apply(form)
        steps.append(Step(form, f"definition: {rule.name}", rule))
    raw = Rule("no output norm", "definition", {a: o}, "a_l = o_l: without an output norm the attention adds its output itself")
    form = raw.apply(form)
    steps.append(Step(form, "a_l = o_l (no norm on the attention's output)", raw))
    split = head_sum(n_heads, l, o_bias=True)
    form = form.xreplace({o: split.rhs})
    steps.append(Step(form, "attention.head_sum: o_l = sum_h h_{l,h} + 1 b_O", Rule(split.id, "theorem", {o: split.rhs}, split.statement)))
    general = Identity(f"seed.layer_split.general[{kind},H={n_heads}]", "x_{l+1} = x_l + sum_h h_{l,h} + 1 b_O + m_l", nxt, form,
                       tuple(steps), (NO_POST_NORM, NO_OUTPUT_NORM))
    b_O = at.bias("b_O", l)
    heads = sp.MatAdd(*[at.head(l, h) for h in range(n_heads)])
    seed_form = x + heads if kind == "attn_only" else x + heads + m
    return _exact(f"seed.layer_split[{kind},H={n_heads}]", "f = sum_h Attn_h + MLP: x_{l+1} = x_l + sum_h h_{l,h} + m_l", general,
                  seed_form, {b_O: _zero(b_O)}, (NO_POST_NORM, NO_OUTPUT_NORM, NO_OUTPUT_BIAS),
                  "1 b_O: the output bias belongs to the layer, to no head")


# ------------------------------------------------------------------ the QK formula with d = d_model
@functools.lru_cache(maxsize=1)
def qk_d_model() -> Result:
    """``alpha_ij = softmax_j(x_i^T W_Q^T W_K x_j / sqrt(d))`` with ``d`` read as ``d_model``.

    From ``seed.qk.general`` (``softmax(X W_QK X^T / sqrt(d_head) + M + remainder)``), the
    scale split once more: ``d_head^{-1/2} = d_model^{-1/2} + (d_head^{-1/2} - d_model^{-1/2})``;
    exact when the model's scale is ``d_model^{-1/2}`` (and no query bias, rotary, QK-norm
    or score softcap, as for ``d_head``).
    """
    from .seed import qk_formula

    exact_dh, general_dh, _ = qk_formula()
    d_model, d_head = 1 / sp.sqrt(at.D_MODEL), 1 / sp.sqrt(at.D_HEAD)
    arg = general_dh.rhs.arg
    seed_dh = exact_dh.rhs.arg - at.atom("mask", "M", at.P, at.P, _l)  # d_head^{-1/2} X^{col T} W_Q^{col T} W_K^{col} X^{col}
    core = seed_dh / d_head  # the bilinear form without its scale
    resplit = Softmax(sp.MatAdd(d_model * core, (d_head - d_model) * core, arg - seed_dh))
    general = Identity("seed.qk_d_model.general", "A = softmax(x W_QK x^T / sqrt(d_model) + M + remainder)", general_dh.lhs, resplit,
                       general_dh.steps + (Step(resplit, "d_head^{-1/2} = d_model^{-1/2} + (d_head^{-1/2} - d_model^{-1/2})"),), (ALWAYS,))
    notation = general_dh.steps[-1].rule  # x^{col} = x^T, W^{col} = W^T: identifies the seed's form with the remainder's
    columns = notation.mapping
    bq = at.bias("b_Q", _l, _h)
    R_rot, R_cap = at.atom("remainder", "R^{rot}", at.P, at.P, _l, _h), at.atom("remainder", "R^{scap}", at.P, at.P, _l, _h)
    vanish = {**columns, bq: _zero(bq), R_rot: _zero(R_rot), R_cap: _zero(R_cap), SCALE: d_model}
    assumptions = tuple(a for a in exact_dh.assumptions if a.name != "scale 1/sqrt(d_head)") + (
        Assumption("scale 1/sqrt(d_model)", "the seed's sqrt(d) read as sqrt(d_model): the model must scale by d_model^{-1/2}",
                   lambda a: abs(a.scale - a.d_model ** -0.5) < 1e-12),)
    seed_form = Softmax(d_model * core + at.atom("mask", "M", at.P, at.P, _l))
    return _exact("seed.qk_d_model", "alpha_ij = softmax_j(x_i^T W_Q^T W_K x_j / sqrt(d_model))", general, seed_form, vanish, assumptions,
                  "(scale - d_model^{-1/2}) X W_QK X^T + the query-bias, rotary and softcap terms inside the softmax", notation)


# ------------------------------------------------------------------ factor risk
@functools.lru_cache(maxsize=1)
def factor_risk() -> dict[str, Identity | Refutation]:
    """Two factors with exposures ``beta_k`` and covariance ``C``: ``sigma^2 = beta^T C beta``.

    - ``seed.factor_risk.euler``: ``sigma^2 = sum_k beta_k d(sigma^2)/d beta_k / 2`` (always).
    - ``seed.factor_risk.ablation``: the ablation effects ``phi_k = sigma^2 - sigma^2|_{beta_k = 0}``
      sum to ``sigma^2`` when the factors are uncorrelated (``C_12 = 0``);
    - refuted otherwise: ``sum_k phi_k = sigma^2 + 2 beta_1 beta_2 C_12``.
    """
    b1, b2 = sp.symbols("beta_1 beta_2", real=True)
    c11, c12, c22 = sp.symbols("C_11 C_12 C_22", real=True)
    s2, phi1, phi2 = sp.symbols("sigma^2 phi_1 phi_2", real=True)
    var = b1**2 * c11 + 2 * b1 * b2 * c12 + b2**2 * c22
    model = Rule("the portfolio variance", "definition", {s2: var}, "sigma^2 = beta^T C beta")
    effects = Rule("the per-factor ablation effects", "definition", {phi1: var - var.subs(b1, 0), phi2: var - var.subs(b2, 0)},
                   "phi_k = sigma^2 - sigma^2|_{beta_k = 0}")
    euler_rhs = (b1 * sp.diff(var, b1) + b2 * sp.diff(var, b2)) / 2
    euler = Identity("seed.factor_risk.euler", "sigma^2 = sum_k beta_k d(sigma^2)/d beta_k / 2 (Euler: sigma^2 is 2-homogeneous)", s2,
                     euler_rhs, (Step(var, "definition: sigma^2 = beta^T C beta", model), Step(euler_rhs, "Euler's theorem, expanded")))
    uncorrelated = Rule("uncorrelated factors", "definition", {c12: sp.Integer(0)}, "C_12 = 0")
    general_steps = (Step(var, "definition: sigma^2 = beta^T C beta", model),
                     Step(phi1 + phi2 - 2 * b1 * b2 * c12, "definition: phi_k, the ablation effect of factor k", effects))
    general = Identity("seed.factor_risk.general", "sigma^2 = phi_1 + phi_2 - 2 beta_1 beta_2 C_12", s2, phi1 + phi2 - 2 * b1 * b2 * c12,
                       general_steps)
    exact = Identity("seed.factor_risk.ablation", "sigma^2 = phi_1 + phi_2 for uncorrelated factors", s2, phi1 + phi2,
                     general_steps + (Step(phi1 + phi2, "C_12 = 0", uncorrelated),),
                     (Assumption("uncorrelated factors", "a covariance C_12 is counted in both factors' ablation effects",
                                 lambda a: True),))
    failing = Step(phi1 + phi2, "the per-factor ablation effects sum to sigma^2", effects)
    refuted = Refutation("seed.factor_risk.ablation", general_steps[:1], failing, check_step(var, failing),
                         "-2 beta_1 beta_2 C_12: the covariance, counted in both factors' ablation effects")
    return {"euler": euler, "general": general, "ablation": exact, "ablation.refuted": refuted}


# ------------------------------------------------------------------ the catalogue's share
def _all() -> list[Identity | Refutation]:
    out: list[Identity | Refutation] = []
    for exact, general_form, refutation in (head_linear("none"), layer_split("sequential", 2), qk_d_model()):
        out += [exact, general_form, refutation]
    return out + list(factor_risk().values())


def general() -> list[Identity]:
    """The catalogue's share: every Identity of this module (a head, a two-head sequential layer, the QK scale, factor risk)."""
    return [v for v in _all() if isinstance(v, Identity)]


def refutations() -> list[Refutation]:
    """The catalogue's share: every Refutation of this module."""
    return [v for v in _all() if isinstance(v, Refutation)]
