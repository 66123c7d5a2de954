"""Drop a claim's condition and Hypothesis finds a counterexample, shrunk to a minimal model a person can read.

For each conditional claim, models are drawn that satisfy every condition but
the dropped one (and violate it), the claim is checked with ``assume=False``
(its conditions ignored, frozen norm scales bound live), and ``hypothesis.find``
returns the simplest model on which it FAILs. The shrunk model must be minimal:
one layer, one head, the smallest dimensions the strategies allow (d_model 2,
d_head 1, or 2 where rotary needs a pair), one short sequence. It is printed as
its pasteable ``Arch`` repr, its one-line description, the tokens, and the
measured error against the tolerance (run ``pytest -s`` to see them).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st

from circuitproof.properties._evidence import FAIL, PASS
from circuitproof.properties.claims import CLAIMS
from circuitproof.properties.strategies import models, tokens

_NORMS = st.sampled_from(["layernorm", "rmsnorm"])
# claim id -> (the condition dropped, archs() constraints: every other condition kept, the dropped one violated)
DROPPED = {
    "logits.linear_in_final_resid": ("no final norm: a final LayerNorm", dict(norm="layernorm", norm_placement="pre", final_norm=True,
                                                                              logit_softcap=None, unembed_transform=False)),
    "logits.heads_only": ("attention-only, no biases: an MLP or biases", dict(norm="none", logit_softcap=None)),
    "attention.qk_circuit": ("no rotary: the scores under rotary", dict(positional="rotary", qk_norm="none", attn_softcap=None)),
    "residual.additive": ("no post-norm: the residual add under post-norm", dict(norm=_NORMS, norm_placement="post", parallel=False)),
    "attention.linear_given_pattern": ("frozen norm scales: a head read through a live input norm",
                                       dict(norm=_NORMS, norm_placement="pre")),
}
# the other conditional claims, each with one condition dropped (the id after '/' names the case)
MORE = {
    "residual.expansion/post-norm": ("no post-norm", dict(norm=_NORMS, norm_placement="post", parallel=False)),
    "logits.decomposition/post-norm": ("no post-norm", dict(norm=_NORMS, norm_placement="post", parallel=False, logit_softcap=None,
                                                             unembed_transform=False)),
    "logits.heads_only/output-norm": ("no norm on a sublayer's output (the symbolic identity's assumptions miss it)",
                                      dict(attn_only=True, o_bias=False, v_bias=False, unembed_bias=False, logit_softcap=None,
                                           final_norm=False, norm=_NORMS, norm_placement=st.sampled_from(["post", "output"]))),
    "attention.key_bias_invariance/rotary": ("no rotary: b_K rotated by the key's position",
                                             dict(positional="rotary", qk_norm="none", attn_softcap=None, k_bias=True)),
    "attention.gauge/rotary": ("M commuting with rotary: a general M under rotary", dict(positional="rotary", qk_norm="none")),
    "paths.attention_only/mlp": ("attention-only: an MLP", dict(attn_only=False, norm="none", v_bias=False, o_bias=False)),
    "ablation.direct_effect/mlp": ("nothing but W_U reads the head: a sequential block's MLP", dict(
        norm="none", attn_only=False, parallel=False, logit_softcap=None)),
    "ablation.direct_effect/final-norm": ("no final norm: a live final norm", dict(norm=_NORMS, norm_placement="pre", final_norm=True,
                                                                                  attn_only=True, logit_softcap=None)),
    "norm.folding/softcap": ("no logit softcap: centring under a softcap", dict(norm_placement="pre", logit_softcap=2.0)),
}
CASES = {**DROPPED, **MORE}
SMALLEST = {"d_model": 2, "d_vocab": 2}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tensors are tiny: one intra-op thread is ~100x faster than two on a shared, loaded CPU (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@st.composite
def _case(draw, constraints):
    model = draw(models("reference", **constraints), label="model")
    return model, draw(tokens(model.arch), label="tokens")


def _readable(case: str, model, toks, evidence) -> str:
    arch = model.arch
    return "\n".join([f"{case}: counterexample with '{CASES[case][0]}' dropped",
                      f"  {arch!r}", f"  {arch.describe()}", f"  weights: Weights.random(arch, seed={model.seed}); tokens {toks.tolist()}",
                      f"  {evidence}"])


def test_every_conditional_claim_has_a_counterexample_case():
    """Each claim whose conditions can fail has a case (mlp.formula's only condition is having an MLP)."""
    cased = {case.split("/")[0] for case in CASES}
    assert cased <= set(CLAIMS)
    conditional = {cid for cid, c in CLAIMS.items() if any(a.name != "always" for a in c.conditions)} - {"mlp.formula"}
    assert conditional <= cased, conditional - cased


@pytest.mark.parametrize("case", sorted(CASES))
def test_dropping_the_condition_gives_a_minimal_counterexample(case):
    claim_id = case.split("/")[0]
    claim, (dropped, constraints) = CLAIMS[claim_id], CASES[case]

    def refutes(case) -> bool:
        model, toks = case
        return model.check(claim, toks, assume=False).verdict == FAIL

    # generate and shrink only: the explain phase would rerun the model for every choice to say which ones matter
    budget = settings(max_examples=max(50, 2 * settings().max_examples), derandomize=True, database=None, deadline=None,
                      phases=(Phase.generate, Phase.shrink),
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    model, toks = find(_case(constraints), refutes, settings=budget)
    evidence = model.check(claim, toks, assume=False)
    print(_readable(case, model, toks, evidence))
    arch = model.arch
    assert evidence.verdict == FAIL and evidence.max_rel > 1e3 * evidence.tolerance  # a missing term, not rounding
    assert (arch.n_layers, arch.n_heads) == (1, 1), _readable(case, model, toks, evidence)
    assert arch.d_model == SMALLEST["d_model"] and arch.d_vocab == SMALLEST["d_vocab"], _readable(case, model, toks, evidence)
    assert arch.d_head == (2 if arch.positional == "rotary" else 1), _readable(case, model, toks, evidence)
    assert toks.shape[0] == 1 and toks.shape[1] <= 2, _readable(case, model, toks, evidence)
    # the same model satisfies the claim where its conditions hold: the claim itself says NOT_APPLICABLE (or, for frozen
    # scales, PASS): the counterexample is the dropped condition's, not a bug
    assert model.check(claim, toks).verdict in (PASS, "NOT_APPLICABLE")
