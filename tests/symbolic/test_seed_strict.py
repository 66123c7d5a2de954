"""The seed's stricter forms: each derivation checks, its remainder is the documented term, and a wrong step does not check."""

from __future__ import annotations

import pytest
import sympy as sp

from circuitproof import Arch
from circuitproof.symbolic import DerivationError, Identity, Refutation, Step, is_zero, seed_strict
from circuitproof.symbolic import _atoms as at

l, h = sp.Symbol("l", integer=True, nonnegative=True), sp.Symbol("h", integer=True, nonnegative=True)


@pytest.mark.parametrize("norm", ["none", "layernorm", "rmsnorm"])
def test_a_head_is_linear_given_its_pattern_only_without_biases(norm):
    exact, general, refuted = seed_strict.head_linear(norm)
    assert isinstance(refuted, Refutation) and exact.steps[:-1] == general.steps
    one, A = at.ones(), at.pattern(l, h)
    h0 = one * at.bias("b_V", l, h) * at.weight("W_O", l, h)
    if norm == "layernorm":
        h0 += A * one * at.atom("in_bias", "b^{in}", 1, at.D_MODEL, l) * at.atom("W_OV", "W_{OV}", at.D_MODEL, at.D_MODEL, l, h, sup=True)
    assert is_zero(refuted.remainder + h0)  # general - seed's form = -h(0)
    assert exact.applies(Arch(norm="none"))[0] and not exact.applies(Arch(norm="none", v_bias=True))[0]
    assert exact.applies(Arch(norm="rmsnorm"))[0]
    assert exact.applies(Arch(norm="layernorm"))[0] == (norm != "layernorm")  # only the LayerNorm identity has the norm's bias


@pytest.mark.parametrize("kind, H", [("sequential", 2), ("parallel", 1), ("attn_only", 3)])
def test_the_layer_update_is_the_heads_and_the_mlp_only_without_b_O(kind, H):
    exact, _, refuted = seed_strict.layer_split(kind, H)
    heads = sp.MatAdd(*[at.head(l, k) for k in range(H)])
    expected = at.stream(l) + heads + (sp.ZeroMatrix(at.P, at.D_MODEL) if kind == "attn_only" else at.mlp(l))
    assert is_zero(exact.rhs - expected)
    assert is_zero(refuted.remainder - at.ones() * at.bias("b_O", l))
    assert exact.applies(Arch())[0]
    for bad in (Arch(o_bias=True), Arch(norm_placement="output"), Arch(norm_placement="post")):
        assert not exact.applies(bad)[0]


def test_the_qk_formula_with_d_model_needs_the_d_model_scale():
    exact, _, refuted = seed_strict.qk_d_model()
    assert exact.applies(Arch(d_model=4, d_head=4))[0]
    assert not exact.applies(Arch(d_model=8, d_head=4))[0]
    assert exact.applies(Arch(d_model=8, d_head=4, attn_scale=8 ** -0.5))[0]
    assert refuted.remainder.has(at.bias("b_Q", l, h)) and "d_model" in str(refuted.remainder)


def test_factor_risk_euler_is_exact_and_ablation_double_counts_the_covariance():
    risk = seed_strict.factor_risk()
    b1, b2 = sp.symbols("beta_1 beta_2", real=True)
    c12 = sp.Symbol("C_12", real=True)
    assert sp.expand(risk["ablation.refuted"].remainder + 2 * b1 * b2 * c12) == 0
    assert isinstance(risk["euler"], Identity) and isinstance(risk["ablation"], Identity)
    general = risk["general"]
    with pytest.raises(DerivationError):  # the ablation effects alone are not the variance
        Identity("wrong", "", general.lhs, risk["ablation"].rhs, general.steps[:1] + (Step(risk["ablation"].rhs, "sum of effects"),))
