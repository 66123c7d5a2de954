"""GPT-J adapter: agreement with the reference, exact round trips, the user's model left alone, refusals."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import GPTJConfig, GPTJForCausalLM
from transformers.models.gptj import modeling_gptj

from circuitproof import Arch, UnsupportedError
from circuitproof.numeric import Weights, run
from circuitproof.numeric.adapters import adapt, build
from circuitproof.numeric.adapters._gptj import GPTJAdapter

from ._agreement import RTOL_FLOAT64, assert_traces_agree, draw_and_compare, eager_attention_in_dtype, rtol_as_shipped

FAMILY = "gptj"
GPTJ = dict(positional="rotary", rotary_style="interleaved", parallel=True, parallel_shared_norm=True, unembed_bias=True)

# The tolerance as shipped, 64 u kappa, and its reason: _agreement.TOLERANCES. The patched test below shows
# that the whole difference is the float32 steps.


# ----------------------------------------------------- the float32 steps, kept in float64
def _rotary_float64(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sin, cos [B, P, r/2] of the angles p * 10000^(-2k/r), computed in float64 (GPT-J's table is float32)."""
    r = self.pos_embd_dim
    inv_freq = 10000.0 ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)  # [r/2]
    theta = position_ids[..., None].to(torch.float64) * inv_freq  # [B, P, r/2]
    return theta.sin().to(x.dtype), theta.cos().to(x.dtype)


def _patch(mp: pytest.MonkeyPatch) -> None:
    """Keep GPT-J's float32 steps (sin/cos table, q k^T) in the model's dtype, for this test only."""
    mp.setattr(modeling_gptj.GPTJRotaryEmbedding, "forward", _rotary_float64)
    mp.setattr(modeling_gptj, "eager_attention_forward", eager_attention_in_dtype)


@given(data=st.data())
def test_agrees_to_float64_precision_with_float32_steps_patched(data: st.DataObject) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _patch(mp)
        draw_and_compare(FAMILY, data, lambda ref: RTOL_FLOAT64)


def test_the_float32_steps_are_the_whole_difference() -> None:
    arch = Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, rotary_dim=2, **GPTJ)
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
    assert modeling_gptj.eager_attention_forward is not eager_attention_in_dtype
    assert modeling_gptj.GPTJRotaryEmbedding.forward is not _rotary_float64


# -------------------------------------------------------------------------- round trips
def _config(**changes: object) -> GPTJConfig:
    base = dict(vocab_size=10, n_embd=8, n_layer=1, n_head=2, rotary_dim=2, n_inner=12, n_positions=8)
    base.update(bos_token_id=None, eos_token_id=None, attn_implementation="eager")
    return GPTJConfig(**{**base, **changes})


def test_rotary_dim_none_is_a_full_head_only_with_one_head() -> None:
    """GPT-J's table spans rotary_dim or n_embd: with rotary_dim=None it fits a head only when n_head == 1."""
    one = _config(n_head=1)
    object.__setattr__(one, "rotary_dim", None)  # the strict config refuses None; an unvalidated one may hold it
    model = GPTJForCausalLM(one).double()
    adapter = adapt(model)
    assert adapter.arch.rotary_dim is None and adapter.arch.rotary_dims == 8
    toks = torch.tensor([[1, 2, 3, 4, 5, 6]])
    ref = run(adapter.arch, adapter.weights, toks)
    assert_traces_agree(adapter.trace(toks), ref, rtol_as_shipped(FAMILY, ref))
    two = _config(n_head=2)
    object.__setattr__(two, "rotary_dim", None)
    with pytest.raises(UnsupportedError, match=re.escape("rotary_dim=None with n_head=2")):
        adapt(GPTJForCausalLM(two))


def test_full_head_rotary_dim_reads_back_as_none() -> None:
    """rotary_dim=d_head and None are one model; the config cannot tell them apart, the adapter reads None."""
    arch = Arch(n_heads=2, d_model=8, d_head=4, **{**GPTJ, "rotary_dim": 4})
    assert adapt(build(arch, Weights.random(arch, 0), FAMILY)).arch == arch.replace(rotary_dim=None)
    assert GPTJAdapter.project(arch) == arch.replace(rotary_dim=None)


# --------------------------------------------------------------- the user's model untouched
# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(activation_function="quick_gelu"), "activation_function='quick_gelu'"),
        (dict(rotary_dim=3), "rotary_dim=3"),
        (dict(rotary_dim=6), "rotary_dim=6"),  # more than a head of 4
    ],
)
def test_unsupported_config_names_the_field(changes: dict, field: str) -> None:
    model = GPTJForCausalLM(_config(**changes))
    with pytest.raises(UnsupportedError, match=re.escape(field)):
        adapt(model)


@pytest.mark.parametrize(
    "arch, feature",
    [
        (Arch(n_heads=2, n_kv_heads=1, d_model=8, **GPTJ), "n_kv_heads=1"),
        (Arch(d_model=4, positional="none", parallel=True, parallel_shared_norm=True, unembed_bias=True), "positional='none'"),
        (Arch(d_model=4, **{**GPTJ, "rotary_style": "half"}), "rotary_style='half'"),
        (Arch(d_model=4, rotary_base=100.0, **GPTJ), "rotary_base=100.0"),
        (Arch(d_model=4, v_bias=True, **GPTJ), "v_bias=True"),
        (Arch(d_model=4, **{**GPTJ, "parallel_shared_norm": False}), "parallel_shared_norm=False"),
        (Arch(d_model=4, **{**GPTJ, "unembed_bias": False}), "unembed_bias=False"),
        (Arch(d_model=4, mlp_bias=False, **GPTJ), "mlp_bias=False"),
        (Arch(d_model=6, **GPTJ), "d_model=6"),
    ],
)
def test_build_refuses_what_gptj_cannot_express(arch: Arch, feature: str) -> None:
    assert GPTJAdapter.cannot_express(arch) is not None
    with pytest.raises(UnsupportedError, match=re.escape(feature)):
        build(arch, Weights.random(arch, 0), FAMILY)
