"""Path expansion of attention-only transformers: the (1+H)^L terms, their count by induction, two-layer composition.

Numeric checks evaluate the proved expressions (compile_expr) on random float64
tensors and compare with a direct computation; tolerance 1e-12 relative to the
scale of the compared tensors (float64 rounding of sums of a few hundred products
of O(1) entries is ~1e-14; 1e-12 leaves a margin and still catches any dropped term).
"""

from __future__ import annotations

import itertools
import math
import time

import pytest
import sympy as sp
import torch

from circuitproof import Arch, ShapeError
from circuitproof.symbolic import DerivationError, Identity, Rule, Step, compile_expr, is_zero, paths
from circuitproof.symbolic import _atoms as at
from circuitproof.symbolic._induction import DEPTH

RTOL = 1e-12


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = max(a.abs().max().item(), b.abs().max().item(), 1.0)
    assert (a - b).abs().max().item() <= RTOL * scale, f"max error {(a - b).abs().max().item():.3e} at scale {scale:.3e}"


def _terms(identity: Identity) -> tuple:
    return identity.rhs.args if isinstance(identity.rhs, sp.MatAdd) else (identity.rhs,)


@pytest.mark.parametrize("L,H", list(itertools.product(range(4), range(1, 5))))
def test_path_expansion_has_one_plus_h_to_the_l_terms(L, H):
    identity = paths.path_expansion(L, H)
    terms = _terms(identity)
    assert identity.lhs == at.stream(L)
    assert len(terms) == len(set(terms)) == (1 + H) ** L
    assert len(identity.steps) == 2 * L  # one checked rule application and one checked expansion per layer
    by_heads = {k: sum(1 for t in terms if len(paths.path_heads(t)) == k) for k in range(L + 1)}
    assert by_heads == {k: math.comb(L, k) * H**k for k in range(L + 1)}
    kinds = [paths.path_kind(t) for t in terms]
    assert kinds.count("direct") == 1 and kinds.count("single-head") == L * H
    assert kinds.count("virtual-head") == (1 + H) ** L - 1 - L * H
    for t in terms:  # a path's heads run through increasing layers, its patterns mirror its OV weights
        heads = paths.path_heads(t)
        assert [l for l, _ in heads] == sorted({l for l, _ in heads})
        assert t == paths.path_term(heads)


def test_the_largest_expansion_builds_in_a_few_seconds():
    start = time.perf_counter()
    paths.path_expansion.__wrapped__(3, 4)  # uncached
    assert time.perf_counter() - start < 20, "L = 3, H = 4 should build in a few seconds"


def test_a_dropped_path_term_is_rejected():
    good = paths.path_expansion(2, 2)
    terms = _terms(good)
    dropped = sp.MatAdd(*[t for t in terms if t != paths.path_term(((0, 1), (1, 0)))])
    with pytest.raises(DerivationError, match="not at the rhs"):
        Identity("wrong", "", good.lhs, dropped, good.steps)
    # the same term dropped inside a step: the expansion step does not follow
    steps = list(good.steps)
    steps[-1] = Step(dropped, "distributivity, one term lost")
    with pytest.raises(DerivationError, match=r"step 4 \('distributivity, one term lost'\) does not follow[\s\S]*remainder"):
        Identity("wrong", "", good.lhs, dropped, tuple(steps))


def test_a_pattern_on_the_wrong_side_is_rejected():
    x0, A, W = at.stream(0), at.pattern(0, 0), paths.ov(0, 0)
    rule = paths.layer_update(0, 1)
    with pytest.raises(ShapeError):  # W_OV mixes features, A positions: x_0 W_OV A does not even have a shape
        Identity("wrong", "", at.stream(1), x0 + x0 * W * A, (Step(x0 + x0 * W * A, "A on the right", rule),))
    with pytest.raises(DerivationError):  # A^T attends from keys to queries: a different matrix
        Identity("wrong", "", at.stream(1), x0 + A.T * x0 * W, (Step(x0 + A.T * x0 * W, "A transposed", rule),))
    Identity("right", "", at.stream(1), x0 + A * x0 * W, (Step(x0 + A * x0 * W, "the update", rule),))


@pytest.mark.parametrize("L,H", [(1, 1), (2, 3), (3, 2)])
def test_path_expansion_evaluates_like_the_layers(L, H):
    """The proved rhs, compiled, equals the stream computed layer by layer on random float64 tensors."""
    g = torch.Generator().manual_seed(L * 10 + H)
    P, d = 5, 4
    env = {at.stream(0).name: torch.randn(P, d, generator=g, dtype=torch.float64)}
    x = env[at.stream(0).name]
    for l in range(L):
        update = torch.zeros_like(x)
        for h in range(H):
            A = torch.softmax(torch.randn(P, P, generator=g, dtype=torch.float64), -1)
            W = torch.randn(d, d, generator=g, dtype=torch.float64) / d
            env[at.pattern(l, h).name], env[paths.ov(l, h).name] = A, W
            update = update + A @ x @ W
        x = x + update
    _close(compile_expr(paths.path_expansion(L, H).rhs)(env), x)


def test_path_count_is_proved_by_induction():
    proof = paths.path_count()
    assert proof.lhs == sp.Function("N")(DEPTH) and proof.rhs == (1 + paths.HEADS) ** DEPTH
    base, step, *recurrences = proof.parts
    assert base.lhs == sp.Function("N")(0) and step.lhs == sp.Function("N")(DEPTH + 1)
    assert [s.rule.kind for s in step.steps] == ["lemma", "hypothesis"]
    assert "once unchanged and once through each head" in step.steps[0].why
    assert [r.id for r in recurrences] == ["paths.recurrence[L=0,H=1]", "paths.recurrence[L=1,H=2]", "paths.recurrence[L=2,H=2]"]
    for L in range(4):
        for H in range(1, 5):
            assert proof.rhs.subs({DEPTH: L, paths.HEADS: H}) == len(_terms(paths.path_expansion(L, H)))


@pytest.mark.parametrize("L,H", [(0, 3), (1, 2), (2, 2), (2, 3)])
def test_the_recurrence_behind_the_count(L, H):
    """N(L+1) = (1+H) N(L): x_{L+1}'s terms are x_L's, plus A_{L,h} t W_OV^{L,h} for each head, all distinct."""
    below, above = set(_terms(paths.path_expansion(L, H))), set(_terms(paths.path_expansion(L + 1, H)))
    through = {at.pattern(L, h) * t * paths.ov(L, h) for t in below for h in range(H)}
    assert len(through) == H * len(below) and not (through & below)
    assert above == below | through
    rec = paths.path_recurrence(L, H)
    assert is_zero(rec.rhs - paths.path_expansion(L + 1, H).rhs)


def test_a_wrong_recurrence_is_rejected():
    N, H = sp.Function("N"), paths.HEADS
    lemma = Rule("too few paths", "lemma", {N(DEPTH + 1): H * N(DEPTH)})
    ih = Rule("induction hypothesis", "hypothesis", {N(DEPTH): (1 + H) ** DEPTH})
    with pytest.raises(DerivationError):
        Identity("wrong", "", N(DEPTH + 1), (1 + H) ** (DEPTH + 1),
                 (Step(H * N(DEPTH), "each path through a head only", lemma), Step(H * (1 + H) ** DEPTH, "hypothesis", ih)))


@pytest.mark.parametrize("H0,H1", [(1, 1), (2, 2), (3, 2), (2, 3)])
def test_two_layer_composition_terms_are_named_by_where_layer_0_sits(H0, H1):
    comp = paths.two_layer_composition(H0, H1)
    assert len(comp.scores) == len(comp.ov) == H1
    for h in range(H1):
        groups = comp.terms[h]
        assert {k: len(v) for k, v in groups.items()} == {"direct": 1, "Q": H0, "K": H0, "QK": H0 * H0, "ov_direct": 1, "V": H0}
        for kind, terms in groups.items():
            assert all(paths.composition_kind(t) == kind for t in terms), kind
        # Q: a layer-0 OV on the query (left) side; K: transposed on the key (right) side
        q = groups["Q"][0]
        assert paths.composition_kind(q) == "Q" and paths.ov(0, 0) in q.args and paths.ov(0, 0).T not in q.args
        k = groups["K"][0]
        assert paths.ov(0, 0).T in k.args and at.pattern(0, 0).T in k.args
        scores, ov = comp.scores[h], comp.ov[h]
        assert scores.lhs == at.atom("scores", "S", at.P, at.P, 1, h) and len(scores.rhs.args) == 4
        assert ov.lhs == at.head(1, h) and len(ov.rhs.args) == 2
        # the scores equal the sum of the named terms (the identity's last step names the groups)
        assert is_zero(scores.steps[-2].expr - sp.MatAdd(*[t for kind in paths.SCORE_KINDS for t in groups[kind]]))


def test_v_composition_terms_are_the_virtual_heads_of_the_path_expansion():
    comp = paths.two_layer_composition(3, 3)
    virtual = [t for t in _terms(paths.path_expansion(2, 3)) if paths.path_kind(t) == "virtual-head"]
    assert sorted(map(str, virtual)) == sorted(str(t) for h in range(3) for t in comp.terms[h]["V"])


def test_a_dropped_k_composition_term_is_rejected():
    comp = paths.two_layer_composition(2, 1)
    good = comp.scores[0]
    steps = list(good.steps)
    groups = comp.terms[0]
    lost = sp.MatAdd(*[t for kind in paths.SCORE_KINDS for t in groups[kind] if t != groups["K"][1]])
    steps[2] = Step(lost, "distributivity, a K-composition term lost")
    with pytest.raises(DerivationError, match="K-composition term lost"):
        Identity("wrong", "", good.lhs, good.rhs, tuple(steps))


def test_composition_scores_evaluate_like_the_model():
    """scale x_1 W_QK x_1^T computed directly equals the compiled sum of direct, Q, K and QK terms; the write likewise."""
    from circuitproof.symbolic.attention import SCALE

    g = torch.Generator().manual_seed(7)
    P, d, H0 = 6, 5, 2
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    env = {at.stream(0).name: r(P, d), SCALE.name: 0.37, paths.qk(1, 0).name: r(d, d), paths.ov(1, 0).name: r(d, d),
           at.pattern(1, 0).name: torch.softmax(r(P, P), -1)}
    x1 = env[at.stream(0).name].clone()
    for a in range(H0):
        env[at.pattern(0, a).name], env[paths.ov(0, a).name] = torch.softmax(r(P, P), -1), r(d, d)
        x1 = x1 + env[at.pattern(0, a).name] @ env[at.stream(0).name] @ env[paths.ov(0, a).name]
    comp = paths.two_layer_composition(H0, 1)
    groups = comp.terms[0]
    scores = sum(compile_expr(t)(env) for kind in paths.SCORE_KINDS for t in groups[kind])
    _close(scores, 0.37 * x1 @ env[paths.qk(1, 0).name] @ x1.mT)
    write = sum(compile_expr(t)(env) for kind in paths.OV_KINDS for t in groups[kind])
    _close(write, env[at.pattern(1, 0).name] @ x1 @ env[paths.ov(1, 0).name])


def test_assumptions_select_the_attention_only_toy():
    identity = paths.path_expansion(2, 2)
    assert identity.applies(Arch(n_layers=2, n_heads=2, attn_only=True, norm="none", positional="none"))[0]
    ok, why = identity.applies(Arch(n_layers=2, n_heads=2))
    assert not ok and "attention-only" in why
    assert identity.frozen == ("A",)


def test_general_is_the_catalogue_share():
    ids = [i.id for i in paths.general()]
    assert "paths.count" in ids and "paths.attention_only[L=3,H=2]" in ids and "paths.composition.ov[h=1]" in ids
