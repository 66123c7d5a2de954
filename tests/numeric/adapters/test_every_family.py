"""What every adapter owes, checked family by family: the real forward pass computes what the reference computes
(to the family's tolerance as shipped, ``_agreement.TOLERANCES``, each with its reason), weights and Arch come back
exactly (``build`` then ``adapt``), and a trace gives the user's model back as it was, also when the forward pass
raises. Each family's own module checks what only that family has (its float32 steps kept in float64, its config
fields, what it cannot express)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, find, given, note, settings
from hypothesis import strategies as st

from circuitproof.numeric import Weights, run
from circuitproof.numeric.adapters import FAMILIES, adapt, build
from circuitproof.properties.strategies import family_archs, tokens, weights

from ._agreement import TOLERANCES, assert_traces_agree, model_state, rtol_as_shipped, same_state

pytest.importorskip("transformers", reason="install the hf extra: pip install -e '.[hf]'")

# Gemma 2 multiplies the embedding by sqrt(d_model) held in the weights' dtype: bfloat16 cannot hold a drawn
# embed_scale exactly (test_gemma2.py checks the refusal), so its round trip is drawn in float64 and float32.
# the user's attention implementation, which a trace switches to eager and back (Gemma 2 has no sdpa path)
ATTENTION = {family: "sdpa" for family in FAMILIES} | {"gemma2": "flex_attention"}
DTYPES = {family: [torch.float64, torch.float32, torch.bfloat16] for family in FAMILIES} | {"gemma2": [torch.float64, torch.float32]}


def test_every_family_has_a_tolerance_with_its_reason():
    assert set(TOLERANCES) == set(FAMILIES)
    assert all(len(reason) > 40 for _, reason in TOLERANCES.values())


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_agrees_with_the_reference_as_shipped(family, data):
    arch = data.draw(family_archs(family), label="arch")
    w = data.draw(weights(arch), label="weights")
    toks = data.draw(tokens(arch), label="tokens")
    ref = run(arch, w, toks)
    rtol = rtol_as_shipped(family, ref)
    errors = assert_traces_agree(adapt(build(arch, w, family)).trace(toks), ref, rtol)
    note(f"rtol {rtol:.2e}; errors {errors}")


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_round_trip_is_exact(family, data):
    arch = data.draw(family_archs(family), label="arch")
    dtype = data.draw(st.sampled_from(DTYPES[family]), label="dtype")
    w = Weights.random(arch, data.draw(st.integers(0, 2**32 - 1), label="seed"), dtype=dtype)
    model = build(arch, w, family)
    assert next(model.parameters()).dtype == dtype and not model.training
    back = adapt(model)
    assert back.arch == arch
    assert back.weights.equal(w) and back.weights.dtype == dtype


def _small_arch(family: str):
    """The simplest Arch of the family with two layers, two heads and room for three positions (Hypothesis shrinks to it)."""
    budget = settings(database=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    return find(family_archs(family), lambda a: a.n_layers >= 2 and a.n_heads >= 2 and a.n_ctx >= 3, settings=budget)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_trace_leaves_the_model_as_it_was_also_when_it_raises(family):
    """A float32 model in train mode with a non-eager attention comes back so (no hook left, parameters untouched),
    after a trace and after a trace whose last MLP raises."""
    arch = _small_arch(family)
    model = build(arch, Weights.random(arch, 1, dtype=torch.float32), family)
    model.train()
    model.set_attn_implementation(ATTENTION[family])
    before = model_state(model)
    assert before[1] == ATTENTION[family] and before[2] == () and all(before[0])
    adapter = adapt(model)
    toks = torch.tensor([[1, 0, 1]])
    trace = adapter.trace(toks)
    assert trace.pattern.shape == (2, 1, arch.n_heads, 3, 3) and trace.resid_post.dtype == torch.float32
    assert same_state(model_state(model), before)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    last_mlp = [m for name, m in model.named_modules() if name.endswith(("mlp", "intermediate"))][-1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(last_mlp, "forward", boom)
        with pytest.raises(RuntimeError, match="boom"):
            adapter.trace(toks)
    assert same_state(model_state(model), before)
