"""GPT-NeoX adapter: agreement with the reference, exact round trips, the user's model left alone, refusals."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
from transformers.models.gpt_neox import modeling_gpt_neox

from circuitproof import Arch, UnsupportedError
from circuitproof.numeric import Weights, run
from circuitproof.numeric.adapters import adapt, build
from circuitproof.numeric.adapters._gpt_neox import GPTNeoXAdapter

from ._agreement import RTOL_FLOAT64, assert_traces_agree, draw_and_compare, eager_attention_in_dtype, rtol_as_shipped

FAMILY = "gpt_neox"

# The tolerance as shipped, 64 u kappa, and its reason: _agreement.TOLERANCES. The patched test below shows
# that the whole difference is the float32 steps.


# ----------------------------------------------------- the float32 steps, kept in float64
def _rotary_float64(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, P, r] of the angles p * base^(-2k/r), computed in float64 (GPT-NeoX's table is float32)."""
    r = 2 * self.inv_freq.shape[0]
    base = self.config.rope_parameters["rope_theta"]
    inv_freq = base ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)  # [r/2]
    theta = position_ids[..., None].to(torch.float64) * inv_freq  # [B, P, r/2]
    theta = torch.cat([theta, theta], dim=-1)  # "half" pairing: coordinate k and k + r/2 share an angle
    return theta.cos().to(x.dtype), theta.sin().to(x.dtype)


def _patch(mp: pytest.MonkeyPatch) -> None:
    """Keep GPT-NeoX's float32 steps (rotary table, softmax) in the model's dtype, for this test only."""
    mp.setattr(modeling_gpt_neox.GPTNeoXRotaryEmbedding, "forward", _rotary_float64)
    mp.setattr(modeling_gpt_neox, "eager_attention_forward", eager_attention_in_dtype)


@given(data=st.data())
def test_agrees_to_float64_precision_with_float32_steps_patched(data: st.DataObject) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _patch(mp)
        draw_and_compare(FAMILY, data, lambda ref: RTOL_FLOAT64)


def test_the_float32_steps_are_the_whole_difference() -> None:
    arch = Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, positional="rotary", rotary_dim=2, parallel=True)
    w = Weights.random(arch, 1)
    toks = torch.arange(12).remainder(arch.d_vocab)[None]
    model = build(arch, w, FAMILY)
    ref = run(arch, w, toks)
    shipped = assert_traces_agree(adapt(model).trace(toks), ref, rtol_as_shipped(FAMILY, ref))
    assert max(shipped.values()) > RTOL_FLOAT64  # float32 steps show
    with pytest.MonkeyPatch.context() as mp:
        _patch(mp)
        assert_traces_agree(adapt(model).trace(toks), ref, RTOL_FLOAT64)


def test_patches_are_restored() -> None:
    assert modeling_gpt_neox.eager_attention_forward is not eager_attention_in_dtype
    assert modeling_gpt_neox.GPTNeoXRotaryEmbedding.forward is not _rotary_float64


# -------------------------------------------------------------------------- round trips
def test_fused_qkv_layout_is_per_head_q_k_v() -> None:
    """Row o of query_key_value is head o // (3 Dh), part (o // Dh) % 3 (q, k, v), coordinate o % Dh."""
    H, Dh, D = 3, 2, 6
    model = GPTNeoXForCausalLM(_config(hidden_size=D, num_attention_heads=H))
    with torch.no_grad():
        model.gpt_neox.layers[0].attention.query_key_value.weight.copy_(torch.arange(3 * H * Dh, dtype=torch.float32)[:, None].expand(-1, D))
    w = adapt(model).weights
    for h in range(H):
        for part, name in enumerate(("W_Q", "W_K", "W_V")):
            rows = h * 3 * Dh + part * Dh + torch.arange(Dh, dtype=torch.float32)
            assert torch.equal(w[name][0, h], rows.expand(D, -1)), (name, h)


def test_reads_legacy_rotary_fields_and_factor_zero() -> None:
    model = GPTNeoXForCausalLM(_config(rotary_pct=0.5, rotary_emb_base=500))  # head_dim 8
    arch = adapt(model).arch
    assert (arch.positional, arch.rotary_dim, arch.rotary_base, arch.parallel) == ("rotary", 4, 500.0, True)
    none = GPTNeoXForCausalLM(_config(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.0}))
    assert adapt(none).arch.positional == "none"


def test_full_head_rotary_dim_reads_back_as_none() -> None:
    """rotary_dim=d_head and None are one model; the config cannot tell them apart, the adapter reads None."""
    arch = Arch(n_heads=2, d_model=8, d_head=4, positional="rotary", rotary_dim=4)
    assert adapt(build(arch, Weights.random(arch, 0), FAMILY)).arch == arch.replace(rotary_dim=None)
    assert GPTNeoXAdapter.project(arch) == arch.replace(rotary_dim=None)


# --------------------------------------------------------------- the user's model untouched
# ---------------------------------------------------------------------------- refusals
def _config(**changes: object) -> GPTNeoXConfig:
    base = dict(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12, max_position_embeddings=8)
    base.update(bos_token_id=None, eos_token_id=None, attn_implementation="eager")
    return GPTNeoXConfig(**{**base, **changes})


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(hidden_act="gelu_fast"), "hidden_act='gelu_fast'"),
        (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}), "rope_type='linear'"),
        (dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.625}), "partial_rotary_factor=0.625"),
    ],
)
def test_unsupported_config_names_the_field(changes: dict, field: str) -> None:
    model = GPTNeoXForCausalLM(_config(**changes))
    with pytest.raises(UnsupportedError, match=re.escape(field)):
        adapt(model)


@pytest.mark.parametrize(
    "arch, feature",
    [
        (Arch(n_heads=2, n_kv_heads=1, d_model=8, positional="none"), "n_kv_heads=1"),
        (Arch(d_model=4), "positional='learned'"),
        (Arch(d_model=4, positional="rotary", rotary_style="interleaved"), "rotary_style='interleaved'"),
        (Arch(d_model=4, positional="none", norm="rmsnorm"), "norm='rmsnorm'"),
        (Arch(d_model=4, positional="none", q_bias=True), "q_bias=True, k_bias=False"),
        (Arch(d_model=4, positional="none", parallel=True, parallel_shared_norm=True), "parallel_shared_norm=True"),
        (Arch(d_model=4, positional="none", unembed_bias=True), "unembed_bias=True"),
        (Arch(d_model=6, positional="none"), "d_model=6"),
    ],
)
def test_build_refuses_what_gpt_neox_cannot_express(arch: Arch, feature: str) -> None:
    assert GPTNeoXAdapter.cannot_express(arch) is not None
    with pytest.raises(UnsupportedError, match=re.escape(feature)):
        build(arch, Weights.random(arch, 0), FAMILY)
