"""Gemma 2 adapter: agreement with the reference (float32 steps as shipped, then kept in float64), exact round
trips, the model left as it was, and what Gemma 2 cannot express."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from transformers import Gemma2Config, Gemma2ForCausalLM
from transformers.models.gemma2 import modeling_gemma2

from circuitproof import Arch, UnsupportedError
from circuitproof.numeric import Weights, run
from circuitproof.numeric.adapters import adapt, adapter_class, build
from circuitproof.properties.strategies import family_archs, tokens, weights

from ._agreement import COMPARED, RTOL_FLOAT64, RTOL_SANDWICH, assert_traces_agree, relative_error
from .test_llama import float32_steps_in_float64

FAMILY = "gemma2"
Gemma2Adapter = adapter_class(FAMILY)
FIELDS = (*COMPARED, "embed", "v", "z", "mlp_pre", "mlp_post", "logits_raw")
BASE = Gemma2Adapter.project(Arch(n_heads=2, d_model=8, d_head=4, **Gemma2Adapter.pinned))

# The tolerance as shipped and its reason: _agreement.TOLERANCES. The float64-steps test below shows that the
# whole difference is the float32 steps.
RTOL_FLOAT32_STEPS = RTOL_SANDWICH


# ----------------------------------------------------------------- float32 steps kept in float64
def _rmsnorm_in_dtype(self, x):
    """Gemma2RMSNorm.forward without its float32 casts: x / sqrt(mean(x^2) + eps) * (1 + w) in x's dtype."""
    return self._norm(x) * (1.0 + self.weight)


def float64_steps():
    """Gemma 2 with its float32 steps (RMSNorm with its 1 + w gain, rotary tables, softmax) in the model's dtype."""
    return float32_steps_in_float64(modeling_gemma2.Gemma2RMSNorm, modeling_gemma2.Gemma2RotaryEmbedding, _rmsnorm_in_dtype)


# ---------------------------------------------------------------------------------- agreement
def _agree(data: st.DataObject, rtol: float, fields: tuple[str, ...], norms: bool) -> None:
    """The real trace of a drawn model against the reference: ``fields`` (and every norm's input and output)."""
    arch = data.draw(family_archs(FAMILY), label="arch")
    w = data.draw(weights(arch), label="weights")
    toks = data.draw(tokens(arch), label="tokens")
    real, ref = adapt(build(arch, w, FAMILY)).trace(toks), run(arch, w, toks)
    errors = assert_traces_agree(real, ref, rtol, fields)
    for slot, expected in ref.norms.items() if norms else ():
        for part in ("input", "output"):
            errors[f"norm.{slot}.{part}"] = err = relative_error(getattr(real.norms[slot], part), getattr(expected, part))
            assert err <= rtol, f"norm {slot} {part} differs by {err:.3e} relative (tolerance {rtol:g})"
    note(f"worst: {max(errors.values()):.2e}; {errors}")


@given(data=st.data())
def test_float64_steps_agree_to_1e_9(data):
    with float64_steps():
        _agree(data, RTOL_FLOAT64, FIELDS, norms=True)  # every observed field, every norm


def test_float64_steps_patch_is_restored():
    norm, softmax = modeling_gemma2.Gemma2RMSNorm.forward, torch.nn.functional.softmax
    with float64_steps():
        assert modeling_gemma2.Gemma2RMSNorm.forward is not norm and torch.nn.functional.softmax is not softmax
    assert modeling_gemma2.Gemma2RMSNorm.forward is norm and torch.nn.functional.softmax is softmax


# ---------------------------------------------------------------------------------- round trip
def _tiny_config(**changes: object) -> Gemma2Config:
    sizes = dict(vocab_size=10, hidden_size=8, intermediate_size=12, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1)
    sizes["head_dim"] = 4
    no_tokens = dict(pad_token_id=None, bos_token_id=None, eos_token_id=None)
    return Gemma2Config(**{**sizes, **no_tokens, "max_position_embeddings": 8, "sliding_window": 2, **changes})


def test_reads_the_shipped_defaults():
    """A Gemma 2 configured as published (alternating sliding layers, query_pre_attn_scalar=256,
    both softcaps, tied, gelu_pytorch_tanh), made by transformers, not by build: read and traced."""
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(_tiny_config(query_pre_attn_scalar=256, attn_logit_softcapping=1.0, final_logit_softcapping=2.0)).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(-0.5, 0.5)  # gains 1 + w away from 1
    a = adapt(model)
    assert a.arch.sliding_layers == (0, 2) and a.arch.sliding_window == 2
    assert a.arch.attn_scale == 256**-0.5 and a.arch.attn_softcap == 1.0 and a.arch.logit_softcap == 2.0
    assert a.arch.tied and a.arch.act == "gelu_tanh"
    assert a.arch.embed_scale == float(torch.tensor(8**0.5, dtype=torch.float32)) != 8**0.5  # the float32 buffer
    toks = torch.tensor([[1, 5, 2, 9, 0, 3, 3, 7]])
    assert_traces_agree(a.trace(toks), run(a.arch, a.weights, toks), RTOL_FLOAT32_STEPS, FIELDS)


@pytest.mark.parametrize("causal", [True, False])
def test_sliding_window_masks_as_the_reference(causal):
    """Key j is visible from query i on a sliding layer iff i - j < window (and j <= i if causal): transformers'
    causal window is exclusive, its bidirectional one inclusive (|i - j| <= config.sliding_window)."""
    arch = BASE.replace(n_layers=2, causal=causal, sliding_window=2, sliding_layers=(0,))
    model = build(arch, Weights.random(arch, 2), FAMILY)
    assert model.config.sliding_window == (2 if causal else 1)
    trace = adapt(model).trace(torch.tensor([[1, 2, 3, 4, 5, 6]]))
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    window = (i - j).abs() < 2
    full = j <= i if causal else torch.ones(6, 6, dtype=torch.bool)
    assert torch.equal(trace.pattern[0, 0, 0] > 0, window & full)
    assert torch.equal(trace.pattern[1, 0, 0] > 0, full)


# ------------------------------------------------------------------------------ model state
# ------------------------------------------------------------------------------- unsupported
@pytest.mark.parametrize(
    "changes, field",
    [
        ({"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}}, "rope_type"),
        ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
        ({"hidden_activation": "relu6"}, "hidden_activation"),
        ({"layer_types": ["full_attention", "chunked_attention", "full_attention"]}, "layer_types"),
    ],
)
def test_unsupported_config_names_the_field(changes, field):
    model = Gemma2ForCausalLM(_tiny_config(**changes))
    with pytest.raises(UnsupportedError, match=field):
        adapt(model)


@pytest.mark.parametrize(
    "changes, feature",
    [
        ({"norm_placement": "pre"}, "norm_placement='pre'"),
        ({"norm_gain": "w"}, "norm_gain='w'"),
        ({"positional": "learned", "rotary_dim": None, "rotary_base": 10000.0}, "positional='learned'"),
        ({"rotary_dim": 2}, "rotary_dim=2"),
        ({"q_bias": True}, "q_bias=True"),
        ({"embed_scale": 2.0}, "embed_scale=2.0"),
        ({"attn_scale": 0.3}, "attn_scale=0.3"),
        ({"d_model": 9}, "d_model=9"),
        ({"mlp_bias": True}, "mlp_bias=True"),
    ],
)
def test_build_rejects_what_gemma2_cannot_express(changes, feature):
    arch = BASE.replace(**changes)
    with pytest.raises(UnsupportedError, match=feature.replace("(", r"\(")):
        build(arch, Weights.random(arch, 0), FAMILY)


def test_build_rejects_an_embed_scale_the_dtype_cannot_hold():
    with pytest.raises(UnsupportedError, match="embed_scale"):
        build(BASE, Weights.random(BASE, 0, dtype=torch.bfloat16), FAMILY)
    bf16 = BASE.replace(embed_scale=float(torch.tensor(BASE.embed_scale, dtype=torch.bfloat16)))
    w = Weights.random(bf16, 0, dtype=torch.bfloat16)
    assert adapt(build(bf16, w, FAMILY)).weights.equal(w)
