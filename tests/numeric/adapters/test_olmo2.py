"""OLMo 2 adapter: agreement with the reference (float32 steps as shipped, then kept in float64), exact round
trips, the model left as it was, and what OLMo 2 cannot express."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from transformers import Olmo2Config, Olmo2ForCausalLM
from transformers.models.olmo2 import modeling_olmo2

from circuitproof import Arch, UnsupportedError
from circuitproof.numeric import Weights, run
from circuitproof.numeric.adapters import adapt, adapter_class, build
from circuitproof.properties.strategies import family_archs, tokens, weights

from ._agreement import COMPARED, RTOL_FLOAT64, RTOL_SANDWICH, assert_traces_agree, relative_error
from .test_llama import float32_steps_in_float64

FAMILY = "olmo2"
Olmo2Adapter = adapter_class(FAMILY)
FIELDS = (*COMPARED, "embed", "v", "z", "mlp_pre", "mlp_post", "logits_raw")
PINNED = {k: v for k, v in Olmo2Adapter.pinned.items() if not k.startswith("_")}
BASE = Olmo2Adapter.project(Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=10, **PINNED))
# The tolerance as shipped and its reason: _agreement.TOLERANCES. The float64-steps test below shows that the
# whole difference is the float32 steps.
RTOL_FLOAT32_STEPS = RTOL_SANDWICH


# ----------------------------------------------------------------- float32 steps kept in float64
def float64_steps():
    """OLMo 2 with its float32 steps (RMSNorm, rotary tables, softmax) in the model's dtype: Llama's patches."""
    return float32_steps_in_float64(modeling_olmo2.Olmo2RMSNorm, modeling_olmo2.Olmo2RotaryEmbedding)


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
    norm, softmax = modeling_olmo2.Olmo2RMSNorm.forward, torch.nn.functional.softmax
    with float64_steps():
        assert modeling_olmo2.Olmo2RMSNorm.forward is not norm and torch.nn.functional.softmax is not softmax
    assert modeling_olmo2.Olmo2RMSNorm.forward is norm and torch.nn.functional.softmax is softmax


# ---------------------------------------------------------------------------------- round trip
def _tiny_config(**changes: object) -> Olmo2Config:
    sizes = dict(vocab_size=10, hidden_size=8, intermediate_size=12, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    no_tokens = dict(pad_token_id=None, bos_token_id=None, eos_token_id=None)
    return Olmo2Config(**{**sizes, **no_tokens, "max_position_embeddings": 8, **changes})


def test_reads_a_config_without_head_dim():
    """An OLMo 2 configured as published (no head_dim: hidden_size // num_attention_heads, untied, biases off),
    made by transformers, not by build: read and traced."""
    torch.manual_seed(0)
    model = Olmo2ForCausalLM(_tiny_config()).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)  # gains away from 1
    a = adapt(model)
    assert (a.arch.d_head, a.arch.n_kv_heads, a.arch.tied, a.arch.q_bias, a.arch.act) == (4, 1, False, False, "silu")
    assert a.weights.ln_q_w.shape == (2, 8) and a.weights.ln_k_w.shape == (2, 4)
    toks = torch.tensor([[1, 5, 2, 9, 0, 3, 3, 7]])
    assert_traces_agree(a.trace(toks), run(a.arch, a.weights, toks), RTOL_FLOAT32_STEPS, FIELDS)


# ------------------------------------------------------------------------------ model state
# ------------------------------------------------------------------------------- unsupported
@pytest.mark.parametrize(
    "changes, field",
    [
        ({"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}}, "rope_type"),
        ({"hidden_act": "relu6"}, "hidden_act"),
    ],
)
def test_unsupported_config_names_the_field(changes, field):
    model = Olmo2ForCausalLM(_tiny_config(**changes))
    with pytest.raises(UnsupportedError, match=field):
        adapt(model)


@pytest.mark.parametrize(
    "changes, feature",
    [
        ({"norm_placement": "sandwich"}, "norm_placement='sandwich'"),
        ({"qk_norm": "per_head"}, "qk_norm='per_head'"),
        ({"norm_gain": "one_plus_w"}, "norm_gain='one_plus_w'"),
        ({"attn_softcap": 5.0}, "attn_softcap=5.0"),
        ({"logit_softcap": 5.0}, "logit_softcap=5.0"),
        ({"sliding_window": 2, "sliding_layers": (0,)}, "sliding_window=2"),
        ({"attn_scale": 1.0}, "attn_scale=1.0"),
        ({"embed_scale": 2.0}, "embed_scale=2.0"),
        ({"o_bias": True}, "o_bias=True"),
        ({"rotary_dim": 2}, "rotary_dim=2"),
    ],
)
def test_build_rejects_what_olmo2_cannot_express(changes, feature):
    arch = BASE.replace(**changes)
    with pytest.raises(UnsupportedError, match=feature):
        build(arch, Weights.random(arch, 0), FAMILY)
