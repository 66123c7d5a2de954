"""Every claim holds on every drawn model where it applies: on the reference and on each transformers family.

Each claim is checked by its own Hypothesis test on reference models drawn where
it applies (``models("reference", **claim.where)``, filtered by ``claim.applies``):
4x the active profile's ``max_examples`` a claim (ci: 100), and 10,000 under the
thorough profile. Each transformers family then draws models it can express and
checks every claim on the family's own forward pass (a subset of examples: building
a model costs ~30 ms). Tolerances are the target's (``Model.tolerance``): 1e-10 in
float64, 1e-4 where an implementation computes some steps in float32 whatever its
dtype, each with its reason in the Evidence.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from circuitproof import Arch
from circuitproof.numeric import Weights, run
from circuitproof.properties._evidence import FAIL, INCONCLUSIVE, NOT_APPLICABLE, PASS, VERDICTS, Evidence
from circuitproof.properties.claims import CLAIMS, Claim
from circuitproof.properties.strategies import models, tokens

PROFILE_EXAMPLES = settings().max_examples
# ci/dev: 4x the profile a claim (ci: 100); the thorough profile (>= 300): 10,000 a claim
CLAIM_EXAMPLES = 10_000 if PROFILE_EXAMPLES >= 300 else 4 * PROFILE_EXAMPLES
FAMILY_EXAMPLES = max(3, PROFILE_EXAMPLES // 2) if PROFILE_EXAMPLES < 300 else PROFILE_EXAMPLES
SLOW_OR_FILTERED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
FAMILIES = ["gpt2", "bert", "llama", "gptj", "qwen2", "gpt_neox", "gemma2", "olmo2"]

DESIGN_IDS = {
    "embedding.x0", "residual.additive", "residual.expansion", "attention.head_sum", "attention.qk_circuit",
    "attention.key_bias_invariance", "attention.ov_circuit", "attention.linear_given_pattern", "attention.gauge", "mlp.formula",
    "logits.linear_in_final_resid", "logits.decomposition", "logits.heads_only", "paths.attention_only", "ablation.direct_effect",
    "norm.folding", "patching.direct_effect",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def test_the_catalogue_covers_every_design_claim():
    assert set(CLAIMS) == DESIGN_IDS
    for cid, claim in CLAIMS.items():
        assert isinstance(claim, Claim) and claim.id == cid
        assert claim.statement and claim.source and claim.holds_when and claim.conditions


SHAPES = [
    Arch(n_layers=2, n_heads=2, attn_only=True, norm="none", positional="none"),
    Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, q_bias=True, k_bias=True, v_bias=True, o_bias=True, embed_norm=True),
    Arch(n_heads=2, n_kv_heads=1, positional="rotary", norm="rmsnorm", gated=True, act="silu", mlp_bias=False, parallel=True),
]


@pytest.mark.parametrize("claim_id", sorted(CLAIMS))
def test_a_claim_states_every_assumption_of_the_identities_it_evaluates(claim_id):
    """Every identity a claim evaluates is a checked derivation that renders; ``applies`` may be stricter than its
    assumptions (an identity that misses a condition), never laxer."""
    claim = CLAIMS[claim_id]
    names = {a.name for a in claim.conditions}
    for arch in SHAPES:
        for identity in claim.identities(arch):
            assert identity.steps and identity.render("text")
            missing = {a.name for a in identity.assumptions if a.name != "always"} - names
            assert not missing, f"{claim_id} evaluates {identity.id}, which assumes {missing}"


def _applies(claim: Claim):
    return lambda model: claim.applies(model.arch)[0]


@pytest.mark.parametrize("claim_id", sorted(CLAIMS))
@settings(max_examples=CLAIM_EXAMPLES, suppress_health_check=SLOW_OR_FILTERED)
@given(data=st.data())
def test_the_claim_holds_on_the_reference(claim_id, data):
    claim = CLAIMS[claim_id]
    model = data.draw(models("reference", **claim.where).filter(_applies(claim)), label="model")
    toks = data.draw(tokens(model.arch), label="tokens")
    evidence = model.check(claim, toks)
    note(str(evidence))
    assert evidence.verdict == PASS, str(evidence)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=FAMILY_EXAMPLES, suppress_health_check=SLOW_OR_FILTERED)
@given(data=st.data())
def test_every_claim_holds_on_a_transformers_family(family, data):
    pytest.importorskip("transformers")
    model = data.draw(models(family), label="model")
    toks = data.draw(tokens(model.arch), label="tokens")
    evidences = [model.check(claim, toks) for claim in CLAIMS.values()]
    for evidence in evidences:
        note(str(evidence))
    bad = [str(e) for e in evidences if e.verdict not in (PASS, NOT_APPLICABLE)]
    assert not bad, "\n".join(bad)
    assert any(e.verdict == PASS for e in evidences)


# ------------------------------------------------------------------ Evidence and check, directly
GPT2_LIKE = Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, q_bias=True, k_bias=True, v_bias=True, o_bias=True, act="gelu_tanh")


def _trace(arch: Arch, seed: int = 0):
    w = Weights.random(arch, seed)
    return w, run(arch, w, torch.randint(0, arch.d_vocab, (2, 5), generator=torch.Generator().manual_seed(seed)))


def test_evidence_states_the_tolerance_its_reason_and_where():
    w, trace = _trace(GPT2_LIKE)
    evidence = CLAIMS["attention.ov_circuit"].check(GPT2_LIKE, w, trace)
    assert evidence.verdict == PASS and evidence.tolerance == 1e-10 and "float64" in evidence.tolerance_reason
    assert evidence.where.layer is not None and evidence.where.head is not None and evidence.where.position is not None
    assert str(evidence).startswith("PASS attention.ov_circuit: rel ") and "\n" not in str(evidence)


def test_a_claim_that_does_not_apply_says_why():
    w, trace = _trace(GPT2_LIKE)
    evidence = CLAIMS["logits.linear_in_final_resid"].check(GPT2_LIKE, w, trace)
    assert evidence.verdict == NOT_APPLICABLE and "final norm" in evidence.detail and evidence.max_rel is None


def test_a_trace_without_an_atom_is_inconclusive_never_pass():
    """A trace that did not observe the MLP output cannot check mlp.formula: INCONCLUSIVE with the reason."""
    import dataclasses

    w, trace = _trace(GPT2_LIKE)
    blind = dataclasses.replace(trace, mlp_out=None)
    evidence = CLAIMS["mlp.formula"].check(GPT2_LIKE, w, blind)
    assert evidence.verdict == INCONCLUSIVE and "MLP output" in evidence.detail


def test_a_wrong_trace_fails_with_the_place():
    """Corrupt one head's write at layer 1, head 0, batch 1, position 2: attention.head_sum fails there."""
    import dataclasses

    w, trace = _trace(GPT2_LIKE)
    head_out = trace.head_out.clone()
    head_out[1, 1, 2, 0] += 1.0
    evidence = CLAIMS["attention.head_sum"].check(GPT2_LIKE, w, dataclasses.replace(trace, head_out=head_out))
    assert evidence.verdict == FAIL and evidence.max_rel > 1e-3
    assert (evidence.where.layer, evidence.where.batch, evidence.where.position) == (1, 1, 2)


def test_verdicts_are_validated():
    with pytest.raises(ValueError, match="verdict='MAYBE'"):
        Evidence("x", "MAYBE")
    assert set(VERDICTS) == {PASS, FAIL, NOT_APPLICABLE, INCONCLUSIVE}


def test_a_result_small_by_cancellation_is_measured_against_what_cancelled():
    """One position, a score of 6e-6 from terms of O(1): its 6e-16 rounding error is 1e-10 of the score, 1e-16 of the terms.

    Found by the thorough profile; the error is relative to the magnitude of the terms (symbolic._compile.compile_magnitude).
    """
    from circuitproof.properties.strategies import Model

    model = Model(Arch(n_layers=3, n_heads=3, d_model=17, d_head=7, d_mlp=1, d_vocab=22, n_ctx=2, n_kv_heads=1, o_bias=True,
                       final_norm=False, embed_norm=True, parallel=True, act="relu", mlp_bias=False), seed=23355)
    evidence = model.check(CLAIMS["attention.qk_circuit"], torch.tensor([[15]]))
    assert evidence.verdict == PASS and evidence.max_rel < 1e-14, str(evidence)


def test_a_pattern_is_measured_against_the_scores_that_made_it():
    """Three norm-free layers with a wide MLP: scores of 5.6e5, so rounding in them (1e-16 relative) moves the pattern by
    ~1e-10 absolute. Found by the thorough profile (rel 4.9e-10 against the pattern's scale 1); a softmax's error is
    relative to the largest magnitude of its scores' row (symbolic._compile.compile_magnitude)."""
    from circuitproof.properties.strategies import Model

    model = Model(Arch(n_layers=3, n_heads=2, d_model=3, d_head=3, d_mlp=62, d_vocab=3, n_ctx=2, n_kv_heads=1, positional="none",
                       norm="none", gated=True, act="relu", embed_scale=2.0), seed=43796)
    toks = torch.tensor([[2, 2]])
    assert model.trace(toks).scores.abs().max() > 1e5
    evidence = model.check(CLAIMS["attention.key_bias_invariance"], toks)
    assert evidence.verdict == PASS and evidence.max_abs > 1e-11 and evidence.max_rel < 1e-14, str(evidence)
