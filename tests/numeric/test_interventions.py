"""Causal interventions: zero- and mean-ablation and activation patching, on the reference and through hooks on real models.

Every route to an intervened forward pass agrees: the reference's ``edit`` hook, each transformers family's
forward hooks (to the family's tolerance as shipped, ``adapters/_agreement.TOLERANCES``), and, for zero-ablating
a head, zeroing its ``W_O`` rows in the weights. Patching a component with its own clean value changes nothing;
the model comes back as it was, also when an intervention raises; a bad address raises an error that names it.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, find, given, note, settings
from hypothesis import strategies as st

from circuitproof import Arch, ShapeError, UnsupportedError
from circuitproof.numeric import Weights, run
from circuitproof.numeric.adapters import adapt, build
from circuitproof.numeric.adapters._gpt2 import GPT2Adapter
from circuitproof.numeric.interventions import (
    MLP,
    ComponentError,
    Embed,
    Head,
    Reference,
    as_target,
    final_scale,
    mean_ablate,
    patch,
    run_replaced,
    run_replaced_each,
    value,
    zero_ablate,
)
from circuitproof.properties._transforms import ablated_weights
from circuitproof.properties.strategies import family_archs, models, tokens

from .adapters._agreement import COMPARED, assert_traces_agree, model_state, rtol_as_shipped, same_state

pytest.importorskip("transformers", reason="install the hf extra: pip install -e '.[hf]'")

FAMILIES = ["gpt2", "llama", "gpt_neox", "gptj", "qwen2", "bert", "gemma2", "olmo2"]
FIELDS = (*COMPARED, "z", "embed")
EXAMPLES = max(4, settings().max_examples // 2)
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# float64 rounding (1e-16) through the few products a component's value passes: 1e-12 leaves room only for rounding
RTOL_SAME = 1e-12


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-300))


@st.composite
def heads(draw, arch: Arch) -> Head:
    """A query head of ``arch`` (shrinks toward head 0 of layer 0)."""
    return Head(draw(st.integers(0, arch.n_layers - 1)), draw(st.integers(0, arch.n_heads - 1)))


@st.composite
def components(draw, arch: Arch):
    """A head, an MLP or the embedding of ``arch`` (shrinks toward head 0 of layer 0)."""
    kinds = ["head", "embed"] + (["mlp"] if arch.has_mlp else [])
    kind = draw(st.sampled_from(kinds))
    layer = draw(st.integers(0, arch.n_layers - 1))
    if kind == "head":
        return Head(layer, draw(st.integers(0, arch.n_heads - 1)))
    return MLP(layer) if kind == "mlp" else Embed()


def _other_tokens(arch: Arch, toks: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.randint(0, arch.d_vocab, tuple(toks.shape), generator=torch.Generator().manual_seed(seed))


def _intervene(kind: str, target, component, toks, other, **options):
    if kind == "zero":
        return zero_ablate(target, component, toks, **options)
    if kind == "mean":
        return mean_ablate(target, component, toks, reference_tokens=other[:, : max(1, other.shape[1] - 1)], **options)
    return patch(target, component, toks, source_tokens=other, **options)


# ------------------------------------------------------------------ the reference
@settings(max_examples=2 * EXAMPLES, suppress_health_check=SLOW)
@given(data=st.data())
def test_the_intervened_trace_holds_the_replacement_and_changes_nothing_upstream(data):
    model = data.draw(models("reference"), label="model")
    arch, w = model.arch, model.weights
    toks = data.draw(tokens(arch), label="tokens")
    other = _other_tokens(arch, toks, data.draw(st.integers(0, 99), label="other"))
    component = data.draw(components(arch), label="component")
    kind = data.draw(st.sampled_from(["zero", "mean", "patch"]), label="kind")
    result = _intervene(kind, w, component, toks, other)
    expected = {"zero": torch.zeros(()), "mean": value(run(arch, w, other[:, : max(1, other.shape[1] - 1)]), component).mean((0, 1)),
                "patch": value(run(arch, w, other), component)}[kind]
    got = value(result.intervened, component)
    torch.testing.assert_close(got, expected.expand_as(got).double(), rtol=0, atol=0)
    assert result.effect.shape == (*toks.shape, arch.d_vocab)
    if not isinstance(component, Embed):  # the stream entering the component's layer is the clean run's
        torch.testing.assert_close(result.intervened.resid_pre[component.layer], result.clean.resid_pre[component.layer], rtol=0, atol=0)
    if isinstance(component, Head):  # GQA: heads are query heads; the other heads of its layer are untouched
        others = [h for h in range(arch.n_heads) if h != component.head]
        clean, new = result.clean.head_out[component.layer], result.intervened.head_out[component.layer]
        torch.testing.assert_close(new[:, :, others], clean[:, :, others], rtol=0, atol=0)
        torch.testing.assert_close(result.intervened.pattern[component.layer], result.clean.pattern[component.layer], rtol=0, atol=0)


@settings(max_examples=2 * EXAMPLES, suppress_health_check=SLOW)
@given(data=st.data())
def test_zero_ablating_a_head_by_hook_is_zeroing_its_weights(data):
    model = data.draw(models("reference"), label="model")
    toks = data.draw(tokens(model.arch), label="tokens")
    head = data.draw(heads(model.arch), label="head")
    by_hook = zero_ablate(model.weights, head, toks).intervened.logits
    by_weights = run(model.arch, ablated_weights(model.weights, head.layer, head.head), toks).logits
    note(f"rel {_rel(by_hook, by_weights):.2e}")
    assert _rel(by_hook, by_weights) <= RTOL_SAME


@settings(max_examples=2 * EXAMPLES, suppress_health_check=SLOW)
@given(data=st.data())
def test_patching_a_component_with_its_own_clean_value_changes_nothing(data):
    model = data.draw(models("reference"), label="model")
    toks = data.draw(tokens(model.arch), label="tokens")
    component = data.draw(components(model.arch), label="component")
    clean = run(model.arch, model.weights, toks)
    same = run_replaced(model.weights, toks, component, value(clean, component))
    frozen = run_replaced(model.weights, toks, component, value(clean, component),
                          final_scale=final_scale(model.weights, clean) if model.arch.final_norm else None)
    note(f"rel {_rel(same.logits, clean.logits):.2e}, frozen {_rel(frozen.logits, clean.logits):.2e}")
    assert _rel(same.logits, clean.logits) <= RTOL_SAME and _rel(frozen.logits, clean.logits) <= RTOL_SAME


def _each_against_one_by_one(target, arch: Arch, toks: torch.Tensor, data, rtol: float) -> None:
    """Each copy of one batched run_replaced_each is the run of run_replaced for its item alone, to ``rtol``."""
    clean = as_target(target).trace(toks)
    other = as_target(target).trace(_other_tokens(arch, toks, data.draw(st.integers(0, 99), label="other")))
    items = [(c, value(other, c)) for c in data.draw(st.lists(components(arch), min_size=1, max_size=3), label="components")]
    frozen = final_scale(target, clean) if (arch.final_norm and data.draw(st.booleans(), label="freeze")) else None
    batched, B = run_replaced_each(target, toks, items, final_scale=frozen), toks.shape[0]
    assert batched.logits.shape[0] == len(items) * B
    for k, (component, replacement) in enumerate(items):
        alone = run_replaced(target, toks, component, replacement, final_scale=frozen)
        copy = batched.logits[k * B:(k + 1) * B]
        note(f"{component!r}: rel {_rel(copy, alone.logits):.2e}")
        assert _rel(copy, alone.logits) <= rtol


@settings(max_examples=2 * EXAMPLES, suppress_health_check=SLOW)
@given(data=st.data())
def test_replacing_several_components_in_one_batched_run_is_replacing_each_alone(data):
    model = data.draw(models("reference"), label="model")
    toks = data.draw(tokens(model.arch), label="tokens")
    _each_against_one_by_one(Reference(model.weights), model.arch, toks, data, RTOL_SAME)


# ------------------------------------------------------------------ real models, through hooks
@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=EXAMPLES, suppress_health_check=SLOW)
@given(data=st.data())
def test_a_family_intervention_agrees_with_the_reference(family, data):
    model = data.draw(models(family), label="model")
    arch = model.arch
    toks = data.draw(tokens(arch), label="tokens")
    other = _other_tokens(arch, toks, data.draw(st.integers(0, 99), label="other"))
    component = data.draw(components(arch), label="component")
    kind = data.draw(st.sampled_from(["zero", "mean", "patch"]), label="kind")
    freeze = data.draw(st.booleans(), label="freeze_final_norm") and bool(arch.final_norm)
    ref = _intervene(kind, Reference(model.weights), component, toks, other, freeze_final_norm=freeze)
    real = _intervene(kind, model.intervention_target, component, toks, other, freeze_final_norm=freeze)
    rtol = rtol_as_shipped(family, ref.intervened)
    errors = assert_traces_agree(real.intervened, ref.intervened, rtol, FIELDS)
    scale = float(ref.clean.logits.abs().max())
    effect = float((real.effect - ref.effect).abs().max()) / scale  # the effect, measured against the logits it moves
    note(f"rtol {rtol:.2e}; errors {errors}; effect {effect:.2e}")
    assert effect <= 2 * rtol


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=EXAMPLES, suppress_health_check=SLOW)
@given(data=st.data())
def test_on_a_family_zero_ablation_is_zeroing_the_weights_and_self_patching_changes_nothing(family, data):
    model = data.draw(models(family), label="model")
    arch, adapter = model.arch, model.intervention_target
    toks = data.draw(tokens(arch), label="tokens")
    head = data.draw(heads(arch), label="head")
    by_hook = zero_ablate(adapter, head, toks).intervened.logits
    by_weights = adapt(build(arch, ablated_weights(model.weights, head.layer, head.head), family)).trace(toks).logits
    component = data.draw(components(arch), label="component")
    clean = adapter.trace(toks)
    same = run_replaced(adapter, toks, component, value(clean, component))
    note(f"ablation rel {_rel(by_hook, by_weights):.2e}; self-patch rel {_rel(same.logits, clean.logits):.2e}")
    assert _rel(by_hook, by_weights) <= RTOL_SAME
    assert torch.equal(same.logits, clean.logits)  # the same values through the same modules


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=max(2, EXAMPLES // 2), suppress_health_check=SLOW)
@given(data=st.data())
def test_on_a_family_replacing_several_components_in_one_batched_run_is_replacing_each_alone(family, data):
    """Through the family's hooks; batching may round float32 steps differently: the family's tolerance as shipped."""
    model = data.draw(models(family), label="model")
    toks = data.draw(tokens(model.arch), label="tokens")
    rtol = rtol_as_shipped(family, run(model.arch, model.weights, toks))
    _each_against_one_by_one(model.intervention_target, model.arch, toks, data, rtol)


def _small_arch(family: str) -> Arch:
    """The simplest Arch of the family with two layers, two heads and room for three positions."""
    budget = settings(database=None, derandomize=True, suppress_health_check=SLOW)
    return find(family_archs(family), lambda a: a.n_layers >= 2 and a.n_heads >= 2 and a.n_ctx >= 3, settings=budget)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_the_model_comes_back_as_it_was_also_when_an_intervention_raises(family):
    arch = _small_arch(family)
    model = build(arch, Weights.random(arch, 1, dtype=torch.float32), family)
    model.train()
    model.set_attn_implementation("sdpa")
    before = model_state(model)
    adapter, toks = adapt(model), torch.tensor([[1, 0, 1]])
    for component in (Head(1, 1), MLP(0), Embed()):
        patch(adapter, component, toks, source_tokens=toks.flip(-1), freeze_final_norm=True)
        assert same_state(model_state(model), before)

    def wrong_shape(name, layer, v):
        return v[:, :, :1] if name == "z" and layer == 1 else v  # one head of two

    with pytest.raises(ShapeError, match=r"edit\('z', layer=1\) returned"):
        adapter.trace(toks, edit=wrong_shape)
    assert same_state(model_state(model), before)

    def boom(name, layer, v):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        adapter.trace(toks, edit=boom)
    assert same_state(model_state(model), before)


# ------------------------------------------------------------------ errors
_ARCH = Arch(n_layers=2, n_heads=2, attn_only=True, norm="none", positional="none")
_W = Weights.random(_ARCH, 0)
_T = torch.tensor([[0, 1, 1]])

BAD = [
    (lambda: zero_ablate(_W, Head(2, 0), _T), ComponentError, r"Head\(layer=2, head=0\): layer=2 is out of range; .*n_layers=2"),
    (lambda: zero_ablate(_W, Head(0, 2), _T), ComponentError, r"head=2 is out of range; .*n_heads=2"),
    (lambda: zero_ablate(_W, Head(0, -1), _T), ComponentError, r"head=-1 is out of range"),
    (lambda: zero_ablate(_W, Head(0.0, 0), _T), ComponentError, r"layer=0.0 must be an int"),
    (lambda: zero_ablate(_W, MLP(0), _T), ComponentError, r"MLP\(layer=0\): an attention-only architecture has no MLP"),
    (lambda: zero_ablate(_W, "head 0", _T), ComponentError, r"component='head 0' must be Head\(layer, head\), MLP\(layer\) or Embed\(\)"),
    (lambda: patch(_W, Embed(), _T, source_tokens=_T[:, :2]), ShapeError, r"source_tokens has shape \[1, 2\]; .*\[1, 3\]"),
    (lambda: run_replaced(_W, _T, Head(0, 0), torch.zeros(2, 3, _ARCH.d_head)), ShapeError,
     r"replacement for Head\(layer=0, head=0\) has shape \[2, 3, 4\]; it must be \[1, 3, 4\] or broadcast to it"),
    (lambda: run_replaced(_W, _T, Embed(), torch.zeros(_ARCH.d_model), final_scale=torch.ones(1, 3, 1)), UnsupportedError,
     r"final_scale given, but .* has no final norm"),
    (lambda: zero_ablate("weights", Embed(), _T), UnsupportedError, r"target=str must be Weights, a Reference, an Adapter"),
    (lambda: final_scale(_W, run(_ARCH, _W, _T)), UnsupportedError, r"the trace has no final norm"),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD, ids=[m.split(":")[0][:40] for _, _, m in BAD])
def test_a_bad_intervention_raises_an_error_that_names_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()


class _NoOutputProjection(GPT2Adapter):
    """A family that names no output projection (as a new adapter would before it adds its hook points)."""

    def out_proj(self, layer: int):
        return super(GPT2Adapter, self).out_proj(layer)


def test_a_family_without_hook_points_cannot_intervene_and_says_which():
    arch = GPT2Adapter.project(Arch(n_layers=1, n_heads=2, d_head=2, q_bias=True, k_bias=True, v_bias=True, o_bias=True))
    model = build(arch, Weights.random(arch, 0), "gpt2")
    before = model_state(model)
    with pytest.raises(UnsupportedError, match=r"_NoOutputProjection names no output projection; interventions need out_proj"):
        zero_ablate(_NoOutputProjection(model), Embed(), torch.tensor([[0, 1]]))
    assert same_state(model_state(model), before)
