"""Ground truth for the head signatures: each detector against the head built to have it, and against random heads.

Random heads: the first 1,000 heads of ``Weights.random(arch, seed)`` for ``seed = 0, 1, ...``
and small architectures drawn from the same seed (:func:`_random_arch`: 1-2 layers, 1-4
heads with GQA, d_model 8-32, d_head 2-8, every norm and positional kind, n_ctx 16), read on
repeated random sequences of 8 distinct tokens (batch 4). Measured (float64, deterministic):

==================== ================== ========= =========== ============ =====================
detector             constructed head   score     threshold   random max   false positives
==================== ================== ========= =========== ============ =====================
previous_token       previous_token     1.000     0.5         0.260        0 / 1000
duplicate_token      duplicate_token    1.000     0.5         0.250        0 / 1000
induction            induction_circuit  1.000     0.5         0.201        0 / 1000
positional_previous  previous_token     1.000     0.5         0.255        0 / 659 scored
copying              copy_head          1.000     0.9         0.926        1 / 831 (d_head >= 4)
k_composition        induction (4, 64)  0.354     2.5/sqrt(D) 0.233        0 / 1000 (D = 72)
==================== ================== ========= =========== ============ =====================

(the test prints these lines: ``pytest -s``). Thresholds: 0.5 for the attention scores is a
majority of a query's attention on its target (a uniform head gives ~1/(i+1)); 0.9 for the
copying score allows at most 5% of the spectrum's absolute mass off the positive axis
((pos - neg)/(pos + neg) >= 0.9). The copying score is weak at small d_head (a head with
d_head = 1 scores exactly +-1; in this pool 21 of the 169 heads with d_head = 2 score >= 0.9,
against 1 of the 831 with d_head >= 4), so its false-positive rate is measured at d_head >= 4.
Composition scores scale as 1/sqrt(d_model) for random heads (``composition_baseline``), so
the composition detector is compared with random heads of the constructed circuit's d_model;
the hand-built K-composition scores 1/sqrt(2 d_vocab) (its W_QK has the token-to-prev block and
the position-0 push-out, each of Frobenius norm c sqrt(V)), so it stands out only where
2 d_vocab << d_model. The constructed induction model's 100% completion of the repeated half
is tests/numeric/test_circuits.py::test_the_induction_head_attends_after_the_earlier_occurrence_and_predicts_what_followed.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from circuitproof import Arch, ShapeError, UnsupportedError
from circuitproof.numeric import Weights, circuits, run
from circuitproof.numeric.signatures import (
    COLUMNS,
    composition_baseline,
    composition_scores,
    copying_score,
    disagreements,
    effective,
    head_table,
    ov_prediction,
    pattern_score,
    positional_qk,
    probe_tokens,
)
from circuitproof.properties.strategies import archs, weights

N_RANDOM = 1000


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def _random_arch(seed: int) -> Arch:
    r = random.Random(seed)
    kv, group = r.choice([1, 2]), r.choice([1, 2])
    return Arch(n_layers=r.choice([1, 2]), n_heads=kv * group, n_kv_heads=kv, d_model=r.randint(8, 32), d_head=r.choice([2, 4, 6, 8]),
                d_vocab=r.randint(16, 32), n_ctx=16, d_mlp=16, norm=r.choice(["none", "layernorm", "rmsnorm"]),
                positional=r.choice(["learned", "rotary", "none"]), attn_only=r.random() < 0.5, tied=r.random() < 0.5)


@pytest.fixture(scope="module")
def random_heads() -> list[dict]:
    """The first 1,000 random heads' table rows, each with its d_head (module docstring)."""
    rows, seed = [], 0
    while len(rows) < N_RANDOM:
        arch = _random_arch(seed)
        table = head_table(arch, Weights.random(arch, seed), half=8, batch=4, seed=seed)
        rows += [{**row, "d_head": arch.d_head} for row in table.rows()]
        seed += 1
    return rows[:N_RANDOM]


# (column, constructed circuit, its head, threshold, the random heads that are comparable)
DETECTORS = [
    ("previous_token", lambda: circuits.previous_token(8, 16), (0, 0), 0.5, lambda row: True),
    ("duplicate_token", lambda: circuits.duplicate_token(8, 16), (0, 0), 0.5, lambda row: True),
    ("induction", lambda: circuits.induction_circuit(8, 16), (1, 0), 0.5, lambda row: True),
    ("positional_previous", lambda: circuits.previous_token(8, 16), (0, 0), 0.5, lambda row: True),
    ("copying", lambda: circuits.copy_head(8, 16, lam=2.0), (0, 0), 0.9, lambda row: row["d_head"] >= 4),
]


@pytest.mark.parametrize("column, build, where, threshold, comparable", DETECTORS, ids=[d[0] for d in DETECTORS])
def test_each_detector_scores_its_constructed_head_far_above_random_heads(random_heads, column, build, where, threshold, comparable):
    c = build()
    table = head_table(c.arch, c.weights, half=8, batch=4)
    constructed = float(table.scores[column][where])
    scores = torch.tensor([row[column] for row in random_heads if comparable(row)], dtype=torch.float64)
    scores = scores[~scores.isnan()]
    false_positive = float((scores >= threshold).double().mean())
    margin = constructed - float(scores.max())
    print(f"{column}: constructed {constructed:.3f}, threshold {threshold}, random max {float(scores.max()):.3f}, "
          f"false positives {false_positive:.2%} of {len(scores)}, margin over the random max {margin:.3f}")
    assert len(scores) >= 600  # enough random heads are scored to measure a rate
    assert constructed >= threshold and constructed == pytest.approx(1.0, rel=1e-12)  # exact: one-hot attention, lambda I
    assert false_positive <= (0.01 if column == "copying" else 0.0)
    if column != "copying":
        assert margin > 0.5  # far above: every random head below 0.5, the constructed one at 1
    assert [str(h) for h in table.top(column)] == [f"L{where[0]}H{where[1]}"]


def test_the_copying_score_cannot_tell_rank_one_heads_apart():
    """With d_head = 1, E W_OV U has one nonzero eigenvalue, real: every head scores exactly +-1 (documented)."""
    arch = Arch(n_layers=1, n_heads=4, d_model=8, d_head=1, d_vocab=12, norm="none", attn_only=True)
    scores = torch.cat([copying_score(arch, Weights.random(arch, seed)).flatten() for seed in range(25)])
    assert bool((scores.abs() == 1).all()) and 0 < int((scores > 0).sum()) < len(scores)


def test_the_composition_detector_finds_the_k_composition_of_the_induction_circuit_against_random_heads_of_its_width():
    c = circuits.induction_circuit(4, 64)
    D = c.arch.d_model
    scores = composition_scores(c.arch, c.weights)
    k, q, v = (float(scores[n][0, 0, 1, 0]) for n in ("k", "q", "v"))
    assert k == pytest.approx(1 / math.sqrt(2 * 4), rel=1e-12) and q == 0 and v == 0  # K-composed only (module docstring)
    threshold = 2.5 * composition_baseline(D)
    random_k, seed = [], 0
    while len(random_k) < N_RANDOM:
        r = random.Random(seed)
        arch = Arch(n_layers=2, n_heads=r.choice([1, 2, 3, 4]), d_model=D, d_head=r.choice([2, 4, 6, 8]), d_vocab=16,
                    norm=r.choice(["none", "layernorm", "rmsnorm"]), attn_only=True)
        random_k += composition_scores(arch, Weights.random(arch, seed))["k"][0, :, 1, :].flatten().tolist()
        seed += 1
    random_k = torch.tensor(random_k[:N_RANDOM], dtype=torch.float64)
    rms = float(random_k.pow(2).mean().sqrt())
    print(f"k_composition: constructed {k:.3f}, threshold {threshold:.3f} (2.5 / sqrt({D})), random max {float(random_k.max()):.3f}, "
          f"rms {rms:.4f} against the baseline {composition_baseline(D):.4f}, "
          f"false positives {float((random_k >= threshold).double().mean()):.2%}")
    assert k >= threshold and float((random_k >= threshold).double().mean()) == 0.0
    # the documented baseline: E[score^2] = 1 / D; 1,000 draws estimate it to a few percent
    assert rms == pytest.approx(composition_baseline(D), rel=0.1)


def test_the_table_names_the_induction_circuits_previous_token_and_induction_heads():
    c = circuits.induction_circuit(8, 16)
    table = head_table(c.arch, c.weights)
    assert [str(h) for h in table.top("previous_token")] == ["L0H0"] and [str(h) for h in table.top("induction")] == ["L1H0"]
    assert table.scores["previous_token"][0, 0] == 1.0 and table.scores["induction"][1, 0] == 1.0
    assert table.scores["k_composition"][1, 0] > 0 and table.scores["q_composition"][1, 0] == 0
    markdown = table.to_markdown()
    assert markdown.count("\n| L") == 2 and all(c in markdown for c in COLUMNS)


# ------------------------------------------------------------------ the seed's copy-head table
@given(d_vocab=st.integers(2, 10), n_ctx=st.integers(2, 12), lam=st.floats(-3, 3).filter(lambda x: abs(x) > 1e-3),
       gain=st.sampled_from([circuits.GAIN, 3.0, 0.5]), seed=st.integers(0, 2**16))
def test_the_copy_heads_logit_update_is_alpha_lambda_times_the_source_tokens_logit_row(d_vocab, n_ctx, lam, gain, seed):
    """Seed: W_U Delta x_dest = alpha W_U x_source, with W_OV = lambda I on the token subspace.

    Conditions: alpha one-hot (gain c = 50) or given (the pattern's, any gain); no b_V; norm-free.
    Then Delta logits_i = lambda sum_j alpha_ij W_E[t_j] W_U, exactly (W_E[t] W_U is one-hot here).
    """
    c = circuits.copy_head(d_vocab, n_ctx, lam=lam, gain=gain)
    w = c.weights
    toks = torch.randint(0, d_vocab, (2, n_ctx), generator=torch.Generator().manual_seed(seed))
    trace = run(c.arch, w, toks)
    alpha = trace.pattern[0, :, 0]  # [B, P, P]
    update = trace.head_out[0, :, :, 0] @ w.W_U  # [B, P, V]: the head's logit update
    table = lam * alpha @ (w.W_E[toks] @ w.W_U)  # sum_j alpha_ij lambda (W_U applied to x_source's token embedding)
    err = float((update - table).abs().max() / table.abs().max())
    note(f"relative error {err:.3g}")
    assert err <= 1e-12  # float64 rounding of one sum of P one-hot rows
    prediction = ov_prediction(c.arch, w, trace, 0)
    assert torch.equal(prediction.position, torch.zeros_like(update)) and torch.equal(prediction.bias, torch.zeros_like(update))
    assert float((prediction.token - table).abs().max()) <= 1e-12 * float(table.abs().max())
    if gain == circuits.GAIN and n_ctx > 1:  # one-hot: the destination gains exactly lambda on the previous token's logit
        src = toks[:, :-1]
        assert torch.equal(update[:, 1:].gather(-1, src[..., None])[..., 0], torch.full(src.shape, lam, dtype=torch.float64))


def test_the_copy_head_table_misses_exactly_b_V_when_the_head_has_a_value_bias():
    c = circuits.copy_head(6, 8, lam=2.0)
    arch = c.arch.replace(v_bias=True)
    b_V = torch.linspace(-1, 1, arch.d_head, dtype=torch.float64)[None, None]
    w = Weights(arch, {**dict(c.weights), "b_V": b_V})
    toks = torch.tensor([[3, 1, 4, 0, 5, 2]])
    trace = run(arch, w, toks)
    update = trace.head_out[0, :, :, 0] @ w.W_U
    table = 2.0 * trace.pattern[0, :, 0] @ (w.W_E[toks] @ w.W_U)
    remainder = b_V[0, 0] @ w.W_O[0, 0] @ w.W_U  # the seed's condition "no b_V": what it leaves out
    assert float(remainder.abs().max()) > 0.1
    assert float((update - table - remainder).abs().max()) <= 1e-12
    prediction = ov_prediction(arch, w, trace, 0)
    assert float((prediction.bias - remainder).abs().max()) <= 1e-12


def test_the_copy_head_table_holds_with_a_norm_when_the_divisors_are_frozen():
    """RMSNorm with unit gains before the head and before W_U: Delta logits_i = lambda sum_j alpha_ij e_{t_j} / (s_j s_f,i)."""
    c = circuits.copy_head(6, 8, lam=2.0)
    arch = c.arch.replace(norm="rmsnorm")
    ones = {name: torch.ones(shape, dtype=torch.float64) for name, shape in [("ln_attn_in_w", (1, arch.d_model)),
                                                                            ("ln_final_w", (arch.d_model,))]}
    w = Weights(arch, {**dict(c.weights), **ones})
    toks = torch.tensor([[3, 1, 4, 0, 5, 2], [0, 0, 1, 1, 2, 2]])
    trace = run(arch, w, toks)
    s_in, s_f = trace.norms["attn_in"].scale[0], trace.norms["final"].scale  # [B, P, 1]
    alpha = trace.pattern[0, :, 0]
    update = trace.head_out[0, :, :, 0] @ w.W_U / s_f  # the head's direct logit update, divisor frozen
    table = 2.0 * (alpha / s_in.transpose(-1, -2)) @ torch.nn.functional.one_hot(toks, 6).double() / s_f
    assert float((update - table).abs().max()) <= 1e-12 * float(table.abs().max())
    assert float((trace.head_out[0, :, :, 0] @ w.W_U - 2.0 * alpha @ torch.nn.functional.one_hot(toks, 6).double()).abs().max()) > 0.1


# ------------------------------------------------------------------ every route to a quantity agrees
NOT_POST = lambda a: not (a.has_norm and a.norm_placement == "post")


@given(arch=archs(max_layers=2, max_heads=3, max_d_model=12, max_vocab=10, unembed_transform=False).filter(NOT_POST), data=st.data())
def test_the_copying_score_through_d_head_equals_the_full_vocabulary_eigenvalues(arch, data):
    """eig(AB) = eig(BA) on the nonzero part: the [Dh, Dh] route gives the [V, V] circuit's sums."""
    w = data.draw(weights(arch))
    eff = effective(arch, w)
    full = eff.E @ eff.W_V @ eff.W_O @ eff.U  # [L, H, V, V]: the paper's definition, formed here only to check
    lam = torch.linalg.eigvals(full)
    direct = lam.real.sum(-1) / lam.abs().sum(-1)
    ours = copying_score(arch, w)
    scored = ~ours.isnan()
    note(f"{ours} vs {direct}")
    # the zero eigenvalues of the [V, V] matrix come out at ~1e-15 |M| each; 1e-8 bounds V of them in the denominator
    assert torch.allclose(ours[scored], direct[scored], rtol=1e-8, atol=1e-8)


@given(arch=archs(max_layers=3, max_heads=3, max_d_model=12, unembed_transform=False, positional=st.sampled_from(["none", "learned"]),
                  qk_norm="none").filter(NOT_POST), data=st.data())
def test_the_composition_scores_equal_the_papers_frobenius_ratios_of_the_formed_products(arch, data):
    w = data.draw(weights(arch))
    eff = effective(arch, w)
    OV = eff.W_V @ eff.W_O  # [L, H, D, D]
    QK = eff.W_Q @ eff.W_K.transpose(-1, -2)
    ours = composition_scores(arch, w)
    fro = torch.linalg.matrix_norm
    for l1 in range(arch.n_layers):
        for l2 in range(arch.n_layers):
            for h1 in range(arch.n_heads):
                for h2 in range(arch.n_heads):
                    got = {n: float(ours[n][l1, h1, l2, h2]) for n in "qkv"}
                    if l1 >= l2:
                        assert all(math.isnan(g) for g in got.values())
                        continue
                    a, q, o = OV[l1, h1], QK[l2, h2], OV[l2, h2]
                    want = {"q": fro(a @ q) / (fro(a) * fro(q)), "k": fro(a @ q.T) / (fro(a) * fro(q)), "v": fro(a @ o) / (fro(a) * fro(o))}
                    for n in "qkv":  # float64 through a handful of products: 1e-10 leaves room only for rounding
                        assert got[n] == pytest.approx(float(want[n]), rel=1e-10, abs=1e-12), (n, l1, h1, l2, h2)


@given(arch=archs(max_layers=2, max_heads=3, max_d_model=12, norm=st.sampled_from(["layernorm", "rmsnorm"]), norm_placement="pre",
                  embed_norm=False, unembed_transform=False), data=st.data())
def test_the_folded_maps_agree_with_the_properties_layers_compiled_fold(arch, data):
    """``effective`` restates the symbolic fold W <- C G W; ``properties._transforms.folded`` compiles it: they agree."""
    from circuitproof.properties._transforms import folded

    w = data.draw(weights(arch))
    eff = effective(arch, w)
    _, fw, _ = folded(arch, w)
    kv = torch.arange(arch.n_heads) // arch.group_size
    for ours, theirs in ((eff.W_Q, fw.W_Q), (eff.W_K, fw.W_K[:, kv]), (eff.W_V, fw.W_V[:, kv]), (eff.W_O, fw.W_O)):
        assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    centred = eff.U - eff.U.mean(-1, keepdim=True)  # folded also centres W_U over the vocabulary; ours does not
    assert torch.allclose(centred, fw.W_U, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ invalid calls name what was wrong
_LEARNED = Arch(norm="none", attn_only=True)
_W = Weights.random(_LEARNED, 0)
INVALID = [
    ("positional_qk(positional='none')", lambda: positional_qk(_LEARNED.replace(positional="none"), Weights.random(
        _LEARNED.replace(positional="none"), 0)), UnsupportedError, "positional='none'"),
    ("positional_qk(n_pos=n_ctx+1)", lambda: positional_qk(_LEARNED, _W, n_pos=17), ValueError, "n_pos=17"),
    ("effective(post-norm)", lambda: effective(Arch(norm_placement="post"), Weights.random(Arch(norm_placement="post"), 0)),
     UnsupportedError, "norm_placement='post'"),
    ("probe_tokens(half=1)", lambda: probe_tokens(_LEARNED, half=1), ValueError, "half=1"),
    ("probe_tokens(half>d_vocab)", lambda: probe_tokens(Arch(d_vocab=3, n_ctx=16), half=4), ValueError, "half=4"),
    ("pattern_score(no repeats)", lambda: pattern_score("induction", torch.full((1, 1, 1, 3, 3), 1 / 3), torch.tensor([[0, 1, 2]])),
     ValueError, "no query a induction target"),
    ("pattern_score(unknown)", lambda: pattern_score("copying", torch.ones(1, 1, 1, 2, 2), torch.tensor([[0, 0]])),
     ValueError, "name='copying'"),
    ("pattern_score(shape)", lambda: pattern_score("previous_token", torch.ones(1, 1, 3, 3), torch.tensor([[0, 0]])),
     ShapeError, "pattern"),
    ("ov_prediction(layer=1)", lambda: ov_prediction(_LEARNED, _W, run(_LEARNED, _W, torch.tensor([[1, 2]])), 0, layer=1),
     UnsupportedError, "layer=1"),
    ("ov_prediction(head)", lambda: ov_prediction(_LEARNED, _W, run(_LEARNED, _W, torch.tensor([[1, 2]])), 3), ValueError, "head=3"),
    ("composition_baseline(0)", lambda: composition_baseline(0), ValueError, "d_model=0"),
    ("top(unknown)", lambda: head_table(_LEARNED, _W).top("induction_score"), ValueError, "column='induction_score'"),
    ("disagreements(threshold)", lambda: disagreements(_LEARNED, _W, threshold=1.5), ValueError, "threshold=1.5"),
]


@pytest.mark.parametrize("call, error, match", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_calls_raise_the_named_error(call, error, match):
    with pytest.raises(error, match=match.replace("(", r"\(").replace("[", r"\[")):
        call()


def test_not_scored_columns_say_why():
    post = Arch(norm_placement="post")
    table = head_table(post, Weights.random(post, 0))
    assert all(table.scores[c].isnan().all() for c in ("copying", "positional_previous", "k_composition"))
    assert "post" in table.notes["copying"] and not table.scores["previous_token"].isnan().any()
    rotary = Arch(n_layers=2, positional="rotary")
    table = head_table(rotary, Weights.random(rotary, 0))
    assert table.scores["q_composition"].isnan().all() and "rotary" in table.notes["q_composition"]
    assert not table.scores["v_composition"][1].isnan().any() and not table.scores["positional_previous"].isnan().any()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_real_models_weights_and_trace_give_the_reference_table(family):
    """``adapt(model).weights`` round-trip exactly, so the weight-based columns agree to rounding; the behavioural columns read the
    model's own patterns, which some families compute partly in float32 (measured <= 3e-8 apart; 1e-6 is well below any threshold)."""
    pytest.importorskip("transformers")
    from circuitproof.numeric.adapters import adapt, adapter_class, build

    pinned = {k: v for k, v in adapter_class(family).pinned.items() if not k.startswith("_") and not isinstance(v, st.SearchStrategy)}
    sizes = {"n_layers": 2, "n_heads": 2, "d_model": 8, "d_head": 4, "d_vocab": 12, "n_ctx": 16, "d_mlp": 8}
    arch = adapter_class(family).project(Arch(**{**sizes, **pinned}))
    assert adapter_class(family).cannot_express(arch) is None
    w = Weights.random(arch, 0)
    adapter = adapt(build(arch, w, family))
    toks = probe_tokens(arch, half=6, batch=2)
    ours, theirs = head_table(arch, w, toks), head_table(adapter.arch, adapter.weights, trace=adapter.trace(toks))
    for column in COLUMNS:
        tol = 1e-6 if column in ("previous_token", "duplicate_token", "induction") else 1e-12
        assert torch.allclose(ours.scores[column], theirs.scores[column], rtol=0, atol=tol, equal_nan=True), column
    assert ours.notes == theirs.notes


def test_the_public_surface_resolves_and_the_package_never_imports_sympy():
    import subprocess
    import sys

    import circuitproof.numeric.signatures as sig

    assert all(hasattr(sig, name) for name in sig.__all__) and len(set(sig.__all__)) == len(sig.__all__)
    code = "import sys, circuitproof.numeric.signatures; assert 'sympy' not in sys.modules, 'signatures imported sympy'"
    subprocess.run([sys.executable, "-c", code], check=True)
