"""The Qwen2 adapter: agreement (sliding window included), precision explained, exact round trips, state kept."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2 import modeling_qwen2

from circuitproof import Arch, UnsupportedError
from circuitproof.numeric import Weights, run
from circuitproof.numeric.adapters import adapt, build
from circuitproof.numeric.adapters._qwen2 import Qwen2Adapter
from circuitproof.properties.strategies import family_archs, tokens

from ._agreement import assert_traces_agree, trace_errors
from .test_llama import RTOL_FLOAT32_STEPS, RTOL_FLOAT64, agreement, float32_steps_in_float64

# Qwen2 runs the same three steps in float32 as Llama (Qwen2Adapter.below_dtype_steps),
# so the same budget holds: see RTOL_FLOAT32_STEPS in test_llama.py.
FLOAT64_STEPS = (modeling_qwen2.Qwen2RMSNorm, modeling_qwen2.Qwen2RotaryEmbedding)
FIXED = Qwen2Adapter.fixed


@given(data=st.data())
def test_agrees_in_float64_when_float32_steps_kept_in_float64(data: st.DataObject) -> None:
    arch = data.draw(family_archs("qwen2"), label="arch")
    w = Weights.random(arch, data.draw(st.integers(0, 2**32 - 1), label="seed"))
    toks = data.draw(tokens(arch), label="tokens")
    with float32_steps_in_float64(*FLOAT64_STEPS):
        errors = agreement("qwen2", arch, w, toks)
    note(f"errors {errors}")
    assert max(errors.values()) <= RTOL_FLOAT64, errors


# a window of 2 on layers 0 and 2, three query heads on one kv head, d_model not a multiple of the heads
SLIDING = Arch(
    n_layers=3, n_heads=3, n_kv_heads=1, d_model=10, d_head=4, d_mlp=12, n_ctx=8, sliding_window=2, sliding_layers=(0, 2), **FIXED
)


def test_sliding_window_is_applied() -> None:
    """The window changes the result (so agreeing is a test of it), and the model agrees with the windowed reference."""
    w, toks = Weights.random(SLIDING, 0), (torch.arange(16).view(2, 8) * 5) % SLIDING.d_vocab
    trace = adapt(build(SLIDING, w, "qwen2")).trace(toks)
    assert (trace.pattern[0].tril(-2) == 0).all() and (trace.pattern[1].tril(-2) != 0).any()
    assert_traces_agree(trace, run(SLIDING, w, toks), RTOL_FLOAT32_STEPS)
    unwindowed = SLIDING.replace(sliding_window=None, sliding_layers=())
    assert max(trace_errors(trace, run(unwindowed, Weights(unwindowed, dict(w)), toks)).values()) > 1e-2


def test_bidirectional_sliding_window_is_inclusive_in_transformers() -> None:
    """Arch window w, bidirectional: |i - j| < w, written as config.sliding_window = w - 1 (transformers: |i - j| <= it)."""
    arch = SLIDING.replace(causal=False, sliding_window=3)
    w, toks = Weights.random(arch, 0), (torch.arange(16).view(2, 8) * 3) % arch.d_vocab
    model = build(arch, w, "qwen2")
    assert model.config.sliding_window == 2 and adapt(model).arch == arch
    trace = adapt(model).trace(toks)
    i, j = torch.arange(8)[:, None], torch.arange(8)[None, :]
    assert ((trace.pattern[0] > 0) == ((i - j).abs() < 3)).all()  # exactly the window, both sides
    assert_traces_agree(trace, run(arch, w, toks), RTOL_FLOAT32_STEPS)


def test_sliding_layers_read_from_max_window_layers() -> None:
    """A config written by hand: use_sliding_window with max_window_layers=1 slides layers 1 and 2."""
    config = Qwen2Config(
        vocab_size=10, hidden_size=8, intermediate_size=6, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=8, use_sliding_window=True, sliding_window=3,
        max_window_layers=1, hidden_act="swish",
    )  # fmt: skip
    arch = adapt(Qwen2ForCausalLM(config)).arch
    assert (arch.sliding_window, arch.sliding_layers, arch.act, arch.d_head) == (3, (1, 2), "silu", 4)
    off = Qwen2Config(**{**config.to_dict(), "use_sliding_window": False, "layer_types": None})
    assert adapt(Qwen2ForCausalLM(off)).arch.sliding_window is None


def test_float32_steps_are_what_differs() -> None:
    w, toks = Weights.random(SLIDING, 1), torch.arange(8)[None] % SLIDING.d_vocab
    model = build(SLIDING, w, "qwen2")
    ref = run(SLIDING, w, toks)
    assert max(trace_errors(adapt(model).trace(toks), ref).values()) > RTOL_FLOAT64
    with float32_steps_in_float64(*FLOAT64_STEPS):
        assert_traces_agree(adapt(model).trace(toks), ref, RTOL_FLOAT64)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(layer_types=["full_attention", "chunked_attention"]), "layer_types"),
        (dict(use_sliding_window=False, layer_types=["sliding_attention", "full_attention"]), "sliding_window"),
        (dict(hidden_act="gelu_fast"), "hidden_act"),
        (dict(use_sliding_window=True, sliding_window=0, layer_types=["sliding_attention", "full_attention"]), "sliding_window=0"),
        (dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}), "rope_type"),
    ],
)
def test_unsupported_config_names_the_field(changes: dict, field: str) -> None:
    arch = Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, **FIXED)
    config = Qwen2Config(**{**Qwen2Adapter._config_kwargs(arch), **changes})
    with pytest.raises(UnsupportedError, match=field):
        adapt(Qwen2ForCausalLM(config))


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(o_bias=True), "o_bias"),
        (dict(q_bias=False), "q_bias"),
        (dict(mlp_bias=True), "mlp_bias"),
        (dict(positional="learned", rotary_dim=None, rotary_base=10000.0, rotary_style="half"), "positional"),
        (dict(norm_placement="post", final_norm=False), "norm_placement"),
        (dict(attn_softcap=5.0), "attn_softcap"),
        (dict(embed_scale=2.0), "embed_scale"),
        (dict(causal=False, sliding_window=1, sliding_layers=(0,)), "sliding_window=1 with causal=False"),
    ],
)
def test_build_rejects_what_qwen2_cannot_express(changes: dict, field: str) -> None:
    arch = Arch(n_heads=2, d_model=8, d_head=4, **FIXED).replace(**changes)
    assert field in (Qwen2Adapter.cannot_express(arch) or "")
    with pytest.raises(UnsupportedError, match=field):
        build(arch, Weights.random(arch, 0), "qwen2")
