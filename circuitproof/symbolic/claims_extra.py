"""The identities that the claims catalogue evaluates and the rest of the symbolic layer does not state concretely.

Each is a checked derivation like the others (row convention, one sequence, ``P``
positions), cached (an Identity is immutable). The per-layer and per-head ones take
their indices as arguments, by default the symbols ``l`` and ``h``: one derivation
serves every head, and the numeric layer substitutes the concrete indices when it
binds the atoms:

========================================= ==========================================================
builder                                   equation
========================================= ==========================================================
:func:`embedding_x0`                      ``x_0 = N_e(m (T W_E + W_pos[:P]))``, ``T`` one-hot tokens
:func:`additive_at`                       ``x_{l+1} = x_l + a_l + m_l`` for one concrete ``l``
:func:`qk_pattern`                        ``A = softmax(scale (X W_QK X^T + bias terms) + M)``
:func:`key_bias_invariance`               ``A = softmax(scale (X W_QK X^T + 1 b_Q W_K^T X^T) + M)``: no b_K
:func:`mlp_formula`                       ``mlp = act(X W_in + 1 b_in) W_out + 1 b_out`` (gated: ``act(X W_gate + 1 b_gate) * ...``)
:func:`head_affine`                       ``h(x + y) = h(x) + h(y) - h(0)`` with the pattern and the input norm's scale frozen
:func:`gauge_scores`, :func:`gauge_ov`    ``W_Q M, W_K M^{-T}`` (and biases) keep ``q k^T``; ``W_V N, N^{-1} W_O`` keep the write
:func:`direct_effect_rerun`               ``logits(head ablated) - logits = -h_{L-1,k} W_U``
:func:`fold_and_centre_final`             log-softmax unchanged by folding the norm before ``W_U`` and centring it
========================================= ==========================================================

``M`` is the attention mask (0 where a key is visible, ``-inf`` elsewhere), ``X``
what the attention reads, ``T`` the ``P x d_vocab`` one-hot matrix of the tokens.
Opaque elementwise and row-wise functions (activations, a norm's standardisation)
are :class:`~circuitproof.symbolic.seed.Apply` nodes named by :func:`activation` and
:func:`standardize` (:mod:`._compile_extra` gives them their numeric meaning with
array methods only, no torch import, as :mod:`.norms` gives softmax and log-softmax theirs).
"""

from __future__ import annotations

import functools

import sympy as sp

from . import _atoms as at
from ._compile_extra import activation, standardize  # noqa: F401 (re-exported)
from ._core import ALWAYS, Assumption, Identity, Rule, Step
from .attention import NO_ROTARY, NO_SOFTCAP, SCALE, qk_circuit
from .logits import NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD
from .norms import PRE_NORM, LogSoftmax, Softmax, centre_unembedding, fold_layernorm, fold_rmsnorm, shift_invariance
from .residual import NO_POST_NORM, contribution, update_rules

__all__ = ["activation", "standardize", "embedding_x0", "additive_at", "mask",
           "qk_pattern", "key_bias_invariance", "mlp_formula", "head_affine", "gauge_scores", "gauge_ov", "direct_effect_rerun",
           "fold_and_centre_final", "EMBED_SCALE", "DIRECT_PATH", "FROZEN_SCALE"]

EMBED_SCALE = sp.Symbol("embed_scale", positive=True)
L_IDX, H_IDX = sp.Symbol("l", integer=True, nonnegative=True), sp.Symbol("h", integer=True, nonnegative=True)
DIRECT_PATH = Assumption(
    "nothing reads the last layer's heads but the unembedding",
    "a sequential block's MLP reads x + attn, and an output, sandwich or post norm rescales the write: "
    "the ablated head then changes more than its own term",
    lambda arch: (arch.attn_only or arch.parallel) and (not arch.has_norm or arch.norm_placement == "pre"),
)
FROZEN_SCALE = Assumption(
    "norm scales frozen", "a live norm divides its input by the input's own scale, which is not affine",
    lambda arch: True,  # the identity freezes the scale by construction; dropping it binds the scales live
)


# ------------------------------------------------------------------ embedding
@functools.lru_cache(maxsize=32)
def embedding_x0(learned: bool, embed_norm: str = "none", eps: float = 1e-5) -> Identity:
    """``embedding.x0``: ``x_0 = N_e(m (T W_E + W_pos[:P]))`` (``W_pos`` only with learned positions).

    ``T`` (``P x d_vocab``) is the one-hot matrix of the tokens, so ``T W_E`` stacks
    the rows ``W_E[t_p]``; ``m`` is the embedding multiplier; ``N_e`` the embedding
    norm, ``N_e(e) = std(e) G_e + 1 b_e``, or the identity without one.
    """
    x0, T, W_E, one = at.stream(0), at.atom("onehot", "T", at.P, at.D_VOCAB), at.weight("W_E"), at.ones()
    rows = at.atom("token_rows", "W_E[t]", at.P, at.D_MODEL)
    pos = at.atom("positions", "W_{pos}[:P]", at.P, at.D_MODEL)
    e = at.atom("embed", "e", at.P, at.D_MODEL)

    def n_e(arg):
        if embed_norm == "none":
            return arg
        gain, bias = at.atom("embed_gain", "G_{e}", at.D_MODEL, at.D_MODEL), at.atom("embed_bias", "b_{e}", 1, at.D_MODEL)
        normed = standardize(embed_norm, eps, arg) * gain
        return normed + one * bias if embed_norm == "layernorm" else normed

    summed = rows + pos if learned else rows
    steps = (Step(n_e(e), "definition: x_0 is the embedding after the embedding norm (the identity without one)",
                  Rule("the embedding norm", "definition", {x0: n_e(e)}, "x_0 = N_e(e)")),
             Step(n_e(EMBED_SCALE * summed), "definition: e = m (W_E[t] + W_pos[p])",
                  Rule("the embedding", "definition", {e: EMBED_SCALE * summed}, "e = m (W_E[t] + W_pos[p])")),
             Step(n_e(EMBED_SCALE * (T * W_E + pos if learned else T * W_E)), "a token's row is its one-hot row times W_E",
                  Rule("one-hot rows", "definition", {rows: T * W_E}, "W_E[t] = onehot(t) W_E")))
    return Identity("embedding.x0", "x_0 = N_e(m (W_E[t] + W_pos[p]))", x0, steps[-1].expr, steps,
                    notes=f"positions {'learned' if learned else 'not added'}; embedding norm {embed_norm}")


# ------------------------------------------------------------------ residual
@functools.lru_cache(maxsize=64)
def additive_at(kind: str, l: int) -> Identity:
    """``residual.additive`` for a concrete layer ``l``: ``x_{l+1} = x_l + a_l + m_l`` (attention-only: ``x_l + a_l``)."""
    lhs, form, steps = at.stream(l + 1), at.stream(l + 1), []
    for rule in update_rules(kind, l):
        form = rule.apply(form)
        steps.append(Step(form, f"definition: {rule.name} (layer {l})", rule))
    statement = f"x_{{{l + 1}}} = x_{{{l}}} + a_{{{l}}}" + ("" if kind == "attn_only" else f" + m_{{{l}}}")
    return Identity(f"residual.additive[l={l}]", statement,
                    lhs, at.stream(l) + contribution(kind, l), tuple(steps), (NO_POST_NORM,), notes=f"block kind {kind}")


# ------------------------------------------------------------------ attention
def mask(l: object) -> sp.MatrixSymbol:
    """Layer ``l``'s mask ``M`` (``P x P``): 0 where query i sees key j (causal, window), ``-inf`` elsewhere."""
    return at.atom("mask", "M", at.P, at.P, l)


@functools.lru_cache(maxsize=128)
def qk_pattern(l: object = L_IDX, h: object = H_IDX) -> Identity:
    """``attention.qk_circuit`` on the pattern: ``A = softmax(scale (X W_QK X^T + bias terms) + M)``, via the scores identity."""
    qk = qk_circuit(l, h)
    A, S, M = at.pattern(l, h), qk.lhs, mask(l)
    definition = Rule("the pattern", "definition", {A: Softmax(S + M)}, "A = softmax(mask(S)): M adds -inf where a key is hidden")
    return Identity(f"attention.qk_circuit.pattern[l={l},h={h}]", "pattern = softmax(mask(x W_QK x^T * scale + bias terms))", A,
                    Softmax(qk.rhs + M),
                    (Step(Softmax(S + M), "definition: the pattern", definition),
                     Step(Softmax(qk.rhs + M), "attention.qk_circuit: the scores", Rule(qk.id, "theorem", {S: qk.rhs}, qk.statement))),
                    qk.assumptions, frozen=("scale",))


@functools.lru_cache(maxsize=128)
def key_bias_invariance(l: object = L_IDX, h: object = H_IDX) -> Identity:
    """``attention.key_bias_invariance``: ``A = softmax(scale (X W_QK X^T + 1 b_Q W_K^T X^T) + M)``: ``b_K`` cancels.

    ``q k^T = (X W_Q + 1 b_Q)(X W_K + 1 b_K)^T``; the terms with ``b_K`` are
    ``(X W_Q b_K^T + 1 b_Q b_K^T) 1^T = u 1^T``, constant along the key axis, which the
    softmax over keys ignores (lemma: shift invariance). ``M`` only adds ``-inf``.
    """
    X, one, A, M = at.attn_input(l), at.ones(), at.pattern(l, h), mask(l)
    wq, wk, bq, bk = at.weight("W_Q", l, h), at.weight("W_K", l, h), at.bias("b_Q", l, h), at.bias("b_K", l, h)
    W_QK = at.atom("W_QK", "W_{QK}", at.D_MODEL, at.D_MODEL, l, h, sup=True)
    definition = Rule("the pattern", "definition", {A: Softmax(SCALE * (X * wq + one * bq) * (X * wk + one * bk).T + M)},
                      "A = softmax(scale q k^T + M), q = X W_Q + 1 b_Q, k = X W_K + 1 b_K")
    rest = SCALE * X * wq * wk.T * X.T + SCALE * one * bq * wk.T * X.T + M
    u = SCALE * (X * wq * bk.T + one * bq * bk.T)
    rhs = Softmax(SCALE * X * W_QK * X.T + SCALE * one * bq * wk.T * X.T + M)
    return Identity(
        f"attention.key_bias_invariance[l={l},h={h}]", "the terms of b_K, constant along the key axis, cancel in the softmax", A, rhs,
        (Step(definition.mapping[A], "definition: the pattern", definition),
         Step(Softmax(rest + u * one.T), "distributivity: the b_K terms are (X W_Q b_K^T + 1 b_Q b_K^T) 1^T = u 1^T"),
         Step(Softmax(rest), "softmax is invariant to adding a per-row constant", shift_invariance(rest, u, one, Softmax)),
         Step(rhs, "definition W_QK = W_Q W_K^T", Rule("the QK circuit", "definition", {wq * wk.T: W_QK}, "W_QK = W_Q W_K^T"))),
        (NO_ROTARY, NO_SOFTCAP), frozen=("scale",),
        notes="under rotary b_K is rotated by the key's position, so its terms vary along the key axis",
    )


# ------------------------------------------------------------------ MLP
@functools.lru_cache(maxsize=64)
def mlp_formula(gated: bool, act: str, l: object = L_IDX) -> Identity:
    """``mlp.formula``: ``mlp_l = act(X W_in + 1 b_in) W_out + 1 b_out``.

    Gated: ``(act(X W_gate + 1 b_gate) * (X W_in + 1 b_in)) W_out + 1 b_out``.

    ``X`` is what the MLP reads (after its input norm); ``mlp_l`` its output before any
    output norm; absent biases are bound as zeros. ``*`` is the entrywise product.
    """
    X, one = at.atom("mlp_input", "X^{mlp}", at.P, at.D_MODEL, l), at.ones()
    W_in, W_out, b_in, b_out = at.weight("W_in", l), at.weight("W_out", l), at.bias("b_in", l), at.bias("b_out", l)
    out = at.atom("mlp_raw", "mlp", at.P, at.D_MODEL, l)
    pre = X * W_in + one * b_in
    if gated:
        W_gate = at.atom("W_gate", "W_gate", at.D_MODEL, at.D_MLP, l, sup=True)
        b_gate = at.atom("b_gate", "b_gate", 1, at.D_MLP, l, sup=True)
        hidden = sp.HadamardProduct(activation(act, X * W_gate + one * b_gate), pre)
    else:
        hidden = activation(act, pre)
    rhs = hidden * W_out + one * b_out
    return Identity(f"mlp.formula[l={l}]", "mlp(x) = act(x W_in + b_in) W_out + b_out" + (" (gated)" if gated else ""), out, rhs,
                    (Step(rhs, "definition: the MLP", Rule("the MLP", "definition", {out: rhs}, f"{'gated ' if gated else ''}{act} MLP")),),
                    notes=f"activation {act}{', gated' if gated else ''}")


# ------------------------------------------------------------------ a head, linear given its pattern
@functools.lru_cache(maxsize=128)
def head_affine(norm: str, l: object = L_IDX, h: object = H_IDX) -> Identity:
    """``attention.linear_given_pattern``: ``h(x + y) = h(x) + h(y) - h(0)`` in the stream ``x``, pattern and norm scale frozen.

    ``h(x) = A N(x) W_OV + 1 b_V W_O`` with ``N`` the attention's input norm
    (``norm``: "none" when the attention reads the stream itself):
    LayerNorm ``N(x) = S_x^{-1} x C G + 1 b``, RMSNorm ``N(x) = S_x^{-1} x G``. The
    scale of each argument is its own atom (``S_{x+y}``, ``S_x``, ``S_y``); freezing
    the scale (one ``S`` for all) is the step that makes the head affine, and
    binding the three live is the counterexample.
    """
    A, one, x = at.pattern(l, h), at.ones(), at.stream(l)
    y = at.atom("stream_flipped", "y", at.P, at.D_MODEL, l)
    W_OV = at.atom("W_OV", "W_{OV}", at.D_MODEL, at.D_MODEL, l, h, sup=True)
    c = one * at.bias("b_V", l, h) * at.weight("W_O", l, h)
    C, G, b = at.atom("centring", "C", at.D_MODEL, at.D_MODEL), at.atom("in_gain", "G^{in}", at.D_MODEL, at.D_MODEL, l), \
        at.atom("in_bias", "b^{in}", 1, at.D_MODEL, l)

    def scale(which: str) -> sp.MatrixSymbol:
        return at.atom("in_scale_inv", "S^{-1}", at.P, at.P, l, which)

    def N(arg, which):
        if norm == "none":
            return arg
        if norm == "layernorm":
            return scale(which) * arg * C * G + one * b
        return scale(which) * arg * G

    def head(arg, which):
        return A * N(arg, which) * W_OV + c

    h0 = A * (one * b) * W_OV + c if norm == "layernorm" else c  # N(0) = 1 b: the scale multiplies 0
    lhs, rhs = head(x + y, "x+y"), head(x, "x") + head(y, "y") - h0
    if norm == "none":
        steps = (Step(A * x * W_OV + A * y * W_OV + c, "distributivity"),)
    else:
        frozen = Rule("the norm's scale is frozen", "definition", {scale("x+y"): scale("frozen"), scale("x"): scale("frozen"),
                                                                     scale("y"): scale("frozen")},
                      "S_{x+y} = S_x = S_y = S: every argument divided by the same frozen scale")
        steps = (Step(head(x + y, "frozen"), "the scale is frozen", frozen),
                 Step((head(x, "frozen") + head(y, "frozen") - h0).expand(), "distributivity"),
                 Step(rhs, "the scale is frozen (read right to left)", frozen))
    return Identity(f"attention.linear_given_pattern[l={l},h={h}]",
                    "with the pattern and the norm scale frozen, a head is affine in the stream",
                    lhs, rhs, steps, (ALWAYS,), frozen=("A",) + (() if norm == "none" else ("S",)),
                    notes=f"input norm {norm}; y is the stream with its positions reversed")


# ------------------------------------------------------------------ gauge
def _gauged(name: str, base: sp.MatrixSymbol, l: object, h: object) -> sp.MatrixSymbol:
    return at.atom("gauged", f"{name}'", base.shape[0], base.shape[1], l, h)


@functools.lru_cache(maxsize=128)
def gauge_scores(l: object = L_IDX, h: object = H_IDX) -> Identity:
    """``attention.gauge`` (QK, with biases): ``q' k'^T = q k^T``.

    ``W_Q' = W_Q M``, ``b_Q' = b_Q M``, ``W_K' = W_K M^{-T}``, ``b_K' = b_K M^{-T}`` for any invertible ``M``.

    The definitions of the primed weights are the transformation the claim's rerun applies.
    """
    X, one = at.attn_input(l), at.ones()
    M = at.atom("gauge", "M", at.D_HEAD, at.D_HEAD, l, h)
    wq, wk, bq, bk = at.weight("W_Q", l, h), at.weight("W_K", l, h), at.bias("b_Q", l, h), at.bias("b_K", l, h)
    wq2, wk2, bq2, bk2 = (_gauged(n, base, l, h) for n, base in (("W_Q", wq), ("W_K", wk), ("b_Q", bq), ("b_K", bk)))
    transform = Rule("the gauge transformation", "definition", {wq2: wq * M, bq2: bq * M, wk2: wk * M.I.T, bk2: bk * M.I.T},
                     "W_Q' = W_Q M, b_Q' = b_Q M, W_K' = W_K M^{-T}, b_K' = b_K M^{-T}")
    lhs, rhs = (X * wq2 + one * bq2) * (X * wk2 + one * bk2).T, (X * wq + one * bq) * (X * wk + one * bk).T
    defined = (X * wq * M + one * bq * M) * (X * wk * M.I.T + one * bk * M.I.T).T
    return Identity(f"attention.gauge.scores[l={l},h={h}]", "W_Q M, W_K M^{-T} (and the biases) leave q k^T unchanged", lhs, rhs,
                    (Step(defined, "definition: the gauge transformation", transform),
                     Step((X * wq + one * bq) * M * M.I * (wk.T * X.T + bk.T * one.T), "transpose of a product; (M^{-T})^T = M^{-1}"),
                     Step(rhs, "M M^{-1} = I")),
                    notes="q k^T before rotary and QK-norm, which act between W_Q, W_K and the scores: the scores keep q k^T's "
                          "invariance only for M commuting with them (attention.gauge_qk_rotary_refutation)")


@functools.lru_cache(maxsize=128)
def gauge_ov(l: object = L_IDX, h: object = H_IDX) -> Identity:
    """``attention.gauge`` (OV, with the value bias): ``A (X W_V' + 1 b_V') W_O' = A (X W_V + 1 b_V) W_O``.

    ``W_V' = W_V N``, ``b_V' = b_V N``, ``W_O' = N^{-1} W_O`` for any invertible ``N``.
    """
    X, one, A = at.attn_input(l), at.ones(), at.pattern(l, h)
    N = at.atom("gauge", "N", at.D_HEAD, at.D_HEAD, l, h)
    wv, wo, bv = at.weight("W_V", l, h), at.weight("W_O", l, h), at.bias("b_V", l, h)
    wv2, wo2, bv2 = (_gauged(n, base, l, h) for n, base in (("W_V", wv), ("W_O", wo), ("b_V", bv)))
    transform = Rule("the gauge transformation", "definition", {wv2: wv * N, bv2: bv * N, wo2: N.I * wo},
                     "W_V' = W_V N, b_V' = b_V N, W_O' = N^{-1} W_O")
    lhs, rhs = A * (X * wv2 + one * bv2) * wo2, A * (X * wv + one * bv) * wo
    return Identity(f"attention.gauge.ov[l={l},h={h}]", "W_V N, N^{-1} W_O (and b_V N) leave every head's write unchanged", lhs, rhs,
                    (Step(A * (X * wv * N + one * bv * N) * N.I * wo, "definition: the gauge transformation", transform),
                     Step(rhs, "N N^{-1} = I")), frozen=("A",), notes="rotary acts on q and k only: the OV gauge is unrestricted")


# ------------------------------------------------------------------ ablation
@functools.lru_cache(maxsize=64)
def direct_effect_rerun(last: int, head: int) -> Identity:
    """``ablation.direct_effect``: ``logits(h_{last,head} = 0) - logits = -h_{last,head} W_U``.

    Both logits are observed (two runs); the derivation's definitions say why they
    differ by one term: nothing but the unembedding reads the last layer's head
    (:data:`DIRECT_PATH`), and no final norm or softcap stands between.
    """
    logits = at.atom("logits", "logits", at.P, at.D_VOCAB)
    ablated = at.atom("logits_ablated", "logits^{ablated}", at.P, at.D_VOCAB, last, head)
    rest = at.atom("stream_rest", "x^{rest}", at.P, at.D_MODEL, last + 1)
    hd, W_U, b_U, one = at.head(last, head), at.weight("W_U"), at.bias("b_U"), at.ones()
    definition = Rule("the two runs", "definition", {logits: (rest + hd) * W_U + one * b_U, ablated: rest * W_U + one * b_U},
                      "x_L = x^{rest} + h (the head's write reaches x_L untouched); ablated, x_L = x^{rest}")
    return Identity(f"ablation.direct_effect[l={last},h={head}]", "logits(ablated) - logits = -head W_U", ablated - logits, -hd * W_U,
                    (Step(rest * W_U + one * b_U - (rest + hd) * W_U - one * b_U, "definition: the logits of both runs", definition),
                     Step(-hd * W_U, "distributivity: every other term cancels")),
                    (NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD, DIRECT_PATH))


# ------------------------------------------------------------------ folding
@functools.lru_cache(maxsize=16)
def fold_and_centre_final(norm: str, L: int = 1) -> Identity:
    """``norm.folding`` at the unembedding: ``logsoftmax(N(x) W_U + 1 b_U) = logsoftmax(S^{-1} x W' + 1 b')``.

    ``norm`` is the norm before ``W_U``: layernorm, rmsnorm or none.

    ``W' = fold(W_U) (I - 1_V 1_V^T / d_vocab)``: the norm folded into ``W_U``
    (``norms.fold_layernorm`` / ``fold_rmsnorm``), then centred (``norms.centre_unembedding``);
    ``norm = "none"``: centring alone, on the final stream ``x_L``.
    """
    W_U, b_U = at.weight("W_U"), at.bias("b_U")
    if norm == "none":
        return centre_unembedding(W_U, b_U, at.stream(L))
    tag = {"layernorm": "LN", "rmsnorm": "RMS"}[norm]
    fold = (fold_layernorm if norm == "layernorm" else fold_rmsnorm)(W_U, b_U)
    mapping = fold.steps[-1].rule.mapping
    folded_W = next(k for k in mapping if k.shape[0] != 1)
    folded_b = next((k for k in mapping if k.shape[0] == 1), b_U)
    S, x = at.atom("norm_scale", "S", at.P, at.P, tag), at.atom("norm_input", "x", at.P, at.D_MODEL)
    centre = centre_unembedding(folded_W, folded_b, S.I * x)
    return Identity(
        f"norm.folding[{norm}]", "folding the norm before W_U and centring W_U leave the log-probabilities unchanged", LogSoftmax(fold.lhs),
        centre.lhs,
        (Step(LogSoftmax(fold.rhs), fold.id, Rule(fold.id, "theorem", {fold.lhs: fold.rhs}, fold.statement)),
         Step(centre.lhs, f"{centre.id}, read right to left", Rule(centre.id, "theorem", {centre.rhs: centre.lhs}, centre.statement))),
        (PRE_NORM, NO_LOGIT_SOFTCAP), frozen=("S",), parts=(fold, centre),
    )

