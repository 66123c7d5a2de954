"""The head signatures' invariances: the QK and OV gauges, an orthogonal change of the residual basis, and scaling.

Every signature of :func:`~circuitproof.numeric.signatures.head_table` is a property of what
heads compute, so a change of weights that leaves the computation as it was must leave it as it
was; scaling moves each as its docstring says:

======================================== ====================================================== ======================
transformation                           expected                                               where
======================================== ====================================================== ======================
QK gauge ``W_Q M, W_K M^{-T}``           every column and every composition pair unchanged      ``M`` commutes with
(``b_Q M, b_K M^{-T}``)                                                                         rotary; ``M = I``
                                                                                                under QK-norm
OV gauge ``W_V N, N^{-1} W_O`` (``b_V N``) every column and every composition pair unchanged    always
residual basis ``x -> x R``              every column, every pair and the logits unchanged      norms as
(:func:`change_of_basis`)                                                                       :func:`change_of_basis`
``W_O -> c W_O`` per head                copying ``-> sign(c) copying``                         ``c != 0``
any of W_Q, W_K, W_V, W_O per head       every composition pair unchanged                       ``c != 0``, any sign
``W_Q, b_Q -> c W_Q, c b_Q``             the table of ``attn_scale -> c attn_scale``            ``c > 0``, no QK-norm
                                         (pattern scores move: not scale invariant)
the same, under QK-norm with ``eps = 0`` the same table                                         ``c > 0``
``W_Q -> 0`` (previous-token head)       previous-token scores fall to the uniform baseline
======================================== ====================================================== ======================

Where a column is not scored (NaN: post-norm, rotary or QK-norm for Q/K composition, no
positions, BERT's transform head) it must be NaN on both sides. The gauges and the change of
basis are also checked on the forward pass (the logits agree to ``RTOL_LOGITS``), so that a
passing signature test is not a transformation that does nothing or something else, and
:func:`test_the_change_of_basis_is_a_symmetry_only_where_the_norms_commute_with_it` shows that
the conditions on the norms are needed.

Tolerances. Every score compared lies in ``[-1, 1]``, so an absolute difference is one
relative to the score's scale: ``ATOL = 1e-9`` (reason in ``ATOL_REASON``). Worst differences
measured (``pytest -s`` prints them), float64, four runs of the thorough profile (300
examples a test): pattern scores <= 3e-14, positional_previous <= 2e-15, copying 2e-11 (OV
gauge; the eigenvalues of ``N^{-1} W_O U E W_V N`` move with the conditioning of its
eigenvectors), composition pairs <= 3e-11 (OV gauge, V-composition: the Gram route of
``composition_scores`` computes ``|W_OV|_F^2`` as ``tr(Gv Go)``, whose rounding is ~eps
``(|W_V| |W_O| / |W_OV|)^2``, large where a head's ``W_V`` and ``W_O`` nearly cancel, as
through a LayerNorm's centring at d_model = 2), logits <= 7e-12 relative. The CI profile
(derandomized, 25 examples) measures <= 1.5e-13. A transformation that broke a score would
move it by far more than 1e-9.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from circuitproof import Arch
from circuitproof.numeric import Weights, circuits, run
from circuitproof.numeric.signatures import COLUMNS, COMPOSITIONS, composition_scores, copying_score, head_table, probe_tokens
from circuitproof.properties._transforms import gauge_matrices, gauged_weights
from circuitproof.properties.strategies import archs, weights

ATOL = 1e-9
ATOL_REASON = ("scores lie in [-1, 1]; float64 (~1e-16 a rounding) through <= 3 layers, gauge matrices of condition <= 12 "
               "(orthogonal R: 1) and an eigen-decomposition: measured <= 3e-11 in four thorough runs (module docstring); "
               "1e-9 leaves room only for rounding")
RTOL_LOGITS = 1e-10  # relative to max |logits|: the claims' float64 tolerance (properties._claim), measured <= 7e-12

_WORST: dict[str, float] = {}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


# ------------------------------------------------------------------ comparison
def _same(label: str, a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    """``a`` and ``b`` NaN at the same places and within ``atol`` elsewhere; the worst difference is kept under ``label``."""
    nan_a, nan_b = a.isnan(), b.isnan()
    assert torch.equal(nan_a, nan_b), f"{label}: scored on one side only:\n{a}\n{b}"
    dev = float((a[~nan_a] - b[~nan_b]).abs().max()) if (~nan_a).any() else 0.0
    _WORST[label] = max(_WORST.get(label, 0.0), dev)
    note(f"{label}: worst |difference| {dev:.3g}")
    assert dev <= atol, f"{label}: |difference| {dev:.3g} > {atol:g} ({ATOL_REASON})\n{a}\n{b}"


def _same_tables(label: str, t1, t2) -> None:
    for c in COLUMNS:
        _same(f"{label} {c}", t1.scores[c], t2.scores[c])
    for name in COMPOSITIONS:  # every pair, not only the max over earlier heads
        _same(f"{label} {name}-composition pairs", t1.composition[name], t2.composition[name])


def _same_logits(label: str, l1: torch.Tensor, l2: torch.Tensor) -> None:
    dev = float((l1 - l2).abs().max()) / max(float(l1.abs().max()), 1e-300)
    _WORST[f"{label} logits (relative)"] = max(_WORST.get(f"{label} logits (relative)", 0.0), dev)
    assert dev <= RTOL_LOGITS, f"{label}: the forward pass changed: relative |difference| of the logits {dev:.3g}"


def _table(arch: Arch, w: Weights, toks: torch.Tensor):
    trace = run(arch, w, toks)
    return head_table(arch, w, trace=trace), trace.logits


# head_table's behavioural columns read repeated sequences (probe_tokens): n_ctx >= 4 gives them a repeat of >= 2 tokens
SMALL = {"max_layers": 3, "max_heads": 4, "max_d_model": 12, "max_d_head": 6, "max_vocab": 10, "n_ctx": st.sampled_from([4, 6, 8])}
SEEDS = st.integers(0, 2**16)


def _probe(arch: Arch, data: st.DataObject) -> torch.Tensor:
    return probe_tokens(arch, batch=2, seed=data.draw(SEEDS, label="probe seed"))


# ------------------------------------------------------------------ 1. the QK and OV gauges
@pytest.mark.parametrize("gauge", ["qk", "ov"])
@given(arch=archs(**SMALL), data=st.data())
def test_every_score_is_unchanged_by_the_qk_and_the_ov_gauge(gauge, arch, data):
    """``W_Q M, W_K M^{-T}`` (``M`` commuting with rotary, ``I`` under QK-norm) or ``W_V N, N^{-1} W_O``: the same table.

    Copying reads the spectrum of ``E W_V N N^{-1} W_O U``; composition the products
    ``W_QK = W_Q M M^{-1} W_K^T`` and ``W_OV``; the positional QK ``P W_Q M (P W_K M^{-T})^T``
    (rotary: ``M`` commutes with ``R_i``); the pattern scores a forward pass that is the same.
    """
    w = data.draw(weights(arch))
    toks = _probe(arch, data)
    M, N, how = gauge_matrices(arch, general_qk=False, seed=data.draw(SEEDS, label="gauge seed"))
    eye = torch.eye(arch.d_head, dtype=torch.float64).expand_as(M)
    M, N = (M, eye) if gauge == "qk" else (eye, N)
    note(f"{gauge} gauge; {how}")
    t1, logits1 = _table(arch, w, toks)
    t2, logits2 = _table(arch, gauged_weights(arch, w, M, N), toks)
    _same_logits(f"{gauge} gauge", logits1, logits2)
    _same_tables(f"{gauge} gauge", t1, t2)


# ------------------------------------------------------------------ 2. an orthogonal change of the residual basis
def orthogonal(d: int, gen: torch.Generator, *, fix_ones: bool = False) -> torch.Tensor:
    """A Haar-random ``[d, d]`` orthogonal matrix; with ``fix_ones``, one drawn among those with ``1 R = 1``.

    ``fix_ones``: ``R = H diag(1, Q) H`` with ``H`` the Householder reflection swapping ``e_1``
    and ``u = 1 / sqrt(d)`` and ``Q`` Haar on the other ``d - 1`` coordinates, so ``u R = u``
    (``H`` is symmetric, ``u H = e_1``).
    """
    def haar(n: int) -> torch.Tensor:
        Q, Rr = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        return Q * torch.sign(torch.diagonal(Rr))  # the sign fix makes Q Haar-distributed

    if not fix_ones:
        return haar(d)
    u = torch.full((d,), d**-0.5, dtype=torch.float64)
    v = torch.zeros(d, dtype=torch.float64)
    v[0] = 1.0
    v = v - u
    H = torch.eye(d, dtype=torch.float64) - 2 * torch.outer(v, v) / (v @ v) if float(v @ v) > 0 else torch.eye(d, dtype=torch.float64)
    inner = torch.eye(d, dtype=torch.float64)
    inner[1:, 1:] = haar(d - 1) if d > 1 else inner[1:, 1:]
    return H @ inner @ H


def _rotated_norms(arch: Arch, w: Weights) -> list[str]:
    """The norm slots that read or write the residual stream (every one but QK-norm and BERT's transform head)."""
    return [n[3:-2] for n in w if n.startswith("ln_") and n.endswith("_w") and n[3:-2] not in ("q", "k", "transform")]


def uniform_gains(arch: Arch, w: Weights) -> Weights:
    """Every residual-stream norm's gain made a scalar per slot and layer (its first entry): ``G = g I`` commutes with any ``R``."""
    return w.replace(**{f"ln_{s}_w": w[f"ln_{s}_w"][..., :1].expand_as(w[f"ln_{s}_w"]).clone() for s in _rotated_norms(arch, w)})


def change_of_basis(arch: Arch, w: Weights, R: torch.Tensor) -> Weights:
    """The weights of the same model in the residual basis ``x' = x R`` (``R`` orthogonal, ``[d_model, d_model]``).

    Everything that writes the stream is right-multiplied by ``R``, everything that reads it
    left-multiplied by ``R^T`` (so ``x' W' = x R R^T W = x W``)::

        W_E R, W_pos R, b_O R, W_O R, W_out R, b_out R, b_N R (a LayerNorm's bias)
        R^T W_Q, R^T W_K, R^T W_V, R^T W_in, R^T W_gate, R^T W_U, R^T W_T (BERT's transform reads the stream)

    ``W_U`` tied (``= W_E^T``) follows ``W_E`` by itself. Untouched: biases of d_head or d_mlp
    width, QK-norm (on d_head), BERT's transform output and its norm (the transform's output
    is a new basis, not the stream's), ``b_U``. The model is unchanged exactly when every norm
    on the stream commutes with ``R``: always without norms; RMSNorm (``|x R| = |x|``) with a
    gain ``g I`` (:func:`uniform_gains`); LayerNorm also needs ``1 R = 1``, since its centring
    ``C = I - 1 1^T / D`` commutes with ``R`` only then (:func:`orthogonal` ``fix_ones``).
    With the transform head the result must be untied (``W_U`` reads the transform's output).
    """
    assert not (arch.unembed_transform and arch.tied), "change_of_basis: a tied W_U after the transform head does not read the stream"
    R = R.to(w.dtype)
    out = {"W_E": w.W_E @ R, "W_Q": R.T @ w.W_Q, "W_K": R.T @ w.W_K, "W_V": R.T @ w.W_V, "W_O": w.W_O @ R}
    for name in ("W_pos", "b_O", "W_out", "b_out"):
        if name in w:
            out[name] = w[name] @ R
    for name in ("W_in", "W_gate", "W_T"):
        if name in w:
            out[name] = R.T @ w[name]
    if not arch.tied:
        out["W_U"] = w.W_U if arch.unembed_transform else R.T @ w.W_U
    for s in _rotated_norms(arch, w):
        if f"ln_{s}_b" in w:
            out[f"ln_{s}_b"] = w[f"ln_{s}_b"] @ R
    return w.replace(**out)


# archs(**SMALL) for each norm, untied where BERT's transform head is on (see change_of_basis); built once
BASIS_ARCHS = {norm: archs(**SMALL, norm=norm).map(lambda a: a.replace(tied=False) if a.unembed_transform else a)
               for norm in ("none", "rmsnorm", "layernorm")}


@pytest.mark.parametrize("norm", ["none", "rmsnorm", "layernorm"])  # each norm drawn: LayerNorm takes its own R
@given(data=st.data())
def test_every_score_is_unchanged_by_an_orthogonal_change_of_the_residual_basis(norm, data):
    """``x -> x R``: the forward pass and every column of the table as they were.

    Norm-free and RMSNorm models take any orthogonal ``R``; LayerNorm models an ``R`` with
    ``1 R = 1`` (its centring commutes with no other), every norm with a uniform gain.
    Copying reads ``E R (R^T W_OV R) R^T U``; composition ``R^T W_OV R`` and ``R^T W_QK R``
    (Frobenius norms unchanged); the positional QK ``P R R^T W_QK R R^T P^T``.
    """
    arch = data.draw(BASIS_ARCHS[norm], label="arch")
    w = uniform_gains(arch, data.draw(weights(arch)))
    toks = _probe(arch, data)
    gen = torch.Generator().manual_seed(data.draw(SEEDS, label="R seed"))
    R = orthogonal(arch.d_model, gen, fix_ones=arch.norm == "layernorm")
    assert torch.allclose(R @ R.T, torch.eye(arch.d_model, dtype=torch.float64), atol=1e-13)
    if arch.norm == "layernorm":
        assert torch.allclose(R.sum(0), torch.ones(arch.d_model, dtype=torch.float64), atol=1e-13)  # 1 R = 1
    t1, logits1 = _table(arch, w, toks)
    t2, logits2 = _table(arch, change_of_basis(arch, w, R), toks)
    _same_logits("basis change", logits1, logits2)
    _same_tables("basis change", t1, t2)


@pytest.mark.parametrize("case", ["layernorm, R moving 1", "rmsnorm, gains not uniform"])
def test_the_change_of_basis_is_a_symmetry_only_where_the_norms_commute_with_it(case):
    """The conditions of :func:`change_of_basis` are needed: without them the forward pass changes by O(1)."""
    norm = "layernorm" if case.startswith("layernorm") else "rmsnorm"
    arch = Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=10, n_ctx=8, norm=norm, attn_only=True, positional="learned")
    w = Weights.random(arch, 0)
    w = uniform_gains(arch, w) if norm == "layernorm" else w  # LayerNorm: uniform gains, so only the centring breaks it
    R = orthogonal(arch.d_model, torch.Generator().manual_seed(0))
    toks = probe_tokens(arch, batch=2)
    assert float((R.sum(0) - 1).abs().max()) > 0.1  # R moves the all-ones vector
    l1, l2 = run(arch, w, toks).logits, run(arch, change_of_basis(arch, w, R), toks).logits
    assert float((l1 - l2).abs().max()) > 1e-2 * float(l1.abs().max())


# ------------------------------------------------------------------ 3. scaling
NOT_POST = lambda a: not (a.has_norm and a.norm_placement == "post")
WEIGHT_ARCHS = archs(max_layers=3, max_heads=4, max_d_model=12, max_d_head=6, max_vocab=10, unembed_transform=False).filter(NOT_POST)


def _factors(data: st.DataObject, shape: tuple[int, ...], label: str, *, signed: bool = True) -> torch.Tensor:
    """``[*shape]`` factors ``+-10^u``, ``u`` in [-1, 1] (a sign each when ``signed``), from a drawn seed."""
    gen = torch.Generator().manual_seed(data.draw(SEEDS, label=label))
    c = 10.0 ** (2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1)
    return c * (torch.randint(0, 2, shape, generator=gen) * 2 - 1) if signed else c


@given(arch=WEIGHT_ARCHS, data=st.data())
def test_the_copying_score_is_unchanged_by_positive_scaling_of_W_OV_and_negated_by_negative(arch, data):
    """``W_O -> c W_O`` per head: the spectrum of ``E c W_OV U`` is ``c lambda``, so ``sum lambda / sum |lambda|`` becomes
    ``sign(c)`` times it (the not-scored threshold scales with ``|c|`` too)."""
    w = data.draw(weights(arch))
    c = _factors(data, (arch.n_layers, arch.n_heads), "c")
    note(f"c = {c}")
    before = copying_score(arch, w)
    after = copying_score(arch, w.replace(W_O=w.W_O * c[..., None, None]))
    _same("scaling W_O: copying * sign(c)", after, torch.sign(c) * before)


@given(arch=WEIGHT_ARCHS, data=st.data())
def test_the_composition_scores_are_unchanged_by_scaling_any_head_matrix_by_any_nonzero_factor(arch, data):
    """``W_Q, W_O`` per query head and ``W_K, W_V`` per key/value head, each by its own ``c != 0`` of either sign: the scores
    are ratios of Frobenius norms."""
    w = data.draw(weights(arch))
    L, H, K = arch.n_layers, arch.n_heads, arch.n_kv_heads
    scaled = w.replace(**{name: w[name] * _factors(data, (L, n), f"c_{name}")[..., None, None]
                          for name, n in (("W_Q", H), ("W_K", K), ("W_V", K), ("W_O", H))})
    before, after = composition_scores(arch, w), composition_scores(arch, scaled)
    for name in COMPOSITIONS:
        _same(f"scaling: {name}-composition pairs", after[name], before[name])


@given(arch=archs(**SMALL, qk_norm="none"), data=st.data())
def test_scaling_the_queries_by_c_is_multiplying_the_attention_scale_by_c(arch, data):
    """``W_Q, b_Q -> c W_Q, c b_Q`` (``c > 0``) multiplies every score ``q k^T`` by ``c`` (rotary is linear in ``q``), as
    ``attn_scale -> c attn_scale`` does: the two tables are the same, the pattern scores and ``positional_previous``
    changed as by an inverse temperature, copying and composition not at all. (Under QK-norm the query's norm
    undoes the factor instead.)"""
    w = data.draw(weights(arch))
    toks = _probe(arch, data)
    c = float(_factors(data, (), "c", signed=False))
    scaled = w.replace(W_Q=c * w.W_Q, **({"b_Q": c * w.b_Q} if "b_Q" in w else {}))
    hot = arch.replace(attn_scale=c * arch.scale)
    t1, _ = _table(arch, scaled, toks)
    t2, _ = _table(hot, Weights(hot, dict(w)), toks)
    _same_tables("W_Q * c vs attn_scale * c", t1, t2)


@given(arch=archs(**SMALL, norm=st.sampled_from(["rmsnorm", "layernorm"]), qk_norm=st.sampled_from(["all_heads", "per_head"]),
                  norm_eps=0.0, d_head=st.sampled_from([2, 4, 6]), attn_only=True), data=st.data())
def test_under_qk_norm_scaling_the_queries_changes_no_score(arch, data):
    """QK-norm divides the query by its own scale, so ``c W_Q, c b_Q`` (one ``c > 0``) reaches the scores unchanged when the
    norm's ``eps`` is 0 (with ``eps > 0`` up to it). With ``eps = 0`` a norm of an exactly zero vector is NaN, so: ``d_head >= 2``
    (even, for rotary) keeps a per-head LayerNorm's variance nonzero, and attention-only keeps a ReLU MLP or BERT's transform
    head from handing a norm a zero vector."""
    w = data.draw(weights(arch))
    toks = _probe(arch, data)
    c = float(_factors(data, (), "c", signed=False))
    scaled = w.replace(W_Q=c * w.W_Q, **({"b_Q": c * w.b_Q} if "b_Q" in w else {}))
    t1, logits1 = _table(arch, w, toks)
    t2, logits2 = _table(arch, scaled, toks)
    _same_logits("QK-norm, W_Q * c", logits1, logits2)
    _same_tables("QK-norm, W_Q * c", t1, t2)


def test_the_pattern_scores_are_not_scale_invariant_a_zero_query_gives_the_uniform_baseline():
    """The previous-token head (``S_ij = c [j = i - 1]``) scores 1; its ``W_Q`` scaled by 0.05 scores less, by 0 exactly the
    uniform pattern's ``mean_{i >= 1} 1 / (i + 1)`` (``_patterns``: a uniform head over ``i + 1`` keys scores ``1 / (i + 1)``)."""
    circ = circuits.previous_token(d_vocab=8, n_ctx=16)
    arch, w = circ.arch, circ.weights
    toks = probe_tokens(arch, batch=2)
    uniform = sum(1 / (i + 1) for i in range(1, toks.shape[1])) / (toks.shape[1] - 1)
    got = {c: head_table(arch, w.replace(W_Q=c * w.W_Q), toks) for c in (1.0, 0.05, 0.0)}
    for column in ("previous_token", "positional_previous"):
        s = {c: float(t.scores[column][0, 0]) for c, t in got.items()}
        assert s[1.0] == pytest.approx(1.0, abs=1e-12)
        assert uniform + 0.05 < s[0.05] < 1.0 - 0.05
        assert s[0.0] == pytest.approx(uniform, rel=1e-12)
    for column in ("copying", "v_composition"):  # the OV side does not read W_Q (one layer: composition is not scored)
        assert torch.equal(got[0.05].scores[column].isnan(), got[1.0].scores[column].isnan())
        assert torch.allclose(got[0.05].scores[column], got[1.0].scores[column], equal_nan=True)
    assert math.isnan(float(got[0.0].scores["q_composition"][0, 0]))
