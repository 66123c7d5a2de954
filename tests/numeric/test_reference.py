"""The reference transformer: a model computed by hand, properties over drawn models, every feature honoured."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, note
from hypothesis import strategies as st

from circuitproof import Arch, ShapeError, WeightsError
from circuitproof.numeric import TokenError, Weights, run
from circuitproof.numeric.reference import attention_mask, rotary
from circuitproof.properties.strategies import archs, tokens

# ----------------------------------------------------------------------------- by hand

HAND = Arch(d_model=2, d_head=2, d_mlp=2, d_vocab=3, n_ctx=2, act="relu", o_bias=True, unembed_bias=True)


def _hand_weights() -> Weights:
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return Weights(
        HAND,
        {
            "W_E": t([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]]),
            "W_pos": t([[0.5, 0.0], [0.0, -0.5]]),
            "ln_attn_in_w": t([[1.5, 0.5]]),
            "ln_attn_in_b": t([[0.1, -0.2]]),
            "ln_mlp_in_w": t([[0.7, 1.3]]),
            "ln_mlp_in_b": t([[-0.3, 0.4]]),
            "W_Q": t([[[[1.0, 0.5], [0.0, 1.0]]]]),
            "W_K": t([[[[0.5, 0.0], [1.0, -1.0]]]]),
            "W_V": t([[[[1.0, 1.0], [-1.0, 0.5]]]]),
            "W_O": t([[[[0.5, -1.0], [1.0, 0.25]]]]),
            "b_O": t([[0.3, -0.3]]),
            "W_in": t([[[1.0, -1.0], [0.5, 2.0]]]),
            "b_in": t([[0.2, -0.1]]),
            "W_out": t([[[1.0, 0.0], [-0.5, 1.5]]]),
            "b_out": t([[-0.2, 0.6]]),
            "ln_final_w": t([0.9, 1.1]),
            "ln_final_b": t([0.05, -0.05]),
            "W_U": t([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]]),
            "b_U": t([0.1, 0.2, 0.3]),
        },
    )


def _hand_logits(w: Weights, toks: list[int]) -> list[list[float]]:
    """The model computed with Python floats, one equation at a time, no torch ops."""
    f = lambda x: x.tolist()  # noqa: E731
    W_E, W_pos, W_U, b_U = f(w.W_E), f(w.W_pos), f(w.W_U), f(w.b_U)

    def vm(v, M):  # row vector times matrix
        return [sum(v[i] * M[i][j] for i in range(len(v))) for j in range(len(M[0]))]

    def add(*vs):
        return [sum(c) for c in zip(*vs)]

    def ln(v, g, b, eps=1e-5):
        mu = sum(v) / len(v)
        var = sum((x - mu) ** 2 for x in v) / len(v)
        return [(x - mu) / math.sqrt(var + eps) * gi + bi for x, gi, bi in zip(v, g, b)]

    xs = [add(W_E[t], W_pos[p]) for p, t in enumerate(toks)]
    h = [ln(x, f(w.ln_attn_in_w)[0], f(w.ln_attn_in_b)[0]) for x in xs]
    Wq, Wk, Wv, Wo = f(w.W_Q)[0][0], f(w.W_K)[0][0], f(w.W_V)[0][0], f(w.W_O)[0][0]
    q, k, v = [vm(x, Wq) for x in h], [vm(x, Wk) for x in h], [vm(x, Wv) for x in h]
    attn = []
    for i in range(len(xs)):
        scores = [sum(a * b for a, b in zip(q[i], k[j])) / math.sqrt(2) for j in range(i + 1)]  # causal
        e = [math.exp(s - max(scores)) for s in scores]
        A = [x / sum(e) for x in e]
        z = [sum(A[j] * v[j][c] for j in range(i + 1)) for c in range(2)]
        attn.append(add(vm(z, Wo), f(w.b_O)[0]))
    mid = [add(x, a) for x, a in zip(xs, attn)]
    out = []
    for x in mid:
        hm = ln(x, f(w.ln_mlp_in_w)[0], f(w.ln_mlp_in_b)[0])
        hidden = [max(0.0, y) for y in add(vm(hm, f(w.W_in)[0]), f(w.b_in)[0])]
        mlp = add(vm(hidden, f(w.W_out)[0]), f(w.b_out)[0])
        out.append(add(x, mlp))
    return [add(vm(ln(x, f(w.ln_final_w), f(w.ln_final_b)), W_U), b_U) for x in out]


def test_one_layer_one_head_d_model_2_matches_a_hand_computation():
    w = _hand_weights()
    trace = run(HAND, w, torch.tensor([[2, 1]]))
    expected = torch.tensor([_hand_logits(w, [2, 1])], dtype=torch.float64)
    torch.testing.assert_close(trace.logits, expected, rtol=1e-13, atol=1e-13)
    # the trace's parts are the hand computation's parts
    assert torch.allclose(trace.resid_post[0], trace.resid_mid[0] + trace.mlp_out[0], rtol=0, atol=1e-15)
    assert torch.allclose(trace.resid_mid[0], trace.resid_pre[0] + trace.attn_out[0], rtol=0, atol=1e-15)


# ------------------------------------------------------------------------- properties


@given(archs(), st.integers(0, 2**16), st.data())
def test_run_is_deterministic(arch, seed, data):
    w, toks = Weights.random(arch, seed), data.draw(tokens(arch))
    t1, t2 = run(arch, w, toks), run(arch, w, toks)
    for name, tensor in t1.tensors().items():
        assert torch.equal(tensor, t2.tensors()[name]), name


def _changed_at(arch: Arch, toks: torch.Tensor, pos: int) -> torch.Tensor:
    changed = toks.clone()
    changed[:, pos] = (changed[:, pos] + 1) % arch.d_vocab
    return changed


@given(archs(causal=True), st.integers(0, 2**16), st.data())
def test_causal_models_do_not_let_a_later_token_change_an_earlier_logit(arch, seed, data):
    w = Weights.random(arch, seed)
    toks = data.draw(tokens(arch, min_pos=2))
    pos = data.draw(st.integers(1, toks.shape[1] - 1))
    before, after = run(arch, w, toks).logits, run(arch, w, _changed_at(arch, toks, pos)).logits
    assert torch.equal(before[:, :pos], after[:, :pos])


@given(archs(causal=False), st.integers(0, 2**16), st.data())
def test_bidirectional_models_let_a_later_token_change_an_earlier_logit(arch, seed, data):
    w = Weights.random(arch, seed)
    toks = data.draw(tokens(arch, min_pos=2))
    pos = toks.shape[1] - 1
    trace = run(arch, w, toks)
    before, after = trace.logits, run(arch, w, _changed_at(arch, toks, pos)).logits
    # LayerNorm on 2 coordinates keeps only the sign of x1 - x2, so a changed token can vanish entirely
    assume(arch.d_model > 2 or arch.norm != "layernorm")
    window_blocks_all = arch.sliding_window == 1 and len(arch.sliding_layers) == arch.n_layers
    # a saturated softmax (a weight below float64's resolution on the changed key in every layer that lets it through,
    # e.g. 9e-20 with d_model 28) carries the change in exact arithmetic only
    assume(window_blocks_all or float(trace.pattern[..., pos - 1, pos].max()) > 1e-12)
    note(f"max change at pos {pos - 1}: {(before[:, pos - 1] - after[:, pos - 1]).abs().max():.3e}")
    if window_blocks_all:  # every layer sees only itself: no cross-position flow at all
        assert torch.equal(before[:, : pos], after[:, : pos])
    else:
        assert (before[:, pos - 1] - after[:, pos - 1]).abs().max() > 1e-12


# float32 has a unit roundoff of 6e-8; through at most 3 layers of d_model <= 32 dot
# products, norms with eps >= 1e-6 and softmax, the accumulated relative error stays
# far below 1e-4 of the logits' scale, while a real float32 bug (an unscaled cast,
# a wrong branch) moves logits by O(1).
F32_RTOL = 1e-4


@given(archs(), st.integers(0, 2**16), st.data())
def test_float32_agrees_with_float64(arch, seed, data):
    w, toks = Weights.random(arch, seed), data.draw(tokens(arch))
    l64 = run(arch, w, toks).logits
    l32 = run(arch, w, toks, dtype=torch.float32).logits
    assert l32.dtype == torch.float32
    err = (l32.double() - l64).abs().max().item() / l64.abs().max().item()
    note(f"relative error {err:.3e} (tolerance {F32_RTOL})")
    assert err <= F32_RTOL


@given(archs(), st.integers(0, 2**16), st.data())
def test_trace_shapes_match_the_documented_table(arch, seed, data):
    toks = data.draw(tokens(arch))
    t = run(arch, Weights.random(arch, seed), toks)
    L, (B, P), H, K = arch.n_layers, toks.shape, arch.n_heads, arch.n_kv_heads
    D, Dh, M, V = arch.d_model, arch.d_head, arch.d_mlp, arch.d_vocab
    assert t.resid_pre.shape == t.resid_post.shape == t.attn_out.shape == (L, B, P, D)
    assert t.pattern.shape == t.scores.shape == (L, B, H, P, P)
    assert t.q.shape == t.z.shape == (L, B, P, H, Dh) and t.k.shape == t.v.shape == (L, B, P, K, Dh)
    assert t.head_out.shape == (L, B, P, H, D)
    assert t.logits.shape == t.logits_raw.shape == (B, P, V)
    if arch.has_mlp:
        assert t.mlp_pre.shape == t.mlp_post.shape == (L, B, P, M) and t.mlp_out.shape == (L, B, P, D)
    assert (t.resid_mid is not None) == (arch.has_mlp and not arch.parallel)
    torch.testing.assert_close(t.pattern.sum(-1), torch.ones(L, B, H, P, dtype=torch.float64))
    assert set(t.norms) == set(arch.norm_slots()) | {
        n for n, on in (("final", arch.final_norm), ("embed", arch.embed_norm), ("transform", arch.unembed_transform),
                        ("q", arch.qk_norm != "none"), ("k", arch.qk_norm != "none")) if on
    }
    torch.testing.assert_close(t.resid_post[:-1], t.resid_pre[1:], rtol=0, atol=0)


# ---------------------------------------------------------------- every feature honoured

BASE = Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, d_mlp=8, d_vocab=11, n_ctx=8, positional="none", norm="rmsnorm")
# Each switch, applied to BASE (or to the arch it names), must change the logits on the same weights' shared tensors.
FEATURES = {
    "n_kv_heads": dict(n_heads=2, n_kv_heads=1),
    "causal": dict(causal=False),
    "q_bias": dict(q_bias=True),
    "k_bias": dict(k_bias=True, positional="rotary"),  # rotated per position, b_K no longer cancels
    "v_bias": dict(v_bias=True),
    "o_bias": dict(o_bias=True),
    "attn_scale": dict(attn_scale=1.0),
    "attn_softcap": dict(attn_softcap=0.5),
    "sliding_window": dict(sliding_window=1, sliding_layers=(1,)),
    "qk_norm all_heads": dict(qk_norm="all_heads"),
    "qk_norm per_head": dict(qk_norm="per_head"),
    "positional learned": dict(positional="learned"),
    "positional rotary": dict(positional="rotary"),
    "rotary_dim": dict(positional="rotary", rotary_dim=2),
    "rotary_base": dict(positional="rotary", rotary_base=100.0),
    "rotary_style": dict(positional="rotary", rotary_style="interleaved"),
    "norm layernorm": dict(norm="layernorm"),
    "norm none": dict(norm="none"),
    "norm_eps": dict(norm_eps=1.0),
    "norm_gain": dict(norm_gain="one_plus_w"),
    "placement post": dict(norm_placement="post"),
    "placement output": dict(norm_placement="output"),
    "placement sandwich": dict(norm_placement="sandwich"),
    "final_norm": dict(final_norm=False),
    "embed_norm": dict(embed_norm=True),
    "parallel": dict(parallel=True),
    "parallel_shared_norm": dict(parallel=True, parallel_shared_norm=True),
    "attn_only": dict(attn_only=True, d_mlp=16),
    "gated": dict(gated=True),
    "act gelu_tanh": dict(act="gelu_tanh"),
    "act relu": dict(act="relu"),
    "act silu": dict(act="silu"),
    "mlp_bias": dict(mlp_bias=False),
    "tied": dict(tied=True),
    "unembed_bias": dict(unembed_bias=True),
    "logit_softcap": dict(logit_softcap=1.0),
    "embed_scale": dict(embed_scale=3.0),
    "unembed_transform": dict(unembed_transform=True),
}
# a switch is compared against the arch without it, so the two share every other tensor
_BEFORE = {
    "k_bias": dict(positional="rotary"),
    "rotary_dim": dict(positional="rotary"),
    "rotary_base": dict(positional="rotary"),
    "rotary_style": dict(positional="rotary"),
    "parallel_shared_norm": dict(parallel=True),
    "attn_only": dict(attn_only=False),
}


@pytest.mark.parametrize("feature", list(FEATURES))
def test_every_feature_changes_the_forward_pass(feature):
    before = BASE.replace(**_BEFORE.get(feature, {}))
    after = BASE.replace(**FEATURES[feature])
    if feature == "attn_only":
        before = BASE.replace(d_mlp=16)
    if feature == "norm_gain":  # same effective gains: 1 + w with w = gain - 1 must equal gain w
        wb = Weights.random(before, 3)
        wa = Weights(after, {n: (t - 1 if n.startswith("ln_") else t) for n, t in wb.items()})
        toks = torch.arange(8)[None] % 11
        torch.testing.assert_close(run(after, wa, toks).logits, run(before, wb, toks).logits, rtol=1e-13, atol=1e-13)
        assert not torch.allclose(run(after, Weights(after, dict(wb)), toks).logits, run(before, wb, toks).logits)
        return
    wb, wa = Weights.random(before, 3), Weights.random(after, 3)
    toks = torch.tensor([[1, 5, 2, 9, 9, 0, 3, 7]])
    lb, la = run(before, wb, toks).logits, run(after, wa, toks).logits
    assert not torch.allclose(lb, la, rtol=1e-6, atol=1e-9), f"{feature} did not change the logits"


def test_key_bias_without_rotary_moves_keys_but_not_the_pattern():
    """q . (k + b_K) = q . k + q . b_K: the second term is constant along the key axis and cancels in softmax."""
    a = BASE.replace(k_bias=True)
    w = Weights.random(a, 3)
    w0 = w.replace(b_K=torch.zeros_like(w.b_K))
    toks = torch.tensor([[1, 5, 2, 9, 9, 0, 3, 7]])
    t, t0 = run(a, w, toks), run(a, w0, toks)
    assert (t.k - t0.k).abs().min() > 0.1
    torch.testing.assert_close(t.pattern, t0.pattern, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(t.logits, t0.logits, rtol=1e-12, atol=1e-12)


def test_rotary_scores_depend_only_on_the_offset():
    """q_i . k_j after rotary is a function of j - i (for the rotated part), both pairings."""
    gen = torch.Generator().manual_seed(0)
    for style in ("half", "interleaved"):
        a = Arch(positional="rotary", d_head=6, rotary_dim=4, rotary_style=style)
        q, k = torch.randn(1, 1, 1, 6, generator=gen, dtype=torch.float64), torch.randn(1, 1, 1, 6, generator=gen, dtype=torch.float64)
        pos = torch.arange(8)
        rq, rk = rotary(a, q.expand(1, 8, 1, 6), pos), rotary(a, k.expand(1, 8, 1, 6), pos)
        s = torch.einsum("bihe,bjhe->ij", rq, rk)
        for off in range(-3, 4):
            diag = torch.diagonal(s, offset=off)
            torch.testing.assert_close(diag, diag[0].expand_as(diag), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1).expand(1, 8, 1), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(rq[..., 4:], q[..., 4:].expand(1, 8, 1, 2))  # unrotated tail


def test_rotary_pairings_differ_exactly_by_a_permutation():
    """interleaved(x) = perm(half(perm^-1 x)), perm sending half-split order to interleaved order."""
    a_half, a_int = Arch(positional="rotary", d_head=4), Arch(positional="rotary", d_head=4, rotary_style="interleaved")
    x = torch.randn(1, 5, 1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([0, 2, 1, 3])  # half order (a0, a1, b0, b1) -> interleaved (a0, b0, a1, b1)
    torch.testing.assert_close(rotary(a_int, x[..., perm], torch.arange(5)), rotary(a_half, x, torch.arange(5))[..., perm])


def test_rotary_is_the_rotation_by_position_written_out():
    """Pair k of position p is rotated by p * base^(-2k/r) (the kept cos/sin tables are this formula), whatever positions."""
    a = Arch(positional="rotary", d_head=6, rotary_dim=4, rotary_base=100.0)
    x = torch.randn(2, 3, 1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for positions in (torch.arange(3), torch.tensor([4, 0, 7])):
        out = rotary(a, x, positions)
        for p in range(3):
            for k in range(2):
                theta = float(positions[p]) * 100.0 ** (-2 * k / 4)
                u, v = x[:, p, 0, k], x[:, p, 0, k + 2]
                torch.testing.assert_close(out[:, p, 0, k], u * math.cos(theta) - v * math.sin(theta), rtol=1e-14, atol=1e-14)
                torch.testing.assert_close(out[:, p, 0, k + 2], u * math.sin(theta) + v * math.cos(theta), rtol=1e-14, atol=1e-14)
        assert torch.equal(out[..., 4:], x[..., 4:])
    assert rotary(a, x.float(), torch.arange(3)).dtype == torch.float32


def test_a_returned_mask_is_the_callers_own():
    """The masks are kept between runs: changing a returned one changes neither the next one nor a run."""
    a = Arch(n_heads=1, d_model=4, d_head=2)
    w = Weights.random(a, 0)
    before = run(a, w, torch.tensor([[1, 2, 3]])).logits
    attention_mask(a, 0, 3)[:] = False
    assert attention_mask(a, 0, 3).tolist() == torch.tril(torch.ones(3, 3, dtype=torch.bool)).tolist()
    assert torch.equal(run(a, w, torch.tensor([[1, 2, 3]])).logits, before)


def test_sliding_window_mask():
    a = Arch(n_layers=2, sliding_window=2, sliding_layers=(1,))
    assert attention_mask(a, 0, 4).tolist() == torch.tril(torch.ones(4, 4, dtype=torch.bool)).tolist()
    assert attention_mask(a, 1, 4).int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    b = Arch(n_layers=1, causal=False, sliding_window=2, sliding_layers=(0,))
    assert attention_mask(b, 0, 3).int().tolist() == [[1, 1, 0], [1, 1, 1], [0, 1, 1]]


@given(archs(logit_softcap=2.0), st.integers(0, 100))
def test_logit_softcap_bounds_the_logits(arch, seed):
    t = run(arch, Weights.random(arch, seed), torch.arange(min(arch.n_ctx, 4))[None] % arch.d_vocab)
    assert t.logits.abs().max() <= 2.0  # tanh saturates to exactly 1 in floating point
    torch.testing.assert_close(t.logits, 2.0 * torch.tanh(t.logits_raw / 2.0), rtol=0, atol=0)


def test_gqa_heads_of_one_group_read_the_same_values():
    a = Arch(n_heads=4, n_kv_heads=2, positional="none")
    t = run(a, Weights.random(a, 0), torch.tensor([[1, 2, 3]]))
    assert t.v.shape[-2] == 2 and t.z.shape[-2] == 4


def test_embedding_multiplier_and_positions():
    a = Arch(embed_scale=2.5)
    w = Weights.random(a, 0)
    t = run(a, w, torch.tensor([[3, 1]]))
    torch.testing.assert_close(t.embed[0], 2.5 * (w.W_E[[3, 1]] + w.W_pos[:2]), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("toks", "error", "match"),
    [
        (torch.tensor([[0, 16]]), TokenError, r"\[0, d_vocab=16\)"),
        (torch.tensor([[-1]]), TokenError, "d_vocab"),
        (torch.zeros(1, 17, dtype=torch.long), TokenError, "n_ctx=16"),
        (torch.zeros(1, 1), TokenError, "integer ids"),
        (torch.zeros(1, 2, 3, dtype=torch.long), ShapeError, r"\[batch, pos\]"),
    ],
    ids=["vocab-high", "negative", "too-long", "float", "3-d"],
)
def test_bad_tokens_raise(toks, error, match):
    with pytest.raises(error, match=match):
        run(Arch(), Weights.random(Arch()), toks)


def test_weights_for_another_arch_raise():
    with pytest.raises(WeightsError, match="weights are for"):
        run(Arch(n_layers=2), Weights.random(Arch()), torch.tensor([[0]]))


def test_feature_table_covers_every_arch_switch():
    sizes = {"n_layers", "n_heads", "d_model", "d_head", "d_mlp", "d_vocab", "n_ctx", "sliding_layers"}
    switched = {key.split()[0] for key in FEATURES} | {k for change in FEATURES.values() for k in change}
    missing = set(Arch.__dataclass_fields__) - sizes - switched
    assert not missing, f"Arch fields with no feature test: {sorted(missing)}"


def test_block_is_the_layer_run_computes():
    """``block(arch, w, l, x_l)`` equals the trace's x_{l+1}, for every layer of a model with every sublayer."""
    from circuitproof.numeric.reference import block

    arch = Arch(n_layers=3, n_heads=2, d_model=8, d_head=4, norm="rmsnorm", gated=True, act="silu", positional="rotary")
    w = Weights.random(arch, 3)
    trace = run(arch, w, torch.tensor([[1, 2, 3, 4]]))
    for l in range(arch.n_layers):
        assert torch.equal(block(arch, w, l, trace.resid_pre[l]), trace.resid_post[l])
    with pytest.raises(ValueError, match="layer=3"):
        block(arch, w, 3, trace.resid_pre[0])

