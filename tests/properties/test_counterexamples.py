"""Drop a claim's condition and Hypothesis finds a counterexample, shrunk to a minimal model a person can read.

The cases and the search are the library's (``circuitproof.properties.counterexamples``):
for each conditional claim (of ``CLAIMS`` and ``SEED_CLAIMS``), models are drawn that
satisfy every condition but the dropped one (and violate it), the claim is checked with
``assume=False`` (its conditions ignored, frozen norm scales bound live), and
``hypothesis.find`` returns the simplest model on which it FAILs. The shrunk model must be
minimal: one layer, one head, the smallest dimensions the strategies allow (d_model 2,
d_head 1, or 2 where rotary needs a pair), one short sequence. It is printed as its
pasteable ``Arch`` repr, its one-line description, the tokens, and the measured error
against the tolerance (run ``pytest -s`` to see them).
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from circuitproof.properties._evidence import FAIL, PASS
from circuitproof.properties.claims import CLAIMS
from circuitproof.properties.counterexamples import CASES, find_counterexample
from circuitproof.properties.seed_claims import SEED_CLAIMS

SMALLEST = {"d_model": 2, "d_vocab": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def test_every_conditional_claim_has_a_counterexample_case():
    """Each claim whose conditions can fail has a case (mlp.formula's only condition is having an MLP)."""
    cased = {case.split("/")[0] for case in CASES}
    assert cased <= set(CLAIMS) | set(SEED_CLAIMS)
    conditional = {cid for cid, c in {**CLAIMS, **SEED_CLAIMS}.items() if any(a.name != "always" for a in c.conditions)}
    conditional -= {"mlp.formula"}
    assert conditional <= cased, conditional - cased
    for cid, case in CASES.items():
        assert case.id == cid and case.claim_id == cid.split("/")[0] and case.dropped


@pytest.mark.parametrize("case", sorted(CASES))
def test_dropping_the_condition_gives_a_minimal_counterexample(case):
    found = find_counterexample(case, max_examples=max(50, 2 * settings().max_examples))
    model, toks, evidence = found.model, found.tokens, found.evidence
    claim = {**CLAIMS, **SEED_CLAIMS}[CASES[case].claim_id]
    print(found.render())
    arch = model.arch
    assert evidence.verdict == FAIL and evidence.max_rel > 1e3 * evidence.tolerance  # a missing term, not rounding
    assert (arch.n_layers, arch.n_heads) == (1, 1), found.render()
    assert arch.d_model == SMALLEST["d_model"] and arch.d_vocab == SMALLEST["d_vocab"], found.render()
    assert arch.d_head == (2 if arch.positional == "rotary" else 1), found.render()
    assert toks.shape[0] == 1 and toks.shape[1] <= 2, found.render()
    # the same model satisfies the claim where its conditions hold: the claim itself says NOT_APPLICABLE (or, for frozen
    # scales, PASS): the counterexample is the dropped condition's, not a bug
    assert model.check(claim, toks).verdict in (PASS, "NOT_APPLICABLE")
    # the rendering is what a person pastes back
    lines = found.render().splitlines()
    assert lines[1].strip() == repr(arch) and lines[2].strip() == arch.describe()
    assert f"seed={model.seed}" in lines[3] and str(toks.tolist()) in lines[3] and lines[4].strip() == str(evidence)
