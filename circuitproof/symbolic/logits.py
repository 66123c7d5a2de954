"""The logits: linear in the final stream, decomposed over components for every depth, heads only, direct effects.

Row convention: ``logits = N_f(x_{L}) W_U + 1 b_U`` (then a softcap if any). The
final norm with its scale frozen is affine:

    N_f(x) = S^{-1} x C G + 1 b_f

with ``S = diag(s)`` the frozen per-position scales (``P x P``), ``C = I - 11^T/d``
the centring (LayerNorm; ``C = I`` for RMSNorm), ``G = diag(g)`` the gains and
``b_f`` the bias. So every component ``c`` of the stream contributes
``S^{-1} c C G W_U``; the remainder is the bias ``1 (b_f W_U + b_U)``. Without a
final norm ``S^{-1}``, ``C``, ``G`` are identities and ``b_f = 0``.
"""

from __future__ import annotations

import sympy as sp

from ..arch import Arch
from . import _atoms as at
from ._core import Assumption, Identity, Refutation, Rule, Step, check_step
from ._induction import DEPTH, by_induction
from .residual import NO_POST_NORM, contribution, unrolled_expansion

__all__ = ["Readout", "readout_for", "linear_in_final_resid", "final_norm_refutation", "decomposition", "unrolled_decomposition",
           "heads_only", "direct_effect", "NO_FINAL_NORM", "NO_LOGIT_SOFTCAP"]

NO_FINAL_NORM = Assumption("no final norm", "a live final norm divides the stream by its own scale: not linear",
                           lambda arch: not arch.final_norm)
NO_LOGIT_SOFTCAP = Assumption("no logit softcap", "c tanh(z / c) is not linear", lambda arch: arch.logit_softcap is None)
NO_TRANSFORM_HEAD = Assumption("no transform head", "BERT's masked-LM head applies act and a norm before W_U",
                               lambda arch: not arch.unembed_transform)
_LOGITS = at.atom("logits", "logits", at.P, at.D_VOCAB)


class Readout:
    """How a stream component reaches the logits: ``c -> left c right`` (``left`` P x P or None, ``right`` d_model x d_vocab)."""

    def __init__(self, final_norm: str):
        self.final_norm = final_norm  # "none", "layernorm" or "rmsnorm"
        W_U = at.weight("W_U")
        if final_norm == "none":
            self.left, self.right, self.bias = None, W_U, at.ones() * at.bias("b_U")
            return
        self.left = at.atom("final_scale_inv", "S_{f}^{-1}", at.P, at.P)
        gain = at.atom("final_gain", "G_{f}", at.D_MODEL, at.D_MODEL)
        self.right = (at.atom("centring", "C", at.D_MODEL, at.D_MODEL) * gain * W_U) if final_norm == "layernorm" else gain * W_U
        self.bias = at.ones() * at.bias("b_U")
        if final_norm == "layernorm":
            self.bias = self.bias + at.ones() * at.atom("final_bias", "b_{f}", 1, at.D_MODEL) * W_U

    def __call__(self, c: sp.MatrixExpr) -> sp.MatrixExpr:
        return (self.left * c if self.left is not None else c) * self.right

    def definition(self, L: object) -> Rule:
        """``logits = N_f(x_{L}) W_U + 1 b_U`` with the final norm's scale frozen."""
        return Rule("the unembedding", "definition", {_LOGITS: self(at.stream(L)) + self.bias},
                    "logits = N_f(x_L) W_U + 1 b_U" + ("" if self.final_norm == "none" else ", N_f(x) = S^{-1} x C G + 1 b_f"))


def readout_for(arch: Arch) -> Readout:
    return Readout(arch.norm if arch.final_norm else "none")


def linear_in_final_resid(L: object = DEPTH) -> Identity:
    """``logits.linear_in_final_resid``: ``logits = x_{L} W_U + 1 b_U``."""
    r = Readout("none")
    return Identity("logits.linear_in_final_resid", "logits = x_L W_U + b_U", _LOGITS, r(at.stream(L)) + r.bias,
                    (Step(r(at.stream(L)) + r.bias, "definition: the unembedding", r.definition(L)),),
                    (NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD))


def final_norm_refutation(L: object = DEPTH) -> Refutation:
    """With a final LayerNorm, ``logits = x_{L} W_U + 1 b_U`` fails: the stream reaches W_U through ``N_f``."""
    normed = at.atom("norm_out", "N_{f}", at.P, at.D_MODEL, L)
    definition = Rule("the unembedding after the final norm", "definition", {_LOGITS: normed * at.weight("W_U") + at.ones() * at.bias("b_U")})
    failing = Step(at.stream(L) * at.weight("W_U") + at.ones() * at.bias("b_U"), "the claim logits = x_L W_U + b_U", definition)
    return Refutation("logits.linear_in_final_resid", (), failing, check_step(_LOGITS, failing),
                      "(N_f(x_L) - x_L) W_U: the final norm's centring, scaling, gain and bias between the stream and W_U")


def _decomposition_partial(kind: str, final_norm: str, L: object) -> sp.MatrixSymbol:
    return at.atom(f"logit_partial_{kind}_{final_norm}", rf"T^{{{kind},{final_norm}}}", at.P, at.D_VOCAB, L)


def unrolled_decomposition(kind: str, final_norm: str, L: int) -> Identity:
    """``logits = readout(x_{0}) + sum_{l<L} readout(c_{l}) + bias`` for concrete ``L``, via the unrolled residual expansion."""
    r = Readout(final_norm)
    expansion = unrolled_expansion(kind, L)
    comps = [at.stream(0)] + [t for l in range(L) for t in sp.MatAdd.make_args(contribution(kind, l))]
    rhs = sp.MatAdd(*[r(c) for c in comps]) + r.bias
    substituted = r(expansion.rhs) + r.bias
    return Identity(
        f"logits.decomposition[L={L}]", f"logits as a sum over components, L = {L}", _LOGITS, rhs,
        (Step(r(at.stream(L)) + r.bias, "definition: the unembedding (final norm's scale frozen)", r.definition(L)),
         Step(substituted, f"residual expansion, unrolled for L = {L}",
              Rule("residual.expansion", "theorem", {at.stream(L): expansion.rhs}, expansion.id)),
         Step(rhs, "distributivity over the components")),
        (NO_POST_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD), frozen=() if final_norm == "none" else ("S_f",),
    )


def decomposition(kind: str, final_norm: str, depths: range = range(1, 7)) -> Identity:
    """``logits.decomposition``: ``readout(x_{L}) = readout(x_{0}) + T_{L}``, ``T_{L} = sum_{l<L} readout(c_{l})``, every L."""
    r = Readout(final_norm)

    def claim(L):
        return r(at.stream(L)), r(at.stream(0)) + _decomposition_partial(kind, final_norm, L)

    zero = sp.ZeroMatrix(at.P, at.D_VOCAB)
    empty = Rule("the empty sum", "definition", {_decomposition_partial(kind, final_norm, 0): zero}, "T_{0} = 0")
    peel = Rule("the partial sum's last term", "definition",
                {_decomposition_partial(kind, final_norm, DEPTH + 1): _decomposition_partial(kind, final_norm, DEPTH) + r(contribution(kind, DEPTH))},
                "T_{L+1} = T_{L} + readout(c_{L})")
    from .residual import update_rules

    def base():
        return [Step(r(at.stream(0)) + _decomposition_partial(kind, final_norm, 0), "definition: T_{0} = 0", empty)]

    def inductive(ih: Rule):
        form, steps = r(at.stream(DEPTH + 1)), []
        for rule in update_rules(kind, DEPTH):
            form = rule.apply(form)
            steps.append(Step(form, f"definition: {rule.name}", rule))
        steps.append(Step(form.expand(), "distributivity"))
        steps.append(Step(ih.apply(form.expand()), "induction hypothesis", ih))
        steps.append(Step(r(at.stream(0)) + _decomposition_partial(kind, final_norm, DEPTH + 1), "definition: T_{L+1}", peel))
        return steps

    return by_induction(
        "logits.decomposition", "logits = sum over x_0 and every layer's components of (c / s_f) C G W_U, plus the bias remainder",
        claim, base, inductive, (NO_POST_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD),
        frozen=() if final_norm == "none" else ("S_f",), notes=f"block kind {kind}, final norm {final_norm}",
        unrolled=tuple(unrolled_decomposition(kind, final_norm, L) for L in depths),
    )


def heads_only(n_layers: int, n_heads: int) -> Identity:
    """``logits.heads_only``: ``logits = x_{0} W_U + sum_{l,h} h_{l,h} W_U`` (attention-only, no biases, no final norm)."""
    r = Readout("none")
    expansion = unrolled_expansion("attn_only", n_layers)
    heads = {at.attn(l): sp.MatAdd(*[at.head(l, h) for h in range(n_heads)]) for l in range(n_layers)}
    no_bias = {at.bias("b_U"): sp.ZeroMatrix(1, at.D_VOCAB)}
    rhs = at.stream(0) * at.weight("W_U") + sp.MatAdd(*[at.head(l, h) * at.weight("W_U") for l in range(n_layers) for h in range(n_heads)])
    after_heads = r(expansion.rhs.xreplace(heads))
    return Identity(
        "logits.heads_only", "logits = x_0 W_U + sum_{l,h} head_{l,h} W_U", _LOGITS, rhs,
        (Step(r(at.stream(n_layers)), "definition: the unembedding, no b_U", Rule("the unembedding", "definition", {_LOGITS: r(at.stream(n_layers)) + r.bias, **no_bias})),
         Step(r(expansion.rhs), f"residual expansion (attention-only, L = {n_layers})", Rule("residual.expansion", "theorem", {at.stream(n_layers): expansion.rhs})),
         Step(after_heads, "attention.head_sum without b_O", Rule("attention.head_sum", "theorem", heads)),
         Step(rhs, "distributivity")),
        (Assumption("attention-only", "an MLP writes m_l, which is not a head", lambda a: a.attn_only),
         Assumption("no biases", "b_O, b_V W_O and b_U add terms that are no head's", lambda a: not (a.o_bias or a.v_bias or a.unembed_bias)),
         NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD),
        notes=f"L = {n_layers}, H = {n_heads}",
    )


def direct_effect(n_heads: int, head: int, L: object = DEPTH) -> Identity:
    """``ablation.direct_effect``: zero-ablating head ``head`` of the last layer moves the logits by ``-h W_U``.

    Nothing after the last layer reads the stream but the unembedding, so the
    ablated logits are the definition with ``h_{L-1,head}`` replaced by 0.
    """
    last = L - 1
    others = sp.MatAdd(*[at.head(last, h) for h in range(n_heads) if h != head]) if n_heads > 1 else sp.ZeroMatrix(at.P, at.D_MODEL)
    rest = at.atom("stream_rest", "x^{rest}", at.P, at.D_MODEL, L)  # x_{L-1} + 1 b_O + m_{L-1}: everything but the heads
    full = (rest + others + at.head(last, head)) * at.weight("W_U")
    ablated = (rest + others) * at.weight("W_U")
    return Identity(
        "ablation.direct_effect", "logits(ablated) - logits = -head_{L-1,h} W_U", ablated - full, -at.head(last, head) * at.weight("W_U"),
        (Step(-at.head(last, head) * at.weight("W_U"), "distributivity: every other term cancels"),),
        (NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD), notes="with a final norm, its scale must be frozen at the clean run's",
    )
