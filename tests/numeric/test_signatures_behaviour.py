"""Weights against behaviour: what the signatures predict from the weights, compared with the reference forward pass.

- OV: a layer-0 head's logit update, predicted by ``ov_prediction`` from its OV circuit given
  its pattern and the frozen norm divisors, equals the forward pass's (``head_out U / s_f``, and
  the zero-ablation effect with the final divisor frozen), on drawn models of every supported
  architecture; a head whose full OV circuit is a copy (planted through pseudo-inverses into a
  drawn model) raises the logit of each token it attends to by ``alpha lambda`` over the divisors.
- QK: a positional QK that prefers offset -1 (``circuits.previous_token``, ``copy_head``, any
  gain) gives the pattern ``positional_qk`` predicts, exactly, on random tokens: a previous-token
  pattern; with the token content removed the forward pass's scores are the positional scores
  (learned and rotary).
- Disagreements are listed head by head (``disagreements``), never averaged: a head whose token
  content outweighs its positional QK, and a head whose weights are not the ones that ran.

Tolerances: 1e-10 relative (``RTOL_OV``, float64: the routes differ only in the order of a
few products and sums), except where a pseudo-inverse is involved (its condition number,
bounded by ``assume``, amplifies rounding).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, note
from hypothesis import strategies as st

from circuitproof import Arch
from circuitproof.numeric import Weights, circuits, run
from circuitproof.numeric.interventions import Head, Reference, zero_ablate
from circuitproof.numeric.reference import softcap
from circuitproof.numeric.signatures import (
    RTOL_OV,
    checked,
    copying_score,
    disagreements,
    effective,
    head_table,
    norm_linear,
    ov_prediction,
    pattern_score,
    positional_qk,
)
from circuitproof.properties.strategies import archs, tokens, weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def _rel(a: torch.Tensor, b: torch.Tensor, *scale: torch.Tensor) -> float:
    """``max |a - b|`` over the largest magnitude among ``a``, ``b`` and ``scale`` (two-sided)."""
    size = max(float(t.abs().max()) for t in (a, b, *scale))
    return float((a - b).abs().max()) / size if size > 0 else 0.0


OV_ARCHS = archs(max_layers=2, max_heads=3, max_d_model=12, max_vocab=10, unembed_transform=False).filter(
    lambda a: "ov_prediction" in checked(a))


# ------------------------------------------------------------------ OV: the logit update
@given(arch=OV_ARCHS, data=st.data())
def test_the_ov_circuit_given_the_pattern_predicts_every_layer0_heads_logit_update(arch, data):
    w = data.draw(weights(arch))
    toks = data.draw(tokens(arch))
    trace = run(arch, w, toks)
    for h in range(arch.n_heads):
        p = ov_prediction(arch, w, trace, h)
        err = _rel(p.predicted, p.measured, p.token, p.position, p.bias)
        note(f"head {h}: relative error {err:.3g}")
        assert err <= RTOL_OV
    assert not [d for d in disagreements(arch, w, trace=trace) if d.signature == "ov_prediction"]


@given(arch=archs(max_heads=3, max_d_model=12, max_vocab=10, n_layers=1, attn_only=True, unembed_transform=False, logit_softcap=None)
       .filter(lambda a: "ov_prediction" in checked(a)), data=st.data())
def test_the_prediction_is_the_heads_effect_when_it_is_zero_ablated_with_the_final_divisor_frozen(arch, data):
    """A second route through the forward pass: the last layer's head removed, logits_clean - logits_ablated = its direct update."""
    w = data.draw(weights(arch))
    toks = data.draw(tokens(arch))
    for h in range(arch.n_heads):
        result = zero_ablate(Reference(w), Head(0, h), toks, freeze_final_norm=True)
        p = ov_prediction(arch, w, result.clean, h)
        assert _rel(-result.effect, p.predicted, p.token, p.position, p.bias) <= RTOL_OV


@given(V=st.integers(2, 6), extra=st.integers(1, 6), lam=st.sampled_from([2.0, 0.5, -1.0]), data=st.data())
def test_a_head_whose_full_ov_circuit_is_a_copy_raises_the_attended_tokens_logit_by_alpha_lambda(V, extra, lam, data):
    """Planted: W_V = pinv(E L_in), W_O = lambda pinv(U), so E W_V' W_O U = lambda I; then at every destination i

        update_i - position_i - bias_i = lambda sum_j A_ij e_{t_j} / (s_e,j s_j s_f,i)   (norm-free: lambda sum_j A_ij e_{t_j})
    """
    arch = data.draw(archs(max_heads=3, max_layers=2, d_vocab=V, d_model=V + extra, d_head=V, unembed_transform=False,
                           positional=st.sampled_from(["none", "learned"])).filter(lambda a: "ov_prediction" in checked(a)))
    w0 = data.draw(weights(arch))
    eff = effective(arch, w0)
    A = norm_linear(arch, w0, "attn_in", 0, eff.E)  # [V, D]: E L_in, what W_V reads
    cond = float(torch.linalg.cond(A)) * float(torch.linalg.cond(eff.U))
    assume(cond < 1e4)  # the pseudo-inverses amplify rounding by their condition numbers
    W_V, W_O = w0.W_V.clone(), w0.W_O.clone()
    W_V[0, 0] = torch.linalg.pinv(A)  # [D, V]: A W_V = I_V
    W_O[0, 0] = lam * torch.linalg.pinv(eff.U)  # [V, D]: W_O U = lambda I_V
    w = w0.replace(W_V=W_V, W_O=W_O)
    assert float(copying_score(arch, w)[0, 0]) == pytest.approx(1.0 if lam > 0 else -1.0, abs=1e-9)
    toks = data.draw(tokens(arch, min_pos=2))
    trace = run(arch, w, toks)
    p = ov_prediction(arch, w, trace, 0)
    scales = torch.ones_like(trace.tokens, dtype=torch.float64)[..., None]
    for slot, layer in (("embed", None), ("attn_in", 0)):
        if slot in trace.norms:
            scales = scales * (trace.norms[slot].scale if layer is None else trace.norms[slot].scale[layer])
    s_f = trace.norms["final"].scale if "final" in trace.norms else 1.0
    alpha = trace.pattern[0, :, 0]  # [B, P, P]
    copy = lam * (alpha / scales.transpose(-1, -2)) @ torch.nn.functional.one_hot(toks, V).double() / s_f  # [B, P, V]
    note(f"cond {cond:.3g}")
    assert _rel(p.measured, p.predicted, p.token, p.position, p.bias) <= RTOL_OV
    assert _rel(p.measured - p.position - p.bias, copy, p.measured) <= 1e-12 * cond + RTOL_OV


# ------------------------------------------------------------------ QK: the positional structure
@given(build=st.sampled_from([circuits.previous_token, circuits.copy_head]), d_vocab=st.integers(2, 8), n_ctx=st.integers(2, 12),
       gain=st.floats(0.25, 60), data=st.data())
def test_a_positional_qk_preferring_offset_minus_one_gives_a_previous_token_pattern_on_random_tokens(build, d_vocab, n_ctx, gain, data):
    c = build(d_vocab, n_ctx, gain=gain)
    toks = data.draw(tokens(c.arch, min_pos=2, max_batch=3))
    trace = run(c.arch, c.weights, toks)
    pq = positional_qk(c.arch, c.weights, n_pos=toks.shape[1])
    assert int(pq.preferred_offset()[0, 0]) == -1
    predicted = pq.pattern()[0, 0]  # [P, P]
    assert _rel(trace.pattern[0, :, 0], predicted.expand_as(trace.pattern[0, :, 0])) <= 1e-12  # the QK reads positions only
    P = toks.shape[1]
    assert trace.pattern[0, :, 0, 1:].argmax(-1).tolist() == [list(range(P - 1))] * toks.shape[0]  # i attends most to i - 1
    measured = pattern_score("previous_token", trace.pattern, toks)[0, 0]
    assert float(pq.previous_token()[0, 0]) == pytest.approx(float(measured), rel=1e-12)


@given(arch=archs(max_layers=2, max_heads=3, max_d_model=12, norm="none", qk_norm="none", q_bias=False, k_bias=False,
                  positional=st.sampled_from(["learned", "rotary"])), data=st.data())
def test_without_token_content_the_forward_pass_scores_are_the_positional_scores(arch, data):
    """Learned: W_E = 0, so x_0[p] = m W_pos[p]; rotary: every row of W_E the same vector, the mean token. Layer 0."""
    w = data.draw(weights(arch))
    if arch.positional == "learned":
        W_E = torch.zeros_like(w.W_E)
    else:
        W_E = w.W_E[:1].expand_as(w.W_E).clone()
    w = w.replace(W_E=W_E) if not arch.tied else Weights(arch, {**dict(w), "W_E": W_E})
    toks = data.draw(tokens(arch, min_pos=2))
    trace = run(arch, w, toks)
    S = softcap(positional_qk(arch, w, n_pos=toks.shape[1]).scores[0], arch.attn_softcap)  # [H, P, P]
    assert _rel(trace.scores[0], S.expand_as(trace.scores[0])) <= RTOL_OV


# ------------------------------------------------------------------ disagreements are listed, never averaged
def test_a_head_whose_token_content_outweighs_its_positional_qk_is_reported():
    """A previous-token QK plus a stronger same-token term: positions say i - 1, the forward pass attends to itself."""
    c = circuits.previous_token(8, 16)
    W_Q, W_K = c.weights.W_Q.clone(), c.weights.W_K.clone()
    tok = c.layout.tok
    W_Q[0, 0, tok, :8] += 2 * circuits.GAIN * torch.eye(8, dtype=torch.float64)  # q gains 2c e_{t_i}
    W_K[0, 0, tok, :8] += torch.eye(8, dtype=torch.float64)  # k gains e_{t_j}: S_ij += 2c [t_i = t_j]
    w = c.weights.replace(W_Q=W_Q, W_K=W_K)
    found = disagreements(c.arch, w)
    assert [(d.signature, d.layer, d.head) for d in found] == [("positional_previous", 0, 0)]
    assert found[0].predicted > 0.99 and found[0].measured < 0.5 and "token content" in found[0].why
    assert not disagreements(c.arch, c.weights)  # the circuit as built agrees


def test_only_the_head_whose_weights_differ_from_those_that_ran_is_reported():
    arch = Arch(n_layers=2, n_heads=3, d_model=12, d_head=4, d_vocab=10, n_ctx=8, norm="layernorm")
    w = Weights.random(arch, 3)
    W_O = w.W_O.clone()
    W_O[0, 1] *= 2
    trace = run(arch, w.replace(W_O=W_O), torch.randint(0, 10, (2, 8), generator=torch.Generator().manual_seed(0)))
    found = [d for d in disagreements(arch, w, trace=trace) if d.signature == "ov_prediction"]
    assert [(d.layer, d.head) for d in found] == [(0, 1)]
    assert found[0].error > 0.1 and str(found[0]).startswith("ov_prediction L0H1")


@given(arch=archs(max_layers=2, max_heads=3, max_d_model=12, positional="learned", n_ctx=st.sampled_from([8, 12, 16]),
                  d_vocab=st.integers(8, 16)).filter(lambda a: "positional_previous" in checked(a)), data=st.data(),
       threshold=st.sampled_from([0.5, 0.2]))
def test_every_head_on_the_other_side_of_the_threshold_is_listed_and_no_other(arch, data, threshold):
    w = data.draw(weights(arch))
    table = head_table(arch, w, half=4, batch=2)
    listed = {(d.layer, d.head) for d in disagreements(arch, w, table.tokens, threshold=threshold) if d.signature == "positional_previous"}
    p, m = table.scores["positional_previous"], table.scores["previous_token"]
    heads = [(l, h) for l in range(arch.n_layers) for h in range(arch.n_heads)]
    expected = {(l, h) for l, h in heads if bool(p[l, h] >= threshold) != bool(m[l, h] >= threshold)}
    note(f"positional {p.tolist()}, measured {m.tolist()}")
    assert listed == expected


def test_disagreements_skip_the_positional_check_on_a_one_position_trace():
    """Found by the thorough profile: one position has no previous token, so the positional prediction is not checked
    (it raised ValueError for n_pos=1); the OV prediction still is."""
    arch = Arch(d_model=2, d_head=1, d_mlp=1, d_vocab=2, n_ctx=2, norm="none", act="relu", mlp_bias=False)
    w = Weights.random(arch, 0)
    assert disagreements(arch, w, torch.tensor([[0]])) == []
