"""Weights: shapes table, checks on construction, random draws, safetensors round trip."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from circuitproof import Arch, ShapeError, WeightsError
from circuitproof.numeric import Weights, run, weight_shapes
from circuitproof.properties.strategies import archs, tokens


def test_shapes_follow_the_row_convention():
    a = Arch(n_layers=2, n_heads=4, n_kv_heads=2, d_model=8, d_head=3, d_mlp=5, d_vocab=7, n_ctx=6, q_bias=True, k_bias=True)
    s = weight_shapes(a)
    assert s["W_E"] == (7, 8) and s["W_pos"] == (6, 8) and s["W_U"] == (8, 7)
    assert s["W_Q"] == (2, 4, 8, 3) and s["W_K"] == (2, 2, 8, 3) and s["W_V"] == (2, 2, 8, 3)
    assert s["W_O"] == (2, 4, 3, 8)
    assert s["b_Q"] == (2, 4, 3) and s["b_K"] == (2, 2, 3) and "b_V" not in s and "b_O" not in s
    assert s["W_in"] == (2, 8, 5) and s["W_out"] == (2, 5, 8) and s["b_in"] == (2, 5)
    assert s["ln_attn_in_w"] == (2, 8) and s["ln_final_b"] == (8,)


def test_absent_features_have_no_tensors():
    s = weight_shapes(Arch(attn_only=True, norm="none", positional="rotary", tied=True))
    assert set(s) == {"W_E", "W_Q", "W_K", "W_V", "W_O"}
    s = weight_shapes(Arch(norm="rmsnorm", qk_norm="all_heads", n_heads=2, d_head=4, gated=True, mlp_bias=False))
    assert "ln_attn_in_b" not in s and s["ln_q_w"] == (1, 8) and s["W_gate"] == (1, 8, 16) and "b_in" not in s


def test_tied_unembedding_reads_the_embedding():
    w = Weights.random(Arch(tied=True))
    assert torch.equal(w.W_U, w.W_E.T)
    assert "W_U" not in list(w)


def test_wrong_shape_names_tensor_and_shapes():
    a = Arch()
    good = dict(Weights.random(a))
    bad = {**good, "W_Q": torch.zeros(1, 1, 8, 5, dtype=torch.float64)}
    with pytest.raises(ShapeError, match=r"W_Q has shape \[1, 1, 8, 5\], expected \[1, 1, 8, 4\]"):
        Weights(a, bad)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.pop("W_out"), r"missing \['W_out'\]"),
        (lambda t: t.update(b_Q=torch.zeros(1, 1, 4, dtype=torch.float64)), r"unexpected \['b_Q'\]"),
        (lambda t: t.update(W_E=t["W_E"].float()), "mixed dtypes"),
    ],
    ids=["missing", "extra", "mixed-dtype"],
)
def test_incomplete_weights_raise(edit, match):
    tensors = dict(Weights.random(Arch()))
    edit(tensors)
    with pytest.raises(WeightsError, match=match):
        Weights(Arch(), tensors)


def test_weights_are_read_only():
    w = Weights.random(Arch())
    with pytest.raises(AttributeError):
        w.W_Q = torch.zeros(1)
    with pytest.raises(AttributeError, match="no tensor 'b_Q'"):
        _ = w.b_Q


@given(archs(), st.integers(0, 2**20))
def test_random_is_deterministic_and_non_trivial(arch, seed):
    w1, w2 = Weights.random(arch, seed), Weights.random(arch, seed)
    assert w1.equal(w2)
    for name, t in w1.items():
        assert t.dtype == torch.float64 and torch.isfinite(t).all(), name
        if name.startswith("ln_") and name.endswith("_w"):
            gain = t + 1 if arch.norm_gain == "one_plus_w" else t
            assert (gain - 1).abs().min() >= 0.2, f"{name}: a gain of 1 would hide the norm"
        elif name.startswith("b_") or name.endswith("_b"):
            assert t.abs().min() >= 0.2, f"{name}: a bias near 0 would hide its term"


def test_random_depends_on_seed_and_dtype_on_request():
    a = Arch()
    assert not Weights.random(a, 0).equal(Weights.random(a, 1))
    assert Weights.random(a, 0, dtype=torch.float32).dtype == torch.float32


@given(archs(), st.data())
def test_save_load_gives_the_same_trace_bit_for_bit(tmp_path_factory, arch, data):
    w = data.draw(st.integers(0, 1000).map(lambda s: Weights.random(arch, s)))
    toks = data.draw(tokens(arch))
    path = tmp_path_factory.mktemp("w") / "weights.safetensors"
    w.save(path)
    loaded = Weights.load(path)
    assert loaded.arch == arch and loaded.equal(w)
    t1, t2 = run(arch, w, toks), run(arch, loaded, toks)
    for name, tensor in t1.tensors().items():
        assert torch.equal(tensor, t2.tensors()[name]), name


def test_load_rejects_foreign_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"W_E": torch.zeros(2, 2)}, str(path))
    with pytest.raises(WeightsError, match="no 'circuitproof.arch' metadata"):
        Weights.load(path)
