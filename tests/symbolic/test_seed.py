"""The seed's formulas: column convention translated, exact where they are, remainders named where they are not.

Numeric checks evaluate the proved forms (compiled) against a direct float64
computation of the model's equations; tolerance 1e-12 relative to the scale of
the compared tensors (the same reasoning as tests/symbolic/test_norms.py).
"""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from circuitproof import Arch
from circuitproof.symbolic import DerivationError, Identity, Refutation, Step, compile_expr, is_zero, logits, seed
from circuitproof.symbolic import _atoms as at
from circuitproof.symbolic.attention import SCALE

RTOL = 1e-12
l, h = sp.Symbol("l", integer=True, nonnegative=True), sp.Symbol("h", integer=True, nonnegative=True)
L_SYM = sp.Symbol("L", integer=True, nonnegative=True)


def _close(a, b):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1.0)
    assert (a - b).abs().max().item() <= RTOL * scale, f"max error {(a - b).abs().max().item():.3e} at scale {scale:.3e}"


@pytest.fixture(scope="module")
def formulas():
    return seed.seed_formulas()


def test_every_formula_builds_with_its_three_forms(formulas):
    for name in ("logits_linear", "logits_heads", "qk", "ov"):
        assert isinstance(formulas[name], Identity) and isinstance(formulas[f"{name}.general"], Identity)
        assert isinstance(formulas[f"{name}.refuted"], Refutation) and not is_zero(formulas[f"{name}.refuted"].remainder)
        # the exact form is the general derivation plus one step: the remainder vanishing under the assumptions
        assert formulas[name].steps[:-1] == formulas[f"{name}.general"].steps
        assert formulas[name].assumptions != formulas[f"{name}.general"].assumptions
    for key in ("translation.qk", "translation.ov", "translation.logits", "update_rule.sequential", "update_rule.parallel",
                "update_rule.parallel.refuted", "update_rule.post_norm.refuted", "recurrence", "factor_model",
                "factor_model.interaction.refuted", "factor_model.interaction.mixed_partial"):
        assert key in formulas
    assert {i.id for i in seed.general()} == {v.id for v in formulas.values() if isinstance(v, Identity)}
    assert len(seed.refutations()) == sum(isinstance(v, Refutation) for v in formulas.values())


# ------------------------------------------------------------------ the translation
def test_the_column_convention_is_a_checked_step(formulas):
    qk = formulas["translation.qk"]
    assert str(qk.lhs) == "x^{col}_{i}.T*W_Q^{col}_{l,h}.T*W_K^{col}_{l,h}*x^{col}_{j}"
    assert str(qk.rhs) == "x_{i}*W_Q^{l,h}*W_K^{l,h}.T*x_{j}.T"
    # a translation that forgets a transpose does not check
    rule = qk.steps[0].rule
    with pytest.raises(DerivationError):
        Identity("wrong", "", qk.lhs, qk.rhs.T, (Step(qk.rhs.T, "W_Q and W_K swapped", rule),))


def test_the_translations_evaluate_equal():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    for identity in seed.translations().values():
        env, rule = {}, identity.steps[0].rule
        for col, row in rule.mapping.items():  # draw the row tensors, bind the column ones to their transposes
            atom = row.arg
            shape = [{at.D_MODEL: 5, at.D_HEAD: 3, at.D_VOCAB: 7, at.P: 4}.get(s, s) for s in atom.shape]
            env[atom.name] = r(*shape)
            env[col.name] = env[atom.name].mT
        compiled = identity.compile()
        _close(compiled.lhs(env), compiled.rhs(env))


# ------------------------------------------------------------------ the remainders
def test_logits_linear_remainder(formulas):
    ref = formulas["logits_linear.refuted"]
    R_norm, R_cap = at.atom("remainder", "R^{norm}", at.P, at.D_VOCAB, L_SYM), at.atom("remainder", "R^{softcap}", at.P, at.D_VOCAB)
    expected = R_norm + at.ones() * at.bias("b_U") + R_cap
    assert is_zero(ref.remainder - expected)
    exact = formulas["logits_linear"]
    assert exact.applies(Arch(norm="none", attn_only=True))[0]
    ok, why = exact.applies(Arch())  # GPT-2-like: a final LayerNorm
    assert not ok and "final norm" in why


def test_logits_heads_remainder_names_mlps_biases_norm_and_softcap(formulas):
    ref = formulas["logits_heads.refuted"]
    W_U, one = at.weight("W_U"), at.ones()
    expected = sp.MatAdd(*[at.mlp(k) * W_U + one * at.bias("b_O", k) * W_U for k in range(2)],
                         at.atom("remainder", "R^{norm}", at.P, at.D_VOCAB, 2), one * at.bias("b_U"),
                         at.atom("remainder", "R^{softcap}", at.P, at.D_VOCAB))
    assert is_zero(ref.remainder - expected)
    for term in ("m_l", "b_O", "R^{norm}", "b_U", "R^{softcap}"):
        assert term in ref.term


@pytest.mark.parametrize("L,H", [(1, 1), (2, 3)])
def test_logits_heads_exact_form_agrees_with_the_logits_module(L, H):
    exact, general, _ = seed.logits_heads(L, H)
    cols = general.steps[-1].rule
    assert is_zero(cols.apply(exact.rhs) - logits.heads_only(L, H).rhs)
    ok, _ = exact.applies(Arch(n_layers=L, n_heads=H, attn_only=True, norm="none"))
    assert ok and not exact.applies(Arch(n_layers=L, n_heads=H, attn_only=True, norm="none", o_bias=True))[0]


def test_qk_remainder_and_what_cancels(formulas):
    ref = formulas["qk.refuted"]
    X, one = at.attn_input(l), at.ones()
    wq, wk, bq = at.weight("W_Q", l, h), at.weight("W_K", l, h), at.bias("b_Q", l, h)
    expected = (SCALE * one * bq * wk.T * X.T + (SCALE - 1 / sp.sqrt(at.D_HEAD)) * X * wq * wk.T * X.T
                + at.atom("remainder", "R^{rot}", at.P, at.P, l, h) + at.atom("remainder", "R^{scap}", at.P, at.P, l, h))
    assert is_zero(ref.remainder - expected)
    assert not ref.remainder.has(at.bias("b_K", l, h))  # the key bias cancels entirely in the softmax
    exact = formulas["qk"]
    assert exact.applies(Arch(k_bias=True))[0]
    assert not exact.applies(Arch(q_bias=True))[0]
    assert not exact.applies(Arch(positional="rotary"))[0]
    assert not exact.applies(Arch(attn_scale=0.125, d_head=4))[0]


def _qk_env(g, bq_scale: float):
    P, d, dh = 5, 6, 4
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    X, wq, wk = r(P, d), r(d, dh), r(d, dh)
    bq, bk = bq_scale * r(1, dh), r(1, dh)
    mask = torch.triu(torch.full((P, P), float("-inf"), dtype=torch.float64), 1)
    env = {"X_{l}": X, "W_Q^{l,h}": wq, "W_K^{l,h}": wk, "b_Q^{l,h}": bq, "b_K^{l,h}": bk, "1": torch.ones(P, 1, dtype=torch.float64),
           "M_{l}": mask, "X^{col}_{l}": X.mT, "W_Q^{col}_{l,h}": wq.mT, "W_K^{col}_{l,h}": wk.mT,
           "R^{rot}_{l,h}": torch.zeros(P, P, dtype=torch.float64), "R^{scap}_{l,h}": torch.zeros(P, P, dtype=torch.float64)}
    return env, dh


def test_qk_exact_form_evaluates_like_softmax_with_a_key_bias():
    """No b_Q, default scale, a nonzero b_K: the seed's softmax(x W_Q W_K^T x^T / sqrt(d_head)) is the pattern."""
    env, dh = _qk_env(torch.Generator().manual_seed(1), 0.0)
    q, k = env["X_{l}"] @ env["W_Q^{l,h}"], env["X_{l}"] @ env["W_K^{l,h}"] + env["b_K^{l,h}"]
    pattern = torch.softmax(q @ k.mT / dh**0.5 + env["M_{l}"], -1)
    exact = seed.qk_formula()[0]
    _close(compile_expr(exact.rhs.xreplace({at.D_HEAD: dh}))(env), pattern)


def test_qk_general_form_evaluates_like_softmax_with_every_bias():
    env, dh = _qk_env(torch.Generator().manual_seed(2), 1.0)
    env["scale"] = 0.3
    q, k = env["X_{l}"] @ env["W_Q^{l,h}"] + env["b_Q^{l,h}"], env["X_{l}"] @ env["W_K^{l,h}"] + env["b_K^{l,h}"]
    pattern = torch.softmax(0.3 * q @ k.mT + env["M_{l}"], -1)
    general = seed.qk_formula()[1]
    _close(compile_expr(general.rhs.xreplace({at.D_HEAD: dh}))(env), pattern)
    # and the seed's form alone misses it
    assert (compile_expr(seed.qk_formula()[0].rhs.xreplace({at.D_HEAD: dh}))(env) - pattern).abs().max() > 1e-3


def test_ov_remainder_and_numeric_check(formulas):
    ref = formulas["ov.refuted"]
    A, X, x, one = at.pattern(l, h), at.attn_input(l), at.stream(l), at.ones()
    wv, wo, bv = at.weight("W_V", l, h), at.weight("W_O", l, h), at.bias("b_V", l, h)
    assert is_zero(ref.remainder - (A * (X - x) * wv * wo + one * bv * wo))
    assert formulas["ov"].applies(Arch(norm="none"))[0] and not formulas["ov"].applies(Arch())[0]  # pre-norm reads N(x)
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    P, d, dh = 5, 6, 3
    xs, Xs = r(P, d), r(P, d)
    env = {"A_{l,h}": torch.softmax(r(P, P), -1), "X_{l}": Xs, "x_{l}": xs, "W_V^{l,h}": r(d, dh), "W_O^{l,h}": r(dh, d),
           "b_V^{l,h}": r(1, dh), "1": torch.ones(P, 1, dtype=torch.float64)}
    env.update({"x^{col}_{l}": xs.mT, "W_V^{col}_{l,h}": env["W_V^{l,h}"].mT, "W_O^{col}_{l,h}": env["W_O^{l,h}"].mT})
    head = env["A_{l,h}"] @ (Xs @ env["W_V^{l,h}"] + env["b_V^{l,h}"]) @ env["W_O^{l,h}"]
    _close(compile_expr(formulas["ov.general"].rhs)(env), head)


def test_update_rule_exact_for_sequential_and_its_remainders(formulas):
    seq = formulas["update_rule.sequential"]
    assert seq.applies(Arch())[0]
    assert not seq.applies(Arch(parallel=True))[0] and not seq.applies(Arch(norm_placement="post"))[0]
    x = at.stream(l)
    attn, mlp = seed.Apply(r"Attn_{l}", x), lambda a: seed.Apply(r"MLP_{l}", a)
    assert is_zero(formulas["update_rule.parallel.refuted"].remainder - (mlp(x) - mlp(x + attn)))
    post = formulas["update_rule.post_norm.refuted"]
    y = seed.Apply(r"LN1_{l}", x + attn)
    assert is_zero(post.remainder - (seed.Apply(r"LN2_{l}", y + mlp(y)) - x - attn - mlp(x + attn)))
    # opaque sublayers: MLP(x) is not MLP(x + Attn(x)) by algebra
    with pytest.raises(DerivationError):
        Identity("wrong", "", mlp(x), mlp(x + attn), (Step(mlp(x + attn), "the MLP reads x + Attn(x)"),))


# ------------------------------------------------------------------ the analogies
def test_recurrence_is_proved_by_induction_and_unrolled(formulas):
    proof = formulas["recurrence"]
    n = seed.N_STEPS
    base, step, lemma, *unrolled = proof.parts
    assert lemma.id == "seed.recurrence.shift" and base.id == "seed.recurrence[n=0]" and step.id == "seed.recurrence[n->n+1]"
    assert [u.id for u in unrolled] == [f"seed.recurrence[n={m}]" for m in range(1, 7)]
    A = [s for s in proof.rhs.atoms(sp.MatrixSymbol) if s.name == "A^{rec}"][0]
    assert proof.rhs.has(A**n)
    six = unrolled[-1]
    b = [s for s in six.rhs.atoms(sp.MatrixSymbol) if s.name == "b^{rec}"][0]
    x0 = [s for s in six.rhs.atoms(sp.MatrixSymbol) if s.name == "x^{rec}_{0}"][0]
    assert is_zero(six.rhs - (A**6 * x0 + b + sum((A**k * b for k in range(1, 6)), sp.ZeroMatrix(*b.shape))))
    # the step that skips the lemma does not check
    B = [s for s in step.rhs.atoms(sp.MatrixSymbol) if s.name.startswith("B^{rec}")][0]
    with pytest.raises(DerivationError):
        Identity("wrong", "", step.steps[2].expr, step.rhs, (Step(A ** (n + 1) * x0 + B, "forgetting b"),))


def test_recurrence_unrolled_matches_iteration():
    g = torch.Generator().manual_seed(4)
    d = 4
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / 2
    b, x = torch.randn(d, 1, generator=g, dtype=torch.float64), torch.randn(d, 1, generator=g, dtype=torch.float64)
    x0, state = x.clone(), x.clone()
    proof = seed.recurrence(range(1, 7))
    for m, identity in enumerate(proof.parts[3:], 1):
        state = A @ state + b
        explicit = identity.rhs.replace(lambda e: isinstance(e, sp.MatPow), lambda e: sp.MatMul(*[e.base] * int(e.exp)))
        env = {"A^{rec}": A, "b^{rec}": b, "x^{rec}_{0}": x0}
        _close(compile_expr(explicit)(env), state)


def test_factor_model_attribution(formulas):
    exact = formulas["factor_model"]
    assert exact.rhs == sp.Symbol("epsilon", real=True) + sum(sp.symbols("phi_1:4", real=True))
    ref = formulas["factor_model.interaction.refuted"]
    f1, f2, b12 = sp.Symbol("f_1", real=True), sp.Symbol("f_2", real=True), sp.Symbol("beta_12", real=True)
    assert is_zero(ref.remainder - (-b12 * f1 * f2))
    mixed = formulas["factor_model.interaction.mixed_partial"]
    assert mixed.rhs == b12 and isinstance(mixed.lhs, sp.Derivative)
    with pytest.raises(DerivationError):  # no per-factor attribution covers the interaction
        Identity("wrong", "", mixed.lhs, sp.Integer(0), (Step(sp.Integer(0), "an attribution that covers it"),))
