"""``patching.direct_effect``: patching a last-layer head moves the logits by exactly its direct effect, and no more.

The claim patches each last-layer head's ``z`` with its value on other tokens through the target's own forward
pass (the reference's ``edit`` hook; forward hooks on a transformers model) and compares the change of the logits
with the compiled identity ``symbolic.interventions.patching_direct_effect``: ``(h' - h) W_U``, through the final
norm with its scale frozen at the clean run's. It holds on every drawn model where it applies, on the reference and
on the families that can express a direct path (GPT-NeoX and GPT-J: parallel blocks). With the final norm live it
fails: ``hypothesis.find`` shrinks the counterexample to one layer, one head and the smallest dimensions, and the
error it measures is the symbolic refutation's remainder ``(S'_f^{-1} - S_f^{-1}) (x_L - h + h') C G_f W_U``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, Phase, find, given, note, settings
from hypothesis import strategies as st

from circuitproof.numeric import run
from circuitproof.numeric.interventions import Head, Reference, patch
from circuitproof.properties._evidence import FAIL, NOT_APPLICABLE, PASS
from circuitproof.properties.claims import CLAIMS, patch_source
from circuitproof.properties.strategies import models, tokens
from circuitproof.symbolic import compile_expr
from circuitproof.symbolic.interventions import live_final_norm_patching_refutation

CLAIM = CLAIMS["patching.direct_effect"]
PROFILE_EXAMPLES = settings().max_examples
CLAIM_EXAMPLES = 10_000 if PROFILE_EXAMPLES >= 300 else 4 * PROFILE_EXAMPLES
FAMILY_EXAMPLES = max(3, PROFILE_EXAMPLES // 2) if PROFILE_EXAMPLES < 300 else PROFILE_EXAMPLES
SLOW_OR_FILTERED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
DIRECT_FAMILIES = ["gpt_neox", "gptj"]  # parallel blocks: nothing but W_U reads the last layer's heads
OTHER_FAMILIES = ["gpt2", "llama", "qwen2", "bert", "gemma2", "olmo2"]  # a sequential MLP, a post or an output norm
LIVE = dict(norm=st.sampled_from(["layernorm", "rmsnorm"]), norm_placement="pre", final_norm=True, attn_only=True, logit_softcap=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def _applies(model) -> bool:
    return CLAIM.applies(model.arch)[0]


@settings(max_examples=CLAIM_EXAMPLES, suppress_health_check=SLOW_OR_FILTERED)
@given(data=st.data())
def test_patching_a_last_layer_head_moves_the_logits_by_its_direct_effect(data):
    model = data.draw(models("reference", **CLAIM.where).filter(_applies), label="model")
    toks = data.draw(tokens(model.arch), label="tokens")
    evidence = model.check(CLAIM, toks)
    note(str(evidence))
    assert evidence.verdict == PASS, str(evidence)


@pytest.mark.parametrize("family", DIRECT_FAMILIES)
@settings(max_examples=FAMILY_EXAMPLES, suppress_health_check=SLOW_OR_FILTERED)
@given(data=st.data())
def test_it_holds_through_hooks_on_a_transformers_family(family, data):
    pytest.importorskip("transformers")
    model = data.draw(models(family, **CLAIM.where).filter(_applies), label="model")
    toks = data.draw(tokens(model.arch), label="tokens")
    evidence = model.check(CLAIM, toks)
    note(str(evidence))
    assert evidence.verdict == PASS, str(evidence)


@pytest.mark.parametrize("family", OTHER_FAMILIES)
@settings(max_examples=max(2, FAMILY_EXAMPLES // 4), suppress_health_check=SLOW_OR_FILTERED)
@given(data=st.data())
def test_on_the_other_families_it_does_not_apply_and_says_why(family, data):
    pytest.importorskip("transformers")
    model = data.draw(models(family), label="model")
    evidence = model.check(CLAIM, data.draw(tokens(model.arch), label="tokens"))
    assert evidence.verdict == NOT_APPLICABLE and evidence.detail, str(evidence)


# ------------------------------------------------------------------ the live final norm
def _budget(phases=(Phase.generate, Phase.shrink)) -> settings:
    return settings(max_examples=max(50, 2 * PROFILE_EXAMPLES), derandomize=True, database=None, deadline=None, phases=phases,
                    suppress_health_check=SLOW_OR_FILTERED)


@st.composite
def _case(draw, family="reference"):
    model = draw(models(family, **LIVE) if family == "reference" else models(family, **CLAIM.where).filter(_applies), label="model")
    return model, draw(tokens(model.arch), label="tokens")


def _refutes(case) -> bool:
    """The claim fails by far more than rounding: a missing term (relative error above 1000 tolerances)."""
    model, toks = case
    evidence = model.check(CLAIM, toks, assume=False)
    return evidence.verdict == FAIL and evidence.max_rel > 1e3 * evidence.tolerance


def _readable(model, toks, evidence) -> str:
    arch = model.arch
    return "\n".join(["patching.direct_effect: counterexample with 'no final norm, or its scale frozen' dropped (the final norm live)",
                      f"  {arch!r}", f"  {arch.describe()}", f"  weights: Weights.random(arch, seed={model.seed}); tokens {toks.tolist()}",
                      f"  {evidence}"])


def test_with_the_final_norm_live_a_minimal_counterexample():
    model, toks = find(_case(), _refutes, settings=_budget())
    evidence = model.check(CLAIM, toks, assume=False)
    print(_readable(model, toks, evidence))
    arch = model.arch
    assert evidence.verdict == FAIL and evidence.max_rel > 1e3 * evidence.tolerance  # a missing term, not rounding
    assert (arch.n_layers, arch.n_heads, arch.d_model, arch.d_head, arch.d_vocab) == (1, 1, 2, 1, 2), _readable(model, toks, evidence)
    assert toks.shape[0] == 1 and toks.shape[1] <= 2, _readable(model, toks, evidence)
    # the same model with the scale frozen (the claim's own check): exact
    assert model.check(CLAIM, toks).verdict == PASS


def test_the_counterexample_error_is_the_refutation_remainder():
    """On the minimal counterexample, observed change = frozen-scale effect + the refutation's remainder, term by term."""
    model, toks = find(_case(), _refutes, settings=_budget())
    arch, w = model.arch, model.weights
    source = patch_source(toks, arch.d_vocab)
    live = patch(Reference(w), Head(arch.n_layers - 1, 0), toks, source_tokens=source)  # the final norm's scale recomputed
    clean, patched, last = live.clean, live.intervened, arch.n_layers - 1
    gain = 1 + w.ln_final_w if arch.norm_gain == "one_plus_w" else w.ln_final_w
    D = arch.d_model
    env = {"x_{L}": clean.final_resid, "h_{L - 1,h}": clean.head_out[last, :, :, 0],
           "h'_{L - 1,h}": run(arch, w, source).head_out[last, :, :, 0], "W_U": w.W_U, "G_{f}": torch.diag(gain),
           "C": torch.eye(D, dtype=torch.float64) - (1.0 / D if arch.norm == "layernorm" else 0.0),
           "S_{f}^{-1}": torch.diag_embed(1 / clean.norms["final"].scale[..., 0]),
           "S'_{f}^{-1}": torch.diag_embed(1 / patched.norms["final"].scale[..., 0])}
    refutation = live_final_norm_patching_refutation(arch.norm)
    frozen, remainder = compile_expr(refutation.failing.expr)(env), compile_expr(refutation.remainder)(env)
    observed = live.effect
    size = {name: float(t.abs().max()) for name, t in (("observed", observed), ("frozen", frozen), ("remainder", remainder))}
    error = float((frozen + remainder - observed).abs().max()) / max(size.values())
    print(f"observed change {size['observed']:.3e} = frozen-scale effect {size['frozen']:.3e} + remainder {size['remainder']:.3e} "
          f"(rel error {error:.1e})")
    assert error <= 1e-12  # float64 rounding of terms of this size
    assert size["remainder"] > 1e-3 * size["observed"]  # not negligible: the frozen effect is wrong with the norm live


@pytest.mark.parametrize("family", DIRECT_FAMILIES)
def test_a_transformers_family_with_its_final_norm_live_fails_too(family):
    pytest.importorskip("transformers")
    model, toks = find(_case(family), _refutes, settings=_budget(phases=(Phase.generate,)))
    evidence = model.check(CLAIM, toks, assume=False)
    print(_readable(model, toks, evidence))
    assert evidence.verdict == FAIL and evidence.max_rel > 1e3 * evidence.tolerance
    assert model.check(CLAIM, toks).verdict == PASS
