"""Evaluating a claim's instances together is evaluating them one by one: the same errors, the same worst place.

Instances of one derivation (every head's) are bound as stacks and evaluated once
(``_evaluate``); each is still measured on its own. These tests hold the grouped route
to the one-by-one route (per instance, as ``Claim.check`` did before grouping) and
to the definition of the error, and the kept traces and bindings to fresh ones.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuitproof import Arch
from circuitproof.numeric import Weights, run
from circuitproof.properties import _evaluate
from circuitproof.properties._bindings import bind_claim, bind_group, pad_group
from circuitproof.properties._claim import Context
from circuitproof.properties._evidence import PASS
from circuitproof.properties.claims import CLAIMS
from circuitproof.properties.strategies import Model, models, tokens

INF = float("inf")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


# ------------------------------------------------------------------ the error, by its definition
def _by_definition(lhs, rhs, magnitude=None):
    """(max abs, rel, worst index) of one instance, written out: NaN is infinite, equal infinities agree."""
    a, b = torch.broadcast_tensors(torch.as_tensor(lhs, dtype=torch.float64), torch.as_tensor(rhs, dtype=torch.float64))
    diff = [0.0 if x == y else (INF if math.isnan(abs(x - y)) else abs(x - y)) for x, y in zip(a.flatten().tolist(), b.flatten().tolist())]

    def finite_max(t):
        return max([abs(v) for v in torch.as_tensor(t).flatten().tolist() if math.isfinite(v)], default=0.0)

    scale = max(finite_max(b), finite_max(magnitude) if magnitude is not None else 0.0) or finite_max(a)
    worst = max(diff)
    rel = 0.0 if worst == 0 else (worst / scale if scale > 0 else INF)
    return worst, rel, tuple(int(i) for i in torch.unravel_index(torch.tensor(diff.index(worst)), a.shape))


T = torch.tensor
ERRORS = [  # (lhs, rhs, magnitude), one instance each
    (T([[1.0, 2.0], [3.0, 4.0]]), T([[1.0, 2.5], [3.0, 4.0]]), None),
    (T([[0.0, -INF], [1.0, 2.0]]), T([[0.0, -INF], [1.0, 2.0]]), None),  # a masked score on both sides agrees
    (T([[0.0, -INF], [1.0, 2.0]]), T([[0.0, 1.0], [1.0, 2.0]]), None),  # an infinity against a number: infinite error
    (T([[float("nan"), 1.0]]), T([[0.0, 1.0]]), None),  # NaN: infinite error
    (T([[1e-6, 1.0]]), T([[0.0, 1.0]]), T([[5.0, 1.0]])),  # measured against the magnitude of the terms
    (T([[1e-6, 0.0]]), T([[0.0, 0.0]]), None),  # nothing in rhs: the scale of lhs
    (T([[0.0]]), 0.0, None),  # a side that is the number 0 (a ZeroMatrix)
    (T([[1.0, 2.0]]), T([[1.0, 2.0]]), T([[3.0, INF]])),  # an infinite magnitude is left out of the scale
]


@pytest.mark.parametrize("lhs,rhs,magnitude", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_the_error_of_one_instance_is_its_definition(lhs, rhs, magnitude):
    (measured,), locate = _evaluate.errors(lhs[None], rhs, magnitude, 1, 2, 2)
    worst, rel, index = _by_definition(lhs, rhs, magnitude)
    assert measured == (worst, rel)
    assert locate(0) == (index, tuple(torch.broadcast_shapes(lhs.shape, torch.as_tensor(rhs).shape)))


def test_stacked_instances_are_measured_one_by_one():
    """Three instances on a leading axis, the rhs shared, each with its own scale and worst place."""
    lhs = T([[[1.0, 2.0]], [[1.0, 9.0]], [[1.5, 2.0]]])  # [N=3, 1, 2]
    rhs, magnitude = T([[1.0, 2.0]]), T([[[1.0, 2.0]], [[1.0, 20.0]], [[1.0, 2.0]]])
    measured, locate = _evaluate.errors(lhs, rhs, magnitude, 3, 2, 2)
    for i in range(3):
        worst, rel, index = _by_definition(lhs[i], rhs, magnitude[i])
        assert measured[i] == (worst, rel) and locate(i) == (index, (1, 2))


# ------------------------------------------------------------------ grouped = one by one, on drawn models
def _one_by_one(claim, model, toks):
    """Every instance of ``claim`` bound and measured alone (the route before grouping)."""
    trace = dataclasses.replace(model.trace(toks))  # nothing kept from the grouped route
    ctx = Context(model.arch, model.weights, trace, lambda a, w: run(a, w, toks), True)
    instances = claim.instances(model.arch)
    if claim.prepare is not None:
        claim.prepare(ctx, instances)
    out, unbound, skipped = {}, [], []

    def miss(inst, err):
        (skipped if inst.optional else unbound).append(f"{inst.label}: {err}")

    _evaluate._one_by_one(list(enumerate(instances)), ctx, False, out, miss)
    return [out[i] for i in sorted(out)], unbound, skipped


GROUPED = [cid for cid in CLAIMS if cid.startswith("attention.") or cid == "mlp.formula"]


@pytest.mark.parametrize("claim_id", GROUPED)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_grouped_evaluation_equals_one_by_one(claim_id, data):
    claim = CLAIMS[claim_id]
    model = data.draw(models("reference", max_heads=3, **claim.where).filter(lambda m: claim.applies(m.arch)[0]), label="model")
    toks = data.draw(tokens(model.arch), label="tokens")
    trace = model.trace(toks)
    ctx = Context(model.arch, model.weights, trace, lambda a, w: run(a, w, toks), True)
    instances = claim.instances(model.arch)
    if claim.prepare is not None:
        claim.prepare(ctx, instances)
    grouped, unbound, skipped = _evaluate.evaluate_instances(instances, ctx, live=False)
    alone, unbound_alone, skipped_alone = _one_by_one(claim, model, toks)
    assert (unbound, skipped) == (unbound_alone, skipped_alone)
    assert [(g.label, g.layer, g.head) for g in grouped] == [(a.label, a.layer, a.head) for a in alone]
    for g, a in zip(grouped, alone):
        # a stacked product may round differently in the last bits: equal to 1e-13 of the scale, far below the 1e-10 tolerance
        assert g.rel == pytest.approx(a.rel, rel=1e-6, abs=1e-13)
        if a.rel > 1e-12:  # an error above rounding: the same size, at the same place
            assert g.max_abs == pytest.approx(a.max_abs, rel=1e-6) and g.locate() == a.locate()


def test_a_group_binds_shared_atoms_once_and_stacks_the_rest():
    """Every head of layer 0 reads the same input (bound once); their patterns and weights are stacked [N, 1.., *shape]."""
    arch = Arch(n_layers=1, n_heads=3, d_model=8, d_head=4, q_bias=True)
    model, toks = Model(arch, seed=1), torch.tensor([[1, 2, 3], [3, 2, 1]])
    trace = model.trace(toks)
    instances = CLAIMS["attention.ov_circuit"].instances(arch)
    env, ranks = bind_group([i.atoms for i in instances], arch, model.weights, trace)
    env = pad_group(env, ranks, len(instances))
    singles = [bind_claim(i.atoms, arch, model.weights, dataclasses.replace(trace)) for i in instances]
    for name in instances[0].atoms:
        values = [s[name] for s in singles]
        if all(i.atoms[name] == instances[0].atoms[name] for i in instances):  # the same kind and indices for every head
            assert torch.equal(env[name], values[0]), name
        else:
            stacked = torch.stack(values)
            assert env[name].shape == (3,) + (1,) * (3 - values[0].dim()) + tuple(values[0].shape), name
            assert torch.equal(env[name].reshape(stacked.shape), stacked), name
        assert ranks[name] == values[0].dim()


# ------------------------------------------------------------------ the kept trace and check_all
def test_a_model_keeps_the_trace_of_the_same_tokens_and_runs_other_tokens_afresh():
    model = Model(Arch(n_layers=2, n_heads=2), seed=3)
    a = model.trace(torch.tensor([[1, 2, 3]]))
    assert model.trace(torch.tensor([[1, 2, 3]])) is a  # equal ids in another tensor: the same trace
    assert model.trace(torch.tensor([1, 2, 3])) is not a  # another shape ([P], not [1, P]): another key
    b = model.trace(torch.tensor([[1, 2, 4]]))
    assert b is not a and not torch.equal(b.logits, a.logits)
    assert torch.equal(b.logits, run(model.arch, model.weights, torch.tensor([[1, 2, 4]])).logits)
    from circuitproof.numeric._kept import _KEPT_MAX
    from circuitproof.properties._model import _KEEP_TRACES

    for i in range(_KEPT_MAX + 1):  # only the last few are kept, by the model and with its weights (numeric._kept)
        model.trace(torch.tensor([[i % 16, i // 16 % 16, i // 256, 0]]))
    assert len(model._traces) == _KEEP_TRACES
    assert model.trace(torch.tensor([[1, 2, 3]])) is not a


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models("reference", max_layers=2), data=st.data())
def test_check_all_equals_checking_each_claim_on_a_fresh_model(model, data):
    toks = data.draw(tokens(model.arch))
    claims = list(CLAIMS.values())
    together = model.check_all(claims, toks)
    fresh = Model(model.arch, model.seed)
    assert together == [fresh.check(claim, toks) for claim in claims]
    assert together == model.check_all(claims, toks)  # again, on the kept trace and bindings
    assert any(e.verdict == PASS for e in together)


# the forward passes a claim adds to the trace's own where it applies: a rerun with transformed weights (gauge, folding),
# every head's intervention as a copy in one batched pass (ablation), and the source run before it (patching)
_PASSES = {"attention.gauge": 1, "norm.folding": 1, "ablation.direct_effect": 1, "patching.direct_effect": 2}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models("reference"), data=st.data())
def test_check_all_runs_each_forward_pass_it_needs_once(model, data):
    """The trace once for every claim, and each rerun or intervention once, whatever the number of heads (the speed
    of the catalogue is a count of operations: benchmarks/claims_per_second.py)."""
    from unittest import mock

    from circuitproof.numeric import _kept, reference
    from circuitproof.properties import _model

    toks = data.draw(tokens(model.arch))
    claims = list(CLAIMS.values())
    _kept._KEPT.clear()  # nothing kept from an earlier example: every pass this check needs is run here
    _model._random_weights.cache_clear()
    fresh = Model(model.arch, model.seed)
    with mock.patch.object(reference, "_forward", side_effect=reference._forward) as forward:
        evidence = fresh.check_all(claims, toks)
    needed = 1 + sum(n for claim_id, n in _PASSES.items() if CLAIMS[claim_id].applies(model.arch)[0])
    assert forward.call_count == needed, [(e.claim, e.verdict) for e in evidence]
    with mock.patch.object(reference, "_forward", side_effect=reference._forward) as forward:
        assert fresh.check_all(claims, toks) == evidence
    # again on the same tokens: the trace and the reruns with transformed weights are kept; the interventions run again
    again = sum(n for claim_id, n in _PASSES.items() if claim_id in ("ablation.direct_effect", "patching.direct_effect")
                and CLAIMS[claim_id].applies(model.arch)[0])
    assert forward.call_count == again


def test_bindings_are_kept_with_the_trace_and_not_with_a_replaced_one():
    from circuitproof.numeric.bind import bound_atoms

    model = Model(Arch(n_heads=2), seed=0)
    trace = model.trace(torch.tensor([[0, 1]]))
    env = bind_claim({"x_{0}": ("stream", (0,))}, model.arch, model.weights, trace)
    assert bound_atoms(trace, model.weights)[("stream", (0,), False)] is env["x_{0}"]
    assert bind_claim({"x_{0}": ("stream", (0,))}, model.arch, model.weights, trace)["x_{0}"] is env["x_{0}"]
    assert bound_atoms(dataclasses.replace(trace), model.weights) == {}


def test_tokens_changed_in_place_get_a_fresh_trace():
    model = Model(Arch(n_heads=2), seed=1)
    toks = torch.tensor([[1, 2, 3]])
    before = model.trace(toks)
    assert model.trace(toks) is before
    toks[0, 0] = 4
    after = model.trace(toks)
    assert after is not before and torch.equal(after.tokens, torch.tensor([[4, 2, 3]]))
    assert torch.equal(before.tokens, torch.tensor([[1, 2, 3]]))  # the kept trace has its own tokens
    assert model.trace(torch.tensor([[1, 2, 3]])) is before


def test_models_of_one_architecture_and_seed_share_weights_and_reference_runs():
    """Hypothesis draws an architecture, seed and tokens many times over: the weights and the reference's pass are kept."""
    arch, toks = Arch(n_heads=2, norm="rmsnorm"), torch.tensor([[1, 2, 3]])
    one, two = Model(arch, seed=5), Model(arch, seed=5)
    assert one.weights is two.weights and one.weights.equal(Weights.random(arch, 5))
    assert Model(arch, seed=6).weights is not one.weights
    trace = one.trace(toks)
    assert two.trace(torch.tensor([[1, 2, 3]])) is trace
    assert Model(arch, seed=5, dtype=torch.float32).trace(toks).resid_pre.dtype == torch.float32
    with torch.inference_mode():  # a pass made in inference mode holds inference tensors: never handed out of it
        inside = Model(arch, seed=5).trace_of(arch, one.weights, toks)
    assert inside is not trace and inside.resid_pre.is_inference() and not trace.resid_pre.is_inference()
    assert one.trace_of(arch, one.weights, toks) is trace  # the same weights and tokens, outside inference mode: the same pass
    fresh = run(arch, Weights.random(arch, 5), toks)
    assert all(torch.equal(fresh.tensors()[k], v) for k, v in trace.tensors().items())


def test_a_kept_group_plan_binds_another_trace_as_a_fresh_plan_does():
    """``group_plan`` depends on the instances alone: kept from one trace, it binds the next exactly as a fresh one."""
    from circuitproof.properties._bindings import group_plan

    model = Model(Arch(n_layers=2, n_heads=4, n_kv_heads=2, norm="layernorm", q_bias=True, k_bias=True), seed=3)
    atoms = [inst.atoms for inst in CLAIMS["attention.ov_circuit"].instances(model.arch)]
    plan = group_plan(atoms)
    assert len({token for _, shared, _, token, _ in plan if shared is None}) == sum(shared is None for _, shared, _, _, _ in plan)
    bind_group(atoms, model.arch, model.weights, model.trace(torch.tensor([[0, 1, 2]])), plan=plan)  # used once
    trace = model.trace(torch.tensor([[2, 0, 1]]))
    kept, ranks = bind_group(atoms, model.arch, model.weights, trace, plan=plan)
    fresh, fresh_ranks = bind_group(atoms, model.arch, model.weights, dataclasses.replace(trace))
    assert ranks == fresh_ranks and kept.keys() == fresh.keys()
    assert all(torch.equal(torch.as_tensor(kept[name]), torch.as_tensor(fresh[name])) for name in kept)


# ----------------------------------------------------------------------------- comparisons with a magnitude
def test_a_comparison_is_measured_against_the_larger_of_its_rhs_and_its_magnitude():
    """``rel = max|lhs - rhs| / max(max|rhs|, max|magnitude|)``, per comparison and per (layer, head); a wrong value still fails."""
    from circuitproof.properties._claim import Comparison

    rhs = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    lhs = rhs + torch.tensor([[1e-6, 0.0], [0.0, 0.0]], dtype=torch.float64)
    big = torch.full((2, 1), 1e4, dtype=torch.float64)  # a row magnitude, broadcast over the columns
    plain, scaled = _evaluate.evaluate_comparisons([Comparison("p", lhs, rhs), Comparison("p", lhs, rhs, magnitude=big)])
    assert plain.rel == pytest.approx(1e-6, rel=1e-9) and scaled.rel == pytest.approx(1e-10, rel=1e-9)
    wrong = _evaluate.evaluate_comparisons([Comparison("p", rhs.flip(-1), rhs, magnitude=big)])[0]
    assert wrong.rel == pytest.approx(1e-4, rel=1e-9)  # an O(1) error stays O(1 / magnitude), far above any float64 tolerance
    per = Comparison("q", torch.stack([lhs, rhs])[:, None], torch.stack([rhs, rhs])[:, None], per=("layer", "head"),
                     magnitude=torch.tensor([1e4, 1.0]).reshape(2, 1, 1, 1))  # [L=2, H=1, 2, 2]
    first, second = _evaluate.evaluate_comparisons([per])
    assert (first.layer, first.rel) == (0, pytest.approx(1e-10, rel=1e-9)) and (second.layer, second.rel) == (1, 0.0)
    with pytest.raises(ValueError, match="magnitude's leading"):
        _evaluate.evaluate_comparisons([dataclasses.replace(per, magnitude=torch.ones(3, 1, 1, 1))])


def test_the_gauge_passes_where_large_scores_round_the_pattern():
    """Found by the ci profile: scores of 8e6 make the gauged run's pattern differ by 1.9e-9 (u |s|), which the claim
    measures against the scores' row magnitude (``softmax_magnitude``), not the pattern's own size of 1."""
    model = Model(Arch(n_layers=3, n_heads=4, d_model=5, d_head=2, d_mlp=2, d_vocab=2, n_ctx=6, n_kv_heads=1, sliding_window=1,
                       sliding_layers=(0,), positional="none", norm="none", gated=True, act="relu", mlp_bias=False, embed_scale=2.0),
                  seed=18310)
    toks = torch.tensor([[0, 1, 1, 0, 1]])
    assert float(model.trace(toks).scores.abs().max()) > 1e6
    evidence = model.check(CLAIMS["attention.gauge"], toks)
    assert evidence.verdict == PASS, str(evidence)
    assert evidence.max_abs > 1e-10  # the pattern did move by more than the tolerance: the scale is what changed
