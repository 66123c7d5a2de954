"""Minimal counterexamples: drop one condition of a claim and Hypothesis finds the simplest model on which it fails.

For each case of :data:`CASES` (a claim, the condition dropped, and ``archs()``
constraints that keep every other condition and violate the dropped one), models are
drawn from ``models("reference", **constraints)``, the claim is checked with
``assume=False`` (its conditions ignored, frozen norm scales bound live), and
``hypothesis.find`` returns the simplest model and tokens on which it FAILs, shrunk
toward one layer, one head, the smallest dimensions and one short sequence.

The search is deterministic: derandomized, no example database, the generate and
shrink phases only, settings built on Hypothesis' ``default`` profile whatever profile
is loaded, and one torch thread. :func:`find_counterexample` caches its result per case
and budget. :func:`circuit_counterexample` checks a claim on a hand-built circuit
(:mod:`circuitproof.numeric.circuits`) instead. ``Counterexample.render()`` gives the
pasteable ``Arch`` repr, its description, the weights, the tokens and the Evidence.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st

from ..arch import Arch
from ..numeric import Weights, run
from ._claim import Claim
from ._evidence import FAIL, Evidence
from .strategies import Model, models, tokens

__all__ = [
    "CASES",
    "MAX_EXAMPLES",
    "Case",
    "Counterexample",
    "circuit_counterexample",
    "claim",
    "find_counterexample",
    "one_torch_thread",
]

MAX_EXAMPLES = 50
_NORMS = st.sampled_from(["layernorm", "rmsnorm"])
_NO_ROTARY = st.sampled_from(["none", "learned"])
_QK = dict(positional=_NO_ROTARY, qk_norm="none")


@dataclass(frozen=True)
class Case:
    """A claim with one condition dropped: ``constraints`` keep every other condition and violate ``dropped``."""

    id: str
    dropped: str
    constraints: Mapping[str, object]

    @property
    def claim_id(self) -> str:
        return self.id.split("/")[0]


def _cases(table: dict[str, tuple[str, dict]]) -> dict[str, Case]:
    return {cid: Case(cid, dropped, constraints) for cid, (dropped, constraints) in table.items()}


# case id (claim id, or claim id/name) -> (the condition dropped, archs() constraints)
CASES: dict[str, Case] = _cases({
    "logits.linear_in_final_resid": ("no final norm: a final LayerNorm", dict(norm="layernorm", norm_placement="pre", final_norm=True,
                                                                              logit_softcap=None, unembed_transform=False)),
    "logits.heads_only": ("attention-only, no biases: an MLP or biases", dict(norm="none", logit_softcap=None)),
    "attention.qk_circuit": ("no rotary: the scores under rotary", dict(positional="rotary", qk_norm="none", attn_softcap=None)),
    "residual.additive": ("no post-norm: the residual add under post-norm", dict(norm=_NORMS, norm_placement="post", parallel=False)),
    "attention.linear_given_pattern": ("frozen norm scales: a head read through a live input norm",
                                       dict(norm=_NORMS, norm_placement="pre")),
    "residual.expansion/post-norm": ("no post-norm", dict(norm=_NORMS, norm_placement="post", parallel=False)),
    "logits.decomposition/post-norm": ("no post-norm", dict(norm=_NORMS, norm_placement="post", parallel=False, logit_softcap=None,
                                                             unembed_transform=False)),
    "logits.decomposition/softcap": ("no logit softcap", dict(norm="none", logit_softcap=st.sampled_from([2.0, 10.0]))),
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
    "patching.direct_effect/final-norm": ("no final norm, or its scale frozen: the final norm live", dict(
        norm=_NORMS, norm_placement="pre", final_norm=True, attn_only=True, logit_softcap=None)),
    "patching.direct_effect/mlp": ("nothing but W_U reads the head: a sequential block's MLP", dict(
        norm="none", attn_only=False, parallel=False, logit_softcap=None)),
    # the seed's own forms (seed_claims)
    "seed.update_rule/parallel": ("sequential blocks: a parallel block's MLP reads x, not x + Attn(x)",
                                  dict(parallel=True, attn_only=False)),
    "seed.update_rule/post-norm": ("no post-norm", dict(norm=_NORMS, norm_placement="post", parallel=False, attn_only=False)),
    "seed.layer_split/output-bias": ("no output bias: b_O", dict(o_bias=True, norm="none")),
    "seed.layer_split/output-norm": ("no norm on a sublayer's output", dict(o_bias=False, norm=_NORMS, norm_placement="output")),
    "seed.logits_linear/unembed-bias": ("no unembedding bias: b_U", dict(unembed_bias=True, final_norm=False, logit_softcap=None,
                                                                          unembed_transform=False)),
    "seed.qk/query-bias": ("no query bias: b_Q", dict(_QK, q_bias=True, attn_softcap=None, attn_scale=None)),
    "seed.qk/scale": ("scale 1/sqrt(d_head): another attention scale", dict(_QK, q_bias=False, attn_softcap=None,
                                                                            attn_scale=st.sampled_from([0.5, 1.0]))),
    "seed.qk/softcap": ("no score softcap", dict(_QK, q_bias=False, attn_softcap=st.sampled_from([1.0, 5.0]), attn_scale=None)),
    "seed.qk.d_model/default-scale": ("scale 1/sqrt(d_model): the default scale 1/sqrt(d_head), d_head != d_model",
                                      dict(_QK, q_bias=False, attn_softcap=None, attn_scale=None)),
    "seed.ov/value-bias": ("no value bias: b_V", dict(v_bias=True, norm="none")),
    "seed.ov/pre-norm": ("the head reads the stream: a pre-norm head reads N(x)", dict(v_bias=False, norm=_NORMS, norm_placement="pre")),
    "seed.head_linear/value-bias": ("no value bias: b_V", dict(v_bias=True, norm="none")),
    "seed.head_linear/layernorm-bias": ("no bias in the attention's input norm: a pre-LayerNorm",
                                        dict(v_bias=False, norm="layernorm", norm_placement="pre")),
    "seed.no_erasure/post-norm": ("no post-norm", dict(norm=_NORMS, norm_placement="post", parallel=False)),
})


def claim(claim_id: str) -> Claim:
    """The claim ``claim_id`` of ``CLAIMS`` or ``SEED_CLAIMS``; KeyError naming both catalogues otherwise."""
    from .claims import CLAIMS
    from .seed_claims import SEED_CLAIMS

    found = CLAIMS.get(claim_id) or SEED_CLAIMS.get(claim_id)
    if found is None:
        raise KeyError(f"no claim {claim_id!r} in CLAIMS or SEED_CLAIMS")
    return found


@dataclass(frozen=True, eq=False)
class Counterexample:
    """A model on which a claim FAILs with a condition dropped: how to rebuild it, the tokens, and the Evidence.

    ``model`` is the drawn :class:`~circuitproof.properties.strategies.Model` (``Weights.random(arch, seed)``),
    or None for a hand-built circuit, whose ``origin`` is the call that builds it.
    """

    case: str
    claim: str
    dropped: str
    arch: Arch
    weights: Weights
    tokens: torch.Tensor
    evidence: Evidence
    origin: str
    model: Model | None = None

    def check(self, *, assume: bool) -> Evidence:
        """The claim checked again on this model and tokens (conditions dropped or assumed)."""
        c = claim(self.claim)
        if self.model is not None:
            return self.model.check(c, self.tokens, assume=assume)
        return c.check(self.arch, self.weights, run(self.arch, self.weights, self.tokens), assume=assume)

    def render(self) -> str:
        """Readable lines: what was dropped, the pasteable Arch, its description, the weights and tokens, the Evidence."""
        return "\n".join([f"{self.case}: counterexample with '{self.dropped}' dropped", f"  {self.arch!r}", f"  {self.arch.describe()}",
                          f"  weights: {self.origin}; tokens {self.tokens.tolist()}", f"  {self.evidence}"])


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """These tensors are tiny: one intra-op thread is ~100x faster than two on a shared, loaded CPU (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@st.composite
def _model_and_tokens(draw: st.DrawFn, constraints: Mapping[str, object]) -> tuple[Model, torch.Tensor]:
    model = draw(models("reference", **constraints), label="model")
    return model, draw(tokens(model.arch), label="tokens")


@functools.cache
def find_counterexample(case: str, *, max_examples: int = MAX_EXAMPLES) -> Counterexample:
    """The simplest model and tokens on which ``CASES[case]``'s claim FAILs with its conditions dropped.

    Raises ``hypothesis.errors.NoSuchExample`` if none is found in ``max_examples`` draws.
    """
    spec = CASES[case]
    c = claim(spec.claim_id)

    def refutes(example: tuple[Model, torch.Tensor]) -> bool:
        model, toks = example
        return model.check(c, toks, assume=False).verdict == FAIL

    # generate and shrink only: the explain phase would rerun the model for every choice to say which ones matter
    budget = settings(settings.get_profile("default"), max_examples=max_examples, derandomize=True, database=None, deadline=None,
                      phases=(Phase.generate, Phase.shrink),
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    with one_torch_thread():
        model, toks = find(_model_and_tokens(spec.constraints), refutes, settings=budget)
        evidence = model.check(c, toks, assume=False)
    return Counterexample(case, spec.claim_id, spec.dropped, model.arch, model.weights, toks, evidence,
                          f"Weights.random(arch, seed={model.seed})", model)


def circuit_counterexample(case: str, claim_id: str, dropped: str, circuit, toks: torch.Tensor) -> Counterexample:
    """``claim_id`` checked with ``assume=False`` on a hand-built :class:`~circuitproof.numeric.circuits.Circuit` and ``toks``."""
    c = claim(claim_id)
    with one_torch_thread():
        evidence = c.check(circuit.arch, circuit.weights, run(circuit.arch, circuit.weights, toks), assume=False)
    return Counterexample(case, claim_id, dropped, circuit.arch, circuit.weights, toks, evidence, f"circuits.{circuit.call}")
