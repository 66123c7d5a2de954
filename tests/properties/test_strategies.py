"""The public strategies: reprs that reproduce the call, invalid bounds named, and where they shrink.

Strategies validate lazily (on the first draw, as Hypothesis' own do), so the
invalid calls are drawn to raise.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from circuitproof import Arch
from circuitproof.numeric import Trace, Weights
from circuitproof.properties import strategies
from circuitproof.properties.strategies import Model, archs, family_archs, models, tokens, weights

NAMESPACE = {"archs": archs, "weights": weights, "tokens": tokens, "models": models, "family_archs": family_archs, "Arch": Arch,
             "Model": Model, "st": st, "torch": torch}
QUIET = settings(max_examples=50, derandomize=True, database=None, deadline=None, phases=(Phase.generate, Phase.shrink),
                 suppress_health_check=list(HealthCheck))
MINIMAL = Arch(d_model=2, d_head=1, d_mlp=1, d_vocab=2, n_ctx=2, positional="none", norm="none", act="relu", mlp_bias=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def _first(strategy):
    return find(strategy, lambda _: True, settings=QUIET)


def test_public_names():
    assert set(strategies.__all__) == {"archs", "family_archs", "weights", "tokens", "models", "Model"}


# ------------------------------------------------------------------ repr reproduces the call
REPRS = [
    "archs()",
    "archs(max_layers=2, norm='rmsnorm')",
    "archs(max_heads=1, attn_only=True)",
    "weights(Arch(n_layers=2))",
    "tokens(Arch(), max_batch=3)",
    "models()",
    "models(family='reference', norm='none')",
    "models(family='gpt2')",
    "family_archs('llama', max_layers=2)",
]


@pytest.mark.parametrize("call", REPRS)
def test_repr_reproduces_the_call(call):
    strategy = eval(call, NAMESPACE)
    assert repr(strategy) == call
    assert repr(eval(repr(strategy), NAMESPACE)) == call


def test_a_model_repr_is_a_constructor_call():
    model = Model(Arch(n_layers=2, norm="rmsnorm"), seed=7, target="reference")
    assert repr(model) == "Model(Arch(n_layers=2, norm='rmsnorm'), seed=7, target='reference')"
    again = eval(repr(model), NAMESPACE)
    assert again.weights.equal(model.weights)


# ------------------------------------------------------------------ invalid calls raise, naming the argument
INVALID = [
    ("archs(max_layers=0)", "max_layers=0"),
    ("archs(max_heads=0)", "max_heads=0"),
    ("archs(max_d_model=1)", "max_d_model=1"),
    ("archs(max_d_head=1)", "max_d_head=1"),
    ("archs(max_vocab=1)", "max_vocab=1"),
    ("archs(max_layers=1.5)", "max_layers=1.5"),
    ("archs(n_layer=2)", "n_layer"),
    ("weights('gpt2')", "arch='gpt2'"),
    ("tokens(Arch(), max_batch=0)", "max_batch=0"),
    ("tokens(Arch(), min_pos=0)", "min_pos=0"),
    ("tokens(Arch(n_ctx=4), min_pos=5)", "min_pos=5"),
    ("tokens(Arch(), max_batch=True)", "max_batch=True"),  # after tokens(Arch(), max_batch=1) is kept: True is not 1
    ("tokens(Arch(), max_batch=2.0)", "max_batch=2.0"),  # not the default 2
    ("tokens(Arch(), max_batch=[1])", r"max_batch=[1]"),  # unhashable: a fresh strategy
    ("models(family='gpt3')", "family='gpt3'"),
]


@pytest.mark.parametrize("call,named", INVALID, ids=[call for call, _ in INVALID])
def test_an_invalid_bound_raises_value_error_naming_it(call, named):
    if "max_batch=True" in call:
        _first(tokens(Arch(), max_batch=1))  # the strategy for max_batch=1 kept first
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(".", r"\.").replace("[", r"\[")):
        _first(eval(call, NAMESPACE))


def test_an_invalid_model_target_raises():
    with pytest.raises(ValueError, match="target='gpt3'"):
        Model(Arch(), target="gpt3")


# ------------------------------------------------------------------ shrinking
def test_archs_shrink_to_the_simplest_model():
    """One layer, one head, the smallest dimensions, no positions, no norm, no biases, relu MLP without biases."""
    assert _first(archs()) == MINIMAL


@pytest.mark.parametrize("needed,check", [
    ("a.n_layers >= 2", lambda a: a.n_layers == 2 and a.n_heads == 1),
    ("a.n_heads >= 3", lambda a: a.n_heads == 3 and a.n_kv_heads == 1 and a.n_layers == 1),
    ("a.positional == 'rotary'", lambda a: a.d_head == 2 and a.rotary_dim is None and a.n_heads == 1),
    ("a.norm_placement == 'post'", lambda a: a.norm == "layernorm" and not a.final_norm and a.d_model == 2),
    ("a.attn_only", lambda a: a == Arch(d_model=2, d_head=1, d_vocab=2, n_ctx=2, positional="none", norm="none", attn_only=True)),
])
def test_archs_shrink_what_a_property_does_not_need(needed, check):
    found = find(archs(), lambda a: eval(needed, {"a": a}), settings=QUIET)
    assert check(found), repr(found)


def test_weights_shrink_to_seed_zero():
    arch = Arch(n_layers=2)
    assert _first(weights(arch)).equal(Weights.random(arch, 0))


def test_tokens_shrink_to_one_short_sequence():
    toks = _first(tokens(Arch(d_vocab=5), min_pos=2))
    assert toks.shape == (1, 2) and toks.dtype == torch.long and int(toks.max()) < 5


def test_models_shrink_to_the_reference_of_the_simplest_model():
    model = _first(models())
    assert (model.arch, model.seed, model.target) == (MINIMAL, 0, "reference")


def test_family_models_shrink_within_the_family():
    pytest.importorskip("transformers")
    model = _first(models("gpt2"))
    assert model.target == "gpt2" and model.arch.n_layers == 1 and model.arch.n_heads == 1


# ------------------------------------------------------------------ models run
@settings(max_examples=10, deadline=None)
@given(model=models("reference", max_layers=2), data=st.data())
def test_a_reference_model_runs(model, data):
    toks = data.draw(tokens(model.arch))
    trace = model.trace(toks)
    assert isinstance(trace, Trace) and trace.logits.shape == (*toks.shape, model.arch.d_vocab)
    assert model.tolerance[0] == 1e-10


def test_a_family_model_runs_the_real_implementation():
    pytest.importorskip("transformers")
    model = Model(Arch(n_heads=2, d_model=8, d_head=4, q_bias=True, k_bias=True, v_bias=True, o_bias=True), seed=3, target="gpt2")
    toks = torch.tensor([[1, 2, 3]])
    real, ref = model.trace(toks), Model(model.arch, seed=3).trace(toks)
    assert (real.logits - ref.logits).abs().max() < 1e-9 * ref.logits.abs().max()
    assert model.tolerance[0] == 1e-10 and "float64" in model.tolerance[1]
    assert Model(Arch(positional="rotary", norm="rmsnorm", gated=True, mlp_bias=False), target="llama").tolerance[0] == 1e-4


@pytest.mark.parametrize("switch", ["q_bias", "k_bias", "v_bias", "o_bias", "tied", "unembed_bias", "gated", "mlp_bias", "causal"])
def test_each_on_off_switch_is_drawn_and_shrinks_alone(switch):
    """The switches are drawn eight bits to a choice: each one still turns on, and a property needing it shrinks to it alone."""
    wanted = not MINIMAL.causal if switch == "causal" else True
    found = find(archs(), lambda a: getattr(a, switch) == wanted and a.has_mlp, settings=QUIET)  # attention-only: MLP defaults
    assert found == MINIMAL.replace(**{switch: wanted}), repr(found)


def test_tokens_reuse_one_strategy_per_arguments():
    arch = Arch(n_heads=2)
    assert tokens(arch) is tokens(arch) is tokens(arch, max_batch=2)  # an explicit default is the same call
    assert tokens(arch, max_batch=3) is not tokens(arch)
    assert repr(tokens(arch, max_batch=2)) == "tokens(Arch(n_heads=2))"


def test_models_reuse_one_archs_strategy_per_constraints():
    assert strategies._archs({"norm": "none"}) is strategies._archs({"norm": "none"})
    unhashable = strategies._archs({"sliding_layers": [0]})  # a list: a fresh strategy, drawn as usual
    assert repr(unhashable) == "archs(sliding_layers=[0])"
