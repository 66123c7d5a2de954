"""The derivations: every step checked, wrong steps rejected, inductions complete, refutations name their term."""

from __future__ import annotations

import pytest
import sympy as sp

from circuitproof import ShapeError
from circuitproof.symbolic import DerivationError, Identity, Rule, Step, attention, catalogue, is_zero, logits, residual
from circuitproof.symbolic import _atoms as at


def test_a_dropped_term_is_rejected_and_the_step_shown():
    x, a, m = at.stream(0), at.attn(0), at.mlp(0)
    rule = residual.update_rules("parallel", 0)[0]
    with pytest.raises(DerivationError, match=r"step 1 \('drop the MLP'\) does not follow[\s\S]*remainder: m_\{0\}"):
        Identity("wrong", "x_1 = x_0 + a_0", at.stream(1), x + a, (Step(x + a, "drop the MLP", rule),))
    # the right step passes
    Identity("right", "x_1 = x_0 + a_0 + m_0", at.stream(1), x + a + m, (Step(x + a + m, "the add", rule),))


def test_a_rule_that_does_not_apply_is_rejected():
    x, a = at.stream(0), at.attn(0)
    unrelated = Rule("unrelated", "definition", {at.mlp(5): x})
    with pytest.raises(DerivationError):
        Identity("wrong", "", at.stream(1), x + a, (Step(x + a, "no reason", unrelated),))


def test_an_end_that_is_not_the_rhs_is_rejected():
    x = at.stream(0)
    with pytest.raises(DerivationError, match="not at the rhs"):
        Identity("wrong", "", x + x, 2 * x + at.attn(0), (Step(2 * x, "algebra"),))


def test_shapes_are_checked_where_sympy_does_not():
    wq = at.weight("W_Q", 0, 0)
    with pytest.raises(ShapeError, match="W_Q"):
        Identity("bad", "", wq * wq, wq * wq, ())
    with pytest.raises(ShapeError, match=r"W_Q\^\{0,0\} \* W_V\^\{0,0\}"):
        Identity("bad", "", wq * at.weight("W_V", 0, 0), wq * at.weight("W_V", 0, 0), ())


@pytest.mark.parametrize("kind", ["sequential", "parallel", "attn_only"])
def test_residual_expansion_is_proved_by_induction_and_unrolled(kind):
    proof = residual.expansion(kind)
    base, step, *unrolled = proof.parts
    assert base.lhs == at.stream(0) and "L + 1" in str(step.lhs)
    assert [u.id for u in unrolled] == [f"residual.expansion[L={L}]" for L in range(1, 7)]
    # the inductive step used the hypothesis, and the unrolling for L = 6 reaches the explicit sum
    assert any(s.rule is not None and s.rule.kind == "hypothesis" for s in step.steps)
    terms = sp.MatAdd.make_args(unrolled[-1].rhs)
    assert len(terms) == 1 + 6 * (1 if kind == "attn_only" else 2)


@pytest.mark.parametrize("final", ["none", "layernorm", "rmsnorm"])
@pytest.mark.parametrize("kind", ["sequential", "parallel", "attn_only"])
def test_logit_decomposition_for_every_depth(kind, final):
    proof = logits.decomposition(kind, final)
    assert [p.id for p in proof.parts[2:]] == [f"logits.decomposition[L={L}]" for L in range(1, 7)]
    frozen = proof.frozen
    assert frozen == (() if final == "none" else ("S_f",))


def test_post_norm_breaks_additivity_at_the_first_step():
    r = residual.post_norm_refutation()
    assert r.claim == "residual.additive"
    expected = at.atom("norm_out", "N^{mlp}", at.P, at.D_MODEL, sp.Symbol("l", integer=True, nonnegative=True)) - (
        at.stream(sp.Symbol("l", integer=True, nonnegative=True)) + at.attn(sp.Symbol("l", integer=True, nonnegative=True))
        + at.mlp(sp.Symbol("l", integer=True, nonnegative=True)))
    assert is_zero(r.remainder - expected)
    assert "post-norm" in r.term


def test_key_bias_terms_split_into_cancelling_and_remaining():
    split = attention.key_bias_invariance_terms()
    cancel = {str(t) for t in split["cancel"]}
    remain = {str(t) for t in split["remain"]}
    assert any("b_K" in t and "X_" in t for t in cancel) and any("b_Q" in t and "b_K" in t for t in cancel)
    assert any("b_Q" in t and "W_K" in t for t in remain) and any("W_{QK}" in t for t in remain)
    assert len(cancel) == 2 and len(remain) == 2


def test_rotary_makes_the_score_depend_on_the_offset():
    form = attention.rotary_scores()
    assert "R_{i - j}" in str(form.rhs)
    refutation = attention.rotary_qk_refutation()
    assert "R_{i - j}" in str(refutation.remainder) and refutation.claim == "attention.qk_circuit"


def test_the_ov_circuit_needs_the_rows_of_the_pattern_to_sum_to_one():
    ov = attention.ov_circuit()
    assert any(s.rule is not None and s.rule.name == "rows of A sum to one" for s in ov.steps)
    # without the lemma the step from A 1 b_V W_O to 1 b_V W_O does not follow
    A, X, one = at.pattern(0, 0), at.attn_input(0), at.ones()
    wv, wo, bv = at.weight("W_V", 0, 0), at.weight("W_O", 0, 0), at.bias("b_V", 0, 0)
    with pytest.raises(DerivationError):
        Identity("no lemma", "", A * (X * wv + one * bv) * wo, A * X * wv * wo + one * bv * wo,
                 (Step(A * X * wv * wo + one * bv * wo, "distributivity only"),))


def test_the_gauge_holds_for_ov_always_and_for_qk_only_without_rotary():
    assert attention.gauge_qk().rhs is not None and attention.gauge_ov().rhs is not None
    assert "M" in str(attention.gauge_qk_rotary_refutation().remainder)


def test_the_whole_catalogue_builds(benchmark=None):
    identities = catalogue.general()
    ids = {i.id for i in identities}
    for claim in ("residual.additive", "residual.expansion", "attention.head_sum", "attention.qk_circuit", "attention.ov_circuit",
                  "attention.linear_given_pattern", "attention.gauge_qk", "attention.gauge_ov", "logits.linear_in_final_resid",
                  "logits.decomposition", "logits.heads_only", "ablation.direct_effect"):
        assert claim in ids, claim
    assert len(catalogue.refutations()) >= 4


def test_render_shows_every_step_with_its_justification():
    text = residual.expansion("sequential").render("markdown")
    assert "induction on L" in text and "induction hypothesis" in text and "residual.expansion[L=6]" in text
    plain = attention.ov_circuit().render("text")
    assert "rows of A sum to one" in plain and "$" not in plain
    with pytest.raises(ValueError, match="fmt"):
        attention.ov_circuit().render("html")
