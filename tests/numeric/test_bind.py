"""Binding atoms: a group's atoms bound in one indexing operation equal the atoms bound one by one, stacked."""

from __future__ import annotations

import pytest
import torch

from circuitproof import Arch
from circuitproof.numeric import Weights, run
from circuitproof.numeric.bind import bind, bind_stacked

ARCHS = {
    "gqa_biases": Arch(n_layers=2, n_heads=4, n_kv_heads=2, d_model=8, d_head=3, q_bias=True, k_bias=True, v_bias=True, o_bias=True,
                       mlp_bias=True, norm="layernorm"),
    "no_biases": Arch(n_layers=2, n_heads=3, d_model=6, d_head=2, positional="rotary", norm="rmsnorm", mlp_bias=False),
    "output_norms": Arch(n_layers=2, n_heads=3, d_model=6, d_head=3, norm="rmsnorm", norm_placement="sandwich"),
}
HEADS = [(0, 0), (0, 2), (1, 1), (1, 2)]
BY_HEAD = ["head", "z", "pattern", "scores", "W_Q", "W_O", "W_K", "W_V", "W_QK", "W_OV", "b_Q", "b_K", "b_V"]
BY_LAYER = ["attn_input", "attn_raw", "W_in", "W_out", "b_in", "b_out", "b_O", "stream", "mid", "attn", "mlp"]


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("kind", BY_HEAD + BY_LAYER)
def test_a_stacked_binding_is_the_stack_of_single_bindings(name, kind):
    arch = ARCHS[name]
    weights = Weights.random(arch, 1)
    trace = run(arch, weights, torch.tensor([[1, 2, 3], [0, 4, 2]]))
    indices = HEADS if kind in BY_HEAD else [(1,), (0,), (1,)]
    singles = [bind({"a": (kind, idx)}, arch, weights, trace)["a"] for idx in indices]
    together = bind_stacked(kind, indices, arch, weights, trace)
    assert together is not None and together.shape == (len(indices), *singles[0].shape)
    assert torch.allclose(together, torch.stack(singles), rtol=1e-14, atol=0), kind


@pytest.mark.parametrize("kind", ["ones", "W_U", "b_U", "logits", "final_scale_inv"])
def test_kinds_that_are_not_an_index_by_layer_and_head_are_left_to_single_bindings(kind):
    arch = ARCHS["gqa_biases"]
    weights = Weights.random(arch, 0)
    assert bind_stacked(kind, [(0,), (1,)], arch, weights, run(arch, weights, torch.tensor([[1, 2]]))) is None


def test_the_stream_after_the_last_layer_is_left_to_single_bindings():
    """``("stream", (L,))`` is x_L, the final stream, which no layer's resid_pre holds: bound one by one."""
    arch = ARCHS["gqa_biases"]
    weights = Weights.random(arch, 0)
    trace = run(arch, weights, torch.tensor([[1, 2]]))
    assert bind_stacked("stream", [(0,), (arch.n_layers,)], arch, weights, trace) is None
    assert bind_stacked("stream", [(1,), (0,)], arch, weights, trace) is not None
