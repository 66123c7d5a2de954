"""Norms: folding gains and biases into the next linear map, centring the unembedding, and the live final norm.

Row convention, one sequence (``x`` is ``P x d_model``). With its scale frozen a
norm is affine:

    LayerNorm:  N(x) = S^{-1} x C G + 1 b_N     S = diag(sqrt(var_i(x) + eps)), C = I - 1 1^T / d_model
    RMSNorm:    N(x) = S^{-1} x G               S = diag(sqrt(mean_i(x^2) + eps))

``S`` (``P x P``) holds one scale per position, ``C`` centres each row, ``G = diag(g)``
(``g = w``, or ``1 + w`` for Gemma's RMSNorm) and ``b_N`` is the bias. So the next
linear map ``W`` (``d_model x d_out``: W_Q, W_K, W_V, W_in or W_U) with bias ``b`` absorbs
the gain, the centring and the norm's bias:

    N(x) W + 1 b = S^{-1} x (C G W) + 1 (b_N W + b)       (RMSNorm: S^{-1} x (G W) + 1 b)

Centring the unembedding, ``W_U^c = W_U (I - 1_V 1_V^T / d_vocab)`` and ``b_U^c``
likewise, subtracts each position's mean logit, a per-row constant ``u 1_V^T``, which
log-softmax ignores. Log-softmax and softmax are :class:`RowWise` matrix expressions
here; their shift invariance is a lemma tested numerically (tests/symbolic/test_norms.py).

What a *live* final norm costs: removing a component ``c`` recomputes the scale from
``x_L - c``, so the change of the logits is not ``-S^{-1} c C G W_U`` but differs from it
by ``(S'^{-1} - S^{-1}) (x_L - c) C G W_U`` (:func:`live_final_norm_refutation`).
"""

from __future__ import annotations

import sympy as sp

from .. import ShapeError
from . import _atoms as at
from ._compile import register_opaque
from ._core import Assumption, Identity, Refutation, Rule, Step, check_step
from ._induction import DEPTH
from .logits import NO_LOGIT_SOFTCAP, Readout, decomposition

__all__ = ["RowWise", "LogSoftmax", "Softmax", "shift_invariance", "definitions", "D_OUT",
           "fold_layernorm", "fold_rmsnorm", "centre_unembedding", "fold_and_centre", "frozen_direct_effect",
           "live_final_norm_refutation", "frozen_logit_decomposition", "general", "refutations", "PRE_NORM"]

D_OUT = sp.Symbol("d_out", integer=True, positive=True)
PRE_NORM = Assumption("the norm feeds a linear map", "folding needs N(x) to be read by W directly (pre-norm, or the final norm)",
                      lambda a: a.norm_placement == "pre" or not a.has_norm)
SCALE_FROZEN = ("S",)


# ------------------------------------------------------------------ row-wise functions
class RowWise(sp.MatrixExpr):
    """A function applied to each row of its argument (the last axis), with the argument's shape.

    Opaque to expansion: two applications are equal when their arguments expand to
    the same form (function congruence), nothing more. ``evaluate`` is its numeric
    meaning on an array (only array methods, so no torch import).
    """

    label = "f"

    def __new__(cls, arg: sp.MatrixExpr):
        arg = sp.sympify(arg)
        if not isinstance(arg, sp.MatrixExpr):
            raise TypeError(f"{cls.__name__} applies to a matrix expression, got {arg!r}")
        return sp.Basic.__new__(cls, arg)

    @property
    def arg(self) -> sp.MatrixExpr:
        return self.args[0]

    @property
    def shape(self):
        return self.args[0].shape

    def _sympystr(self, printer) -> str:
        return f"{self.label}({printer._print(self.arg)})"

    def _latex(self, printer) -> str:
        return rf"\operatorname{{{self.label}}}\left({printer._print(self.arg)}\right)"

    @staticmethod
    def evaluate(t):
        raise NotImplementedError


class LogSoftmax(RowWise):
    """``logsoftmax(z)_ij = z_ij - log sum_k exp(z_ik)``, row by row."""

    label = "logsoftmax"

    @staticmethod
    def evaluate(t):
        return t - t.logsumexp(-1, keepdim=True)


class Softmax(RowWise):
    """``softmax(z)_ij = exp(z_ij) / sum_k exp(z_ik)``, row by row."""

    label = "softmax"

    @staticmethod
    def evaluate(t):
        return (t - t.logsumexp(-1, keepdim=True)).exp()


# their numeric meaning for the compiler; a softmax's error is measured against its row's magnitude (compile_magnitude)
register_opaque(RowWise, lambda node: (type(node).evaluate, node.arg))
register_opaque(LogSoftmax, lambda node: (LogSoftmax.evaluate, node.arg), row_magnitude=True)
register_opaque(Softmax, lambda node: (Softmax.evaluate, node.arg), row_magnitude=True)


def shift_invariance(z: sp.MatrixExpr, u: sp.MatrixExpr, one: sp.MatrixExpr, f: type[RowWise] = LogSoftmax) -> Rule:
    """The lemma ``f(z + u 1^T) = f(z)`` for ``f`` log-softmax or softmax, ``u`` a column (one constant per row).

    ``exp(z_ij + u_i) / sum_k exp(z_ik + u_i) = exp(z_ij) / sum_k exp(z_ik)``: the factor
    ``exp(u_i)`` cancels. Soundness test: tests/symbolic/test_norms.py (torch, float64).
    """
    if u.shape[1] != 1 or one.shape[1] != 1 or u.shape[0] != z.shape[0] or one.shape[0] != z.shape[1]:
        raise ShapeError(f"shift_invariance: u ({u.shape}) must be a column of z's rows and 1 ({one.shape}) a column of ones "
                         f"over z's columns (z is {z.shape}); only u 1^T, constant along each row, leaves {f.label} unchanged")
    return Rule(f"{f.label} is invariant to adding a per-row constant", "lemma", {f(z + u * one.T): f(z)},
                f"{f.label}(z + u 1^T) = {f.label}(z): each row's constant cancels between numerator and normaliser")


def definitions(identity: Identity) -> list[tuple[sp.MatrixSymbol, sp.MatrixExpr]]:
    """Every (atom, definition) of the identity's definition rules, parts first, in derivation order.

    Binding them in this order (``env[atom.name] = compile(definition)(env)``) gives
    the numeric value of every named intermediate (folded and centred weights).
    """
    out = [d for part in identity.parts for d in definitions(part)]
    for step in identity.steps:
        if step.rule is not None and step.rule.kind == "definition":
            out += [(k, v) for k, v in step.rule.mapping.items() if isinstance(k, sp.MatrixSymbol) and (k, v) not in out]
    return out


# ------------------------------------------------------------------ folding
def _linear(W: sp.MatrixSymbol | None, b: sp.MatrixSymbol | None) -> tuple[sp.MatrixSymbol, sp.MatrixSymbol]:
    W = W if W is not None else at.atom("linear", "W", at.D_MODEL, D_OUT)
    b = b if b is not None else at.atom("linear_bias", "b", 1, W.shape[1])
    return W, b


def _fold(norm: str, W: sp.MatrixSymbol | None, b: sp.MatrixSymbol | None) -> Identity:
    tag = {"layernorm": "LN", "rmsnorm": "RMS"}[norm]
    W, b = _linear(W, b)
    x, one = at.atom("norm_input", "x", at.P, at.D_MODEL), at.ones()
    S = at.atom("norm_scale", "S", at.P, at.P, tag)
    G = at.atom("norm_gain", "G", at.D_MODEL, at.D_MODEL)
    N = at.atom("norm_out", "N", at.P, at.D_MODEL, tag)
    Wf = at.atom("folded_weight", f"{W.name}^{{fold}}", at.D_MODEL, W.shape[1], tag)
    if norm == "layernorm":
        C, bN = at.atom("centring", "C", at.D_MODEL, at.D_MODEL), at.atom("norm_bias", "b_{N}", 1, at.D_MODEL)
        bf = at.atom("folded_bias", f"{b.name}^{{fold}}", 1, b.shape[1], tag)
        normed, weight, bias = S.I * x * C * G + one * bN, C * G * W, bN * W + b
        doc = "N(x) = S^{-1} x C G + 1 b_N, S = diag(sqrt(var(x) + eps)) frozen"
        folded = {Wf: weight, bf: bias}
    else:
        normed, weight, bias, bf = S.I * x * G, G * W, b, b
        doc = "N(x) = S^{-1} x G, S = diag(sqrt(mean(x^2) + eps)) frozen"
        folded = {Wf: weight}
    definition = Rule(f"{norm} with its scale frozen", "definition", {N: normed}, doc)
    naming = Rule("the folded weight and bias", "definition", folded,
                  "; ".join(f"{k} = {v}" for k, v in folded.items()))
    lhs, rhs = N * W + one * b, S.I * x * Wf + one * bf
    return Identity(
        f"norm.fold_{norm}[{W.name}]", f"N(x) {W.name} + 1 {b.name} = S^{{-1}} x {Wf.name} + 1 {bf.name}", lhs, rhs,
        (Step(normed * W + one * b, f"definition: {doc}", definition),
         Step(S.I * x * weight + one * bias, "distributivity: the gain (and centring, bias) move into the next map"),
         Step(rhs, "definition: the folded weight and bias", naming)),
        (PRE_NORM,), frozen=SCALE_FROZEN,
        notes="exact for every x once S is frozen at x's own scale; G = diag(1 + w) for Gemma-style gains",
    )


def fold_layernorm(W: sp.MatrixSymbol | None = None, b: sp.MatrixSymbol | None = None) -> Identity:
    """``norm.fold_layernorm``: ``N(x) W + 1 b = S^{-1} x W^{fold} + 1 b^{fold}``, ``W^{fold} = C G W``, ``b^{fold} = b_N W + b``."""
    return _fold("layernorm", W, b)


def fold_rmsnorm(W: sp.MatrixSymbol | None = None, b: sp.MatrixSymbol | None = None) -> Identity:
    """``norm.fold_rmsnorm``: ``N(x) W + 1 b = S^{-1} x W^{fold} + 1 b``, ``W^{fold} = G W`` (no centring, no norm bias)."""
    return _fold("rmsnorm", W, b)


def _vocab_centring() -> tuple[sp.MatrixSymbol, sp.MatrixExpr]:
    ones_v = at.atom("ones_vocab", "1_{V}", at.D_VOCAB, 1)
    return ones_v, sp.Identity(at.D_VOCAB) - ones_v * ones_v.T / at.D_VOCAB


def centre_unembedding(W: sp.MatrixSymbol | None = None, b: sp.MatrixSymbol | None = None, y: sp.MatrixExpr | None = None) -> Identity:
    """``norm.centre_unembedding``: ``logsoftmax(y W_U^c + 1 b_U^c) = logsoftmax(y W_U + 1 b_U)``.

    ``W_U^c = W_U (I - 1_V 1_V^T / d_vocab)``, ``b_U^c = b_U (I - 1_V 1_V^T / d_vocab)``; ``y``
    (``P x d_model``) is whatever multiplies ``W_U`` (the final stream after the final
    norm). Expanding, ``y W_U^c + 1 b_U^c = z + u 1_V^T`` with ``z = y W_U + 1 b_U`` and
    ``u = -z 1_V / d_vocab`` (each position's mean logit): the lemma removes ``u 1_V^T``.
    """
    W = W if W is not None else at.weight("W_U")
    b = b if b is not None else at.bias("b_U")
    y = y if y is not None else at.atom("unembed_input", "y", at.P, at.D_MODEL)
    one, (ones_v, J) = at.ones(), _vocab_centring()
    Wc, bc = at.atom("centred", f"{W.name}^{{c}}", at.D_MODEL, at.D_VOCAB), at.atom("centred", f"{b.name}^{{c}}", 1, at.D_VOCAB)
    centring = Rule("the centred unembedding", "definition", {Wc: W * J, bc: b * J},
                    "W_U^c = W_U (I - 1_V 1_V^T / d_vocab), b_U^c = b_U (I - 1_V 1_V^T / d_vocab)")
    z = y * W + one * b
    u = -(y * W * ones_v + one * b * ones_v) / at.D_VOCAB
    lemma = shift_invariance(z, u, ones_v)
    return Identity(
        f"norm.centre_unembedding[{W.name}]", "centring W_U and b_U over the vocabulary leaves log-softmax unchanged",
        LogSoftmax(y * Wc + one * bc), LogSoftmax(z),
        (Step(LogSoftmax(y * W * J + one * b * J), "definition: the centred unembedding", centring),
         Step(LogSoftmax(z + u * ones_v.T), "distributivity: subtracting each position's mean logit is u 1_V^T"),
         Step(LogSoftmax(z), "log-softmax is invariant to adding a per-row constant", lemma)),
        (NO_LOGIT_SOFTCAP,), notes="a logit softcap c tanh(z / c) is not shift-equivariant: centre only without one",
    )


def fold_and_centre() -> Identity:
    """``norm.folding``: ``logsoftmax(N_f(x) W_U + 1 b_U) = logsoftmax(S^{-1} x W' + 1 b')`` with the final LayerNorm folded and centred.

    ``W' = (C G W_U)(I - 1_V 1_V^T / d_vocab)``, ``b' = (b_N W_U + b_U)(I - 1_V 1_V^T / d_vocab)``:
    :func:`fold_layernorm` then :func:`centre_unembedding` (both cited as theorems and attached as parts).
    """
    W_U, b_U = at.weight("W_U"), at.bias("b_U")
    fold = fold_layernorm(W_U, b_U)
    folded_W, folded_b = fold.steps[-1].rule.mapping  # W_U^{fold}_{LN}, b_U^{fold}_{LN}
    S, x = at.atom("norm_scale", "S", at.P, at.P, "LN"), at.atom("norm_input", "x", at.P, at.D_MODEL)
    centre = centre_unembedding(folded_W, folded_b, S.I * x)
    lhs = LogSoftmax(fold.lhs)
    return Identity(
        "norm.folding", "folding the final LayerNorm and centring W_U leave the log-probabilities unchanged", lhs, centre.lhs,
        (Step(LogSoftmax(fold.rhs), fold.id, Rule(fold.id, "theorem", {fold.lhs: fold.rhs}, fold.statement)),
         Step(centre.lhs, f"{centre.id}, read right to left", Rule(centre.id, "theorem", {centre.rhs: centre.lhs}, centre.statement))),
        (PRE_NORM, NO_LOGIT_SOFTCAP), frozen=SCALE_FROZEN, parts=(fold, centre),
    )


# ------------------------------------------------------------------ the live final norm
def _ablation_atoms():
    r = Readout("layernorm")
    logits = at.atom("logits", "logits", at.P, at.D_VOCAB)
    ablated = at.atom("logits_ablated", "logits^{-c}", at.P, at.D_VOCAB)
    c = at.atom("component", "c", at.P, at.D_MODEL)
    return r, logits, ablated, c, at.stream(DEPTH)


def frozen_direct_effect() -> Identity:
    """With the final norm's scale frozen (``S_f`` of the clean run), removing ``c`` moves the logits by ``-S_f^{-1} c C G_f W_U``."""
    r, logits, ablated, c, x = _ablation_atoms()
    definition = Rule("the logits, clean and without c, scale frozen", "definition",
                      {logits: r(x) + r.bias, ablated: r(x - c) + r.bias}, "logits = S_f^{-1} x_L C G_f W_U + bias; the same S_f without c")
    return Identity(
        "norm.frozen_direct_effect", "logits(x_L - c) - logits(x_L) = -S_f^{-1} c C G_f W_U (scale frozen)", ablated - logits, -r(c),
        (Step(r(x - c) + r.bias - r(x) - r.bias, "definition: the logits with the frozen scale", definition),
         Step(-r(c), "distributivity: every other term cancels")),
        (NO_LOGIT_SOFTCAP,), frozen=("S_f",),
    )


def live_final_norm_refutation() -> Refutation:
    """With the scale recomputed, ``logits(x_L - c) - logits(x_L) = -S^{-1} c C G W_U + (S'^{-1} - S^{-1})(x_L - c) C G W_U``.

    ``S'`` is the final norm's scale of ``x_L - c``. The frozen-scale direct effect
    misses exactly ``(S'^{-1} - S^{-1})(x_L - c) C G W_U``: the change of every
    position's scale, applied to everything that remains in the stream.
    """
    r, logits, ablated, c, x = _ablation_atoms()
    S_new = at.atom("final_scale_inv_ablated", "S'_{f}^{-1}", at.P, at.P)
    live = Rule("the logits, clean and without c, scale recomputed", "definition",
                {logits: r(x) + r.bias, ablated: S_new * (x - c) * r.right + r.bias},
                "logits = S_f^{-1} x_L C G_f W_U + bias; without c: S'_f^{-1} (x_L - c) C G_f W_U + bias")
    defined = S_new * (x - c) * r.right + r.bias - r(x) - r.bias
    expanded = S_new * x * r.right - S_new * c * r.right - r(x)
    steps = (Step(defined, "definition: the logits, the scale recomputed from x_L - c", live),
             Step(expanded, "distributivity: the biases cancel"))
    failing = Step(-r(c), "the frozen-scale direct effect -S_f^{-1} c C G_f W_U")
    return Refutation("ablation.direct_effect (live final norm)", steps, failing, check_step(expanded, failing),
                      "(S'_f^{-1} - S_f^{-1}) (x_L - c) C G_f W_U: the scale's change, applied to all that remains in the stream")


def frozen_logit_decomposition(kind: str = "sequential", norm: str = "layernorm", depths: range = range(1, 4)) -> Identity:
    """``logits.decomposition`` through a final norm with its scale frozen: ``logits = sum_c S_f^{-1} c C G_f W_U + 1 (b_f W_U + b_U)``.

    Delegates to :func:`circuitproof.symbolic.logits.decomposition` (proved for every L);
    what is lost when the scale is live is :func:`live_final_norm_refutation`.
    """
    return decomposition(kind, norm, depths)


def general() -> list[Identity]:
    """The catalogue's share: folding (LayerNorm, RMSNorm), centring, both together, the frozen direct effect."""
    return [fold_layernorm(), fold_rmsnorm(), centre_unembedding(), fold_and_centre(), frozen_direct_effect()]


def refutations() -> list[Refutation]:
    """The catalogue's share: what a live final norm costs the direct effect."""
    return [live_final_norm_refutation()]
