"""Norm folding, centring the unembedding, and what a live final norm costs.

Numeric checks compile the proved expressions and compare them with torch's own
LayerNorm / RMSNorm / log_softmax on random float64 tensors. Tolerance: 1e-12
relative to the scale of the compared tensors (float64 eps is 2.2e-16; a few
hundred rounded operations stay below 1e-13, so 1e-12 is a margin, not slack: a
missing bias or gain term is O(1)).
"""

from __future__ import annotations

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from circuitproof import Arch, ShapeError
from circuitproof.symbolic import DerivationError, Identity, Rule, Step, compile_expr, is_zero, norms
from circuitproof.symbolic import _atoms as at
from circuitproof.symbolic.logits import Readout

RTOL, EPS = 1e-12, 1e-5
B, P, D, OUT, V = 3, 5, 6, 4, 7


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    scale = max(a.abs().max().item(), b.abs().max().item(), 1.0)
    assert (a - b).abs().max().item() <= rtol * scale, f"max error {(a - b).abs().max().item():.3e} at scale {scale:.3e}"


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _bind(env: dict, identity: Identity) -> dict:
    """Evaluate every named definition of the identity (folded, centred weights) in derivation order."""
    for atom, definition in norms.definitions(identity):
        if atom.name not in env:
            env[atom.name] = compile_expr(definition.expand().doit())(env)
    return env


def _norm_env(g, x: torch.Tensor, kind: str) -> dict:
    """S, C, G, b_N for a norm over the last axis of x, scale computed from x itself (then frozen)."""
    stat = x.var(-1, unbiased=False) if kind == "LN" else (x * x).mean(-1)
    gain = _rand(g, D)
    return {"x": x, f"S_{{{kind}}}": torch.diag_embed((stat + EPS).sqrt()), "C": torch.eye(D, dtype=torch.float64) - 1.0 / D,
            "G": torch.diag(gain), "b_{N}": _rand(g, 1, D), "1": torch.ones(P, 1, dtype=torch.float64), "_gain": gain}


# ------------------------------------------------------------------ the lemma, numerically
@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**16), st.floats(-50, 50))
def test_log_softmax_is_invariant_to_a_per_row_constant(rows, cols, seed, spread):
    """Lemma soundness: logsoftmax(z + u 1^T) = logsoftmax(z), and likewise softmax, for any column u."""
    g = torch.Generator().manual_seed(seed)
    z, u = 3 * _rand(g, rows, cols), spread * _rand(g, rows, 1)
    ones = torch.ones(cols, 1, dtype=torch.float64)
    _close(torch.log_softmax(z + u @ ones.mT, -1), torch.log_softmax(z, -1), 1e-12)
    _close(torch.softmax(z + u @ ones.mT, -1), torch.softmax(z, -1), 1e-12)
    # the row-wise expressions evaluate as torch does
    _close(norms.LogSoftmax.evaluate(z), torch.log_softmax(z, -1), 1e-14)
    _close(norms.Softmax.evaluate(z), torch.softmax(z, -1), 1e-14)


def test_the_lemma_needs_a_constant_along_each_row():
    z = at.atom("test_scores", "z^{test}", at.P, at.D_VOCAB)
    ones_v = at.atom("ones_vocab", "1_{V}", at.D_VOCAB, 1)
    with pytest.raises(ShapeError, match="column"):
        full = at.atom("test_shift", "u^{test}", at.P, at.D_VOCAB)
        norms.shift_invariance(z, full, at.atom("test_ones", "1^{test}", at.D_VOCAB, at.D_VOCAB))
    # without the lemma, log-softmax is opaque: a shift is not removed by algebra
    u = at.atom("test_shift", "u^{test}_{col}", at.P, 1)
    with pytest.raises(DerivationError):
        Identity("wrong", "", norms.LogSoftmax(z + u * ones_v.T), norms.LogSoftmax(z), (Step(norms.LogSoftmax(z), "algebra"),))
    Identity("right", "", norms.LogSoftmax(z + u * ones_v.T), norms.LogSoftmax(z),
             (Step(norms.LogSoftmax(z), "the lemma", norms.shift_invariance(z, u, ones_v)),))


# ------------------------------------------------------------------ folding
def test_fold_layernorm_builds_and_names_its_folded_weights():
    fold = norms.fold_layernorm()
    defs = dict(norms.definitions(fold))
    assert [s.rule.kind if s.rule else "algebra" for s in fold.steps] == ["definition", "algebra", "definition"]
    W, b = at.atom("linear", "W", at.D_MODEL, norms.D_OUT), at.atom("linear_bias", "b", 1, norms.D_OUT)
    bN = at.atom("norm_bias", "b_{N}", 1, at.D_MODEL)
    C, G = at.atom("centring", "C", at.D_MODEL, at.D_MODEL), at.atom("norm_gain", "G", at.D_MODEL, at.D_MODEL)
    named = {k.name: v for k, v in defs.items()}
    assert is_zero(named["W^{fold}_{LN}"] - C * G * W) and is_zero(named["b^{fold}_{LN}"] - (bN * W + b))
    assert fold.frozen == ("S",)
    rms = {k.name: v for k, v in norms.definitions(norms.fold_rmsnorm())}
    assert is_zero(rms["W^{fold}_{RMS}"] - G * W) and "b^{fold}_{RMS}" not in rms


def test_a_wrong_fold_is_rejected():
    fold = norms.fold_layernorm()
    Wf, bf = fold.steps[-1].rule.mapping
    b = at.atom("linear_bias", "b", 1, norms.D_OUT)
    wrong = Rule("forgetting the norm's bias", "definition", {Wf: fold.steps[-1].rule.mapping[Wf], bf: b})
    with pytest.raises(DerivationError, match=r"b_\{N\}\*W"):
        Identity("wrong", "", fold.lhs, fold.rhs, fold.steps[:-1] + (Step(fold.rhs, "fold without b_N W", wrong),))


@pytest.mark.parametrize("seed", range(3))
def test_fold_layernorm_evaluates_like_torch(seed):
    g = torch.Generator().manual_seed(seed)
    x = 2 * _rand(g, B, P, D) + 0.5
    env = _norm_env(g, x, "LN")
    env.update({"W": _rand(g, D, OUT), "b": _rand(g, 1, OUT)})
    ln = F.layer_norm(x, (D,), env.pop("_gain"), env["b_{N}"][0], EPS)
    fold = norms.fold_layernorm()
    # the frozen-scale form of the norm is torch's LayerNorm
    _close(compile_expr(fold.steps[0].rule.mapping[at.atom("norm_out", "N", at.P, at.D_MODEL, "LN")])(env), ln)
    env["N_{LN}"] = ln
    _bind(env, fold)
    _close(fold.compile().lhs(env), ln @ env["W"] + env["b"])
    _close(fold.compile().rhs(env), ln @ env["W"] + env["b"])


@pytest.mark.parametrize("seed", range(3))
def test_fold_rmsnorm_evaluates_like_torch(seed):
    g = torch.Generator().manual_seed(seed)
    x = 2 * _rand(g, B, P, D)
    env = _norm_env(g, x, "RMS")
    env.update({"W": _rand(g, D, OUT), "b": _rand(g, 1, OUT)})
    env["N_{RMS}"] = F.rms_norm(x, (D,), env.pop("_gain"), EPS)
    fold = norms.fold_rmsnorm()
    _bind(env, fold)
    _close(fold.compile().rhs(env), env["N_{RMS}"] @ env["W"] + env["b"])


# ------------------------------------------------------------------ centring
@pytest.mark.parametrize("seed", range(3))
def test_centred_unembedding_leaves_log_softmax_unchanged(seed):
    g = torch.Generator().manual_seed(seed)
    env = {"y": _rand(g, B, P, D), "W_U": _rand(g, D, V), "b_U": _rand(g, 1, V), "1": torch.ones(P, 1, dtype=torch.float64),
           "1_{V}": torch.ones(V, 1, dtype=torch.float64), "d_vocab": float(V)}
    centre = norms.centre_unembedding()
    _bind(env, centre)
    assert env["W_U^{c}"].sum(-1).abs().max() < 1e-13 and env["b_U^{c}"].sum().abs() < 1e-13  # centred over the vocabulary
    assert (env["W_U^{c}"] - env["W_U"]).abs().max() > 1e-3  # and actually changed
    expected = torch.log_softmax(env["y"] @ env["W_U"] + env["b_U"], -1)
    _close(compile_expr(centre.lhs)(env), expected)
    _close(compile_expr(centre.rhs)(env), expected)
    assert centre.steps[-1].rule.kind == "lemma"


@pytest.mark.parametrize("seed", range(3))
def test_folding_and_centring_the_final_layernorm_leave_log_probs_unchanged(seed):
    g = torch.Generator().manual_seed(seed)
    x = 3 * _rand(g, B, P, D) - 1
    env = _norm_env(g, x, "LN")
    env.update({"W_U": _rand(g, D, V), "b_U": _rand(g, 1, V), "1_{V}": torch.ones(V, 1, dtype=torch.float64), "d_vocab": float(V)})
    env["N_{LN}"] = F.layer_norm(x, (D,), env.pop("_gain"), env["b_{N}"][0], EPS)
    identity = norms.fold_and_centre()
    _bind(env, identity)
    expected = torch.log_softmax(env["N_{LN}"] @ env["W_U"] + env["b_U"], -1)
    _close(compile_expr(identity.lhs)(env), expected)
    _close(compile_expr(identity.rhs)(env), expected)
    assert [p.id for p in identity.parts] == ["norm.fold_layernorm[W_U]", "norm.centre_unembedding[W_U^{fold}_{LN}]"]


def test_centring_assumes_no_logit_softcap():
    centre = norms.centre_unembedding()
    assert centre.applies(Arch())[0]
    ok, why = centre.applies(Arch(logit_softcap=30.0))
    assert not ok and "softcap" in why


# ------------------------------------------------------------------ the live final norm
def test_live_final_norm_refutation_names_the_scale_change():
    ref = norms.live_final_norm_refutation()
    r = Readout("layernorm")
    S_new = at.atom("final_scale_inv_ablated", "S'_{f}^{-1}", at.P, at.P)
    x, c = at.stream(sp.Symbol("L", integer=True, nonnegative=True)), at.atom("component", "c", at.P, at.D_MODEL)
    expected = (S_new - r.left) * (x - c) * r.right
    assert is_zero(ref.remainder - expected)
    assert not is_zero(ref.remainder)
    assert "(S'_f^{-1} - S_f^{-1}) (x_L - c) C G_f W_U" in ref.term
    # with the scale frozen (S' = S) the remainder vanishes and the direct effect is exact
    assert is_zero(ref.remainder.xreplace({S_new: r.left}))
    frozen = norms.frozen_direct_effect()
    assert is_zero(frozen.rhs + r(c))


@pytest.mark.parametrize("seed", range(3))
def test_live_final_norm_remainder_is_the_true_change_minus_the_frozen_effect(seed):
    """With torch's LayerNorm recomputed on x_L - c, true change = -S^{-1} c C G W_U + the named remainder."""
    g = torch.Generator().manual_seed(seed)
    x, c = 2 * _rand(g, B, P, D), _rand(g, B, P, D)
    gain, bias, W_U = _rand(g, D), _rand(g, D), _rand(g, D, V)
    env = {"x_{L}": x, "c": c, "C": torch.eye(D, dtype=torch.float64) - 1.0 / D, "G_{f}": torch.diag(gain), "W_U": W_U,
           "S_{f}^{-1}": torch.diag_embed((x.var(-1, unbiased=False) + EPS).rsqrt()),
           "S'_{f}^{-1}": torch.diag_embed(((x - c).var(-1, unbiased=False) + EPS).rsqrt())}
    true_change = (F.layer_norm(x - c, (D,), gain, bias, EPS) - F.layer_norm(x, (D,), gain, bias, EPS)) @ W_U
    ref = norms.live_final_norm_refutation()
    from circuitproof.symbolic import compile_expr

    frozen, remainder = compile_expr(ref.failing.expr)(env), compile_expr(ref.remainder)(env)
    _close(frozen + remainder, true_change)
    assert (remainder.abs().max() / true_change.abs().max()) > 1e-3  # not negligible: the frozen effect is wrong


def test_frozen_logit_decomposition_is_the_logits_module_proof():
    proof = norms.frozen_logit_decomposition("sequential", "layernorm", range(1, 3))
    assert proof.id == "logits.decomposition" and "S_f" in proof.frozen


def test_general_and_refutations_are_the_catalogue_share():
    assert {i.id for i in norms.general()} >= {"norm.fold_layernorm[W]", "norm.fold_rmsnorm[W]", "norm.folding"}
    assert [r.claim for r in norms.refutations()] == ["ablation.direct_effect (live final norm)"]
