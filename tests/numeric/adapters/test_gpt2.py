"""GPT-2: the real implementation computes what the reference computes, in float64 to 1e-9."""

from __future__ import annotations

import pytest
import torch

from circuitproof import Arch, UnsupportedError
from circuitproof.numeric import Weights, run
from circuitproof.numeric.adapters import adapt, build

transformers = pytest.importorskip("transformers", reason="install the hf extra: pip install -e '.[hf]'")

# GPT-2 computes in the model's dtype throughout: float64 rounding (1e-16) through
# at most 3 layers of small dot products stays many orders below 1e-9.
RTOL = 1e-9


def _small():
    arch = Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, q_bias=True, k_bias=True, v_bias=True, o_bias=True)
    return arch, Weights.random(arch, 1)


@pytest.mark.parametrize(
    ("config_change", "field"),
    [({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
     ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
     ({"activation_function": "tanh"}, "activation_function")],
    ids=["inverse-layer-scale", "upcast", "activation"],
)
def test_unsupported_config_is_named(config_change, field):
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10, n_positions=8, **config_change)
    with pytest.raises(UnsupportedError, match=field):
        adapt(transformers.GPT2LMHeadModel(config))


@pytest.mark.parametrize(
    ("arch", "feature"),
    [(Arch(norm="rmsnorm"), "norm="), (Arch(positional="rotary"), "positional="), (Arch(n_heads=2, n_kv_heads=1, d_model=8), "n_kv_heads="),
     (Arch(d_model=8, d_head=2), "d_head="), (Arch(gated=True), "gated=")],
    ids=repr,
)
def test_build_names_what_gpt2_cannot_express(arch, feature):
    with pytest.raises(UnsupportedError, match=feature):
        build(arch, Weights.random(arch), "gpt2")


def test_gpt2_model_without_head_has_no_logits():
    arch, w = _small()
    lm = build(arch, w, "gpt2")
    base = adapt(lm.transformer)
    trace = base.trace(torch.tensor([[1, 2, 3]]))
    assert trace.logits is None
    torch.testing.assert_close(trace.resid_post, run(base.arch, base.weights, torch.tensor([[1, 2, 3]])).resid_post, rtol=1e-12, atol=1e-12)


def test_unknown_model_class_lists_supported():
    with pytest.raises(UnsupportedError, match=r"no adapter for Linear; supported classes: GPT2LMHeadModel"):
        adapt(torch.nn.Linear(2, 2))
