"""The hand-built circuits compute what their docstrings say, exactly (attention weights round to 1 in float64).

The induction circuit is checked on repeated random sequences (distinct tokens, then the
same again): at every position i of the repeated half the induction head attends to the
k with t_(k-1) = t_i, with weight 1, and the model predicts t_k (= t_(i+1)): 100%.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from circuitproof.numeric import run
from circuitproof.numeric.circuits import (
    attended,
    copy_head,
    duplicate_token,
    eraser_head,
    induction_circuit,
    predicted,
    previous_token,
    repeated_sequence,
)


@given(d_vocab=st.integers(2, 12), n_ctx=st.integers(4, 24), seed=st.integers(0, 2**16), data=st.data())
def test_the_induction_head_attends_after_the_earlier_occurrence_and_predicts_what_followed(d_vocab, n_ctx, seed, data):
    half = data.draw(st.integers(2, min(d_vocab, n_ctx // 2)), label="half")
    circuit = induction_circuit(d_vocab, n_ctx)
    toks = repeated_sequence(d_vocab, half, seed=seed, batch=3)
    trace = run(circuit.arch, circuit.weights, toks)
    pos, weight = attended(trace, layer=1)
    pred = predicted(trace)
    for b in range(toks.shape[0]):
        for i in range(half, 2 * half):
            k = int(pos[b, i])
            assert toks[b, k - 1] == toks[b, i], (b, i, k)  # the token before k is the current token
            assert float(weight[b, i]) == 1.0  # exact in float64: the other keys get e^-50
            assert pred[b, i] == toks[b, k]  # it copies t_k ...
            if i + 1 < 2 * half:
                assert pred[b, i] == toks[b, i + 1]  # ... which is the next token of the repeat


def test_the_induction_circuit_is_k_composed():
    """Layer 1's keys read the prev subspace that layer 0's output writes; without layer 0 the induction head sees nothing."""
    c = induction_circuit(8, 16)
    W_O0, W_K1 = c.weights.W_O[0, 0], c.weights.W_K[1, 0]
    prev = c.layout.prev_
    assert W_O0[:, prev].abs().sum() > 0 and W_O0[:, c.layout.tok].abs().sum() == 0
    assert W_K1[prev].abs().sum() > 0 and W_K1[c.layout.tok].abs().sum() == 0
    toks = repeated_sequence(8, 6, seed=0, batch=50)
    W_O = c.weights.W_O.clone()
    W_O[0] = 0
    ablated = run(c.arch, c.weights.replace(W_O=W_O), toks)
    assert (predicted(ablated)[:, 6:-1] == toks[:, 7:]).double().mean() < 0.5


def test_the_previous_token_head_attends_to_the_previous_position_and_writes_its_token():
    c = previous_token(6, 10)
    toks = torch.tensor([[3, 1, 4, 0, 5, 2, 3]])
    trace = run(c.arch, c.weights, toks)
    pos, weight = attended(trace, layer=0)
    assert pos[0].tolist() == [0, 0, 1, 2, 3, 4, 5] and bool((weight == 1.0).all())
    wrote = trace.head_out[0, 0, :, 0]
    expected = torch.zeros_like(wrote)
    for i, t in enumerate([3, 3, 1, 4, 0, 5, 2]):  # position 0 sees only itself
        expected[i, c.layout.prev_.start + t] = 1.0
    assert (wrote - expected).abs().max() < 1e-20


@given(d_vocab=st.integers(2, 10), half=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_the_duplicate_token_head_attends_to_the_earlier_occurrence_of_its_token(d_vocab, half, seed):
    half = min(half, d_vocab)
    c = duplicate_token(d_vocab, 2 * half)
    toks = repeated_sequence(d_vocab, half, seed=seed, batch=2)
    pos, weight = attended(run(c.arch, c.weights, toks), layer=0)
    assert pos[:, half:].tolist() == [list(range(half))] * 2  # i attends to i - half, the earlier occurrence of t_i
    assert bool((weight[:, half:] == 1.0).all())  # exact in float64: every other key scores c lower


@pytest.mark.parametrize("lam", [1.0, 2.0, -0.5])
def test_a_copy_head_is_lambda_times_the_identity_on_the_token_subspace(lam):
    c = copy_head(5, 8, lam=lam)
    w = c.weights
    W_OV = w.W_V[0, 0] @ w.W_O[0, 0]
    tok, pos = c.layout.tok, c.layout.pos
    assert torch.equal(W_OV[tok, tok], lam * torch.eye(5, dtype=torch.float64))
    assert W_OV[pos].abs().sum() == 0 and W_OV[:, pos].abs().sum() == 0
    assert torch.equal(w.W_E @ W_OV @ w.W_U, lam * torch.eye(5, dtype=torch.float64))  # the copying matrix
    trace = run(c.arch, w, torch.tensor([[4, 0, 3, 1]]))
    logits = trace.head_out[0, 0, :, 0] @ w.W_U
    assert torch.allclose(logits[1:], lam * torch.nn.functional.one_hot(torch.tensor([4, 0, 3]), 5).double(), atol=1e-20)


def test_the_eraser_head_zeroes_a_position_that_attends_to_itself():
    c = eraser_head(3, 2)
    trace = run(c.arch, c.weights, torch.tensor([[1, 0]]))
    assert trace.resid_post[0, 0, 0].abs().max() == 0  # position 0: x - x
    assert trace.resid_pre[0, 0, 0].abs().max() > 0


@pytest.mark.parametrize("call, error", [
    (lambda: induction_circuit(1, 8), "d_vocab=1"),
    (lambda: induction_circuit(8, 8, lam=1.0), "lam=1.0"),
    (lambda: copy_head(4, 1), "n_ctx=1"),
    (lambda: duplicate_token(4, 8, gain=0.0), "gain=0.0"),
    (lambda: eraser_head(2, 3), "d_vocab=3"),
    (lambda: repeated_sequence(4, 5), "half=5"),
], ids=["vocab", "lambda", "ctx", "duplicate-gain", "eraser-vocab", "half"])
def test_invalid_builders_name_the_argument(call, error):
    with pytest.raises(ValueError, match=error):
        call()
