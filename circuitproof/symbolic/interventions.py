"""Causal interventions: activation patching of a last-layer head equals its direct logit effect.

Row convention, one sequence (``P`` positions). Patching head ``k`` of the last layer
``L - 1`` replaces its write ``h = z_k W_O^k`` by ``h' = z'_k W_O^k`` (``z'_k`` from a run on
other tokens) and leaves everything else the clean run computed in place. When nothing
but the unembedding reads the last layer's heads (:data:`~.claims_extra.DIRECT_PATH`:
attention-only or parallel last layer, no output or post norm), the final stream is
``x_L = x^{rest} + h`` clean and ``x^{rest} + h'`` patched, so with the readout
``r(c) = S_f^{-1} c C G_f W_U`` (:class:`~.logits.Readout`; ``r(c) = c W_U`` without a final
norm) and the final norm's scale ``S_f`` frozen at the clean run's:

    logits(h') - logits(h) = r(h' - h) = S_f^{-1} (h' - h) C G_f W_U        (no final norm: (h' - h) W_U)

the patching effect is the direct logit effect of the difference of the two writes
(:func:`patching_direct_effect`; zero-ablation is the case ``h' = 0``). With the final
norm *live*, the patched run recomputes the scale from ``x_L - h + h'`` and the effect
differs from the frozen one by ``(S'_f^{-1} - S_f^{-1}) (x_L - h + h') C G_f W_U``
(:func:`live_final_norm_patching_refutation`).
"""

from __future__ import annotations

import functools

from . import _atoms as at
from ._core import Assumption, Identity, Refutation, Rule, Step, check_step
from ._induction import DEPTH
from .claims_extra import DIRECT_PATH, H_IDX
from .logits import NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD, Readout

__all__ = ["patching_direct_effect", "live_final_norm_patching_refutation", "general", "refutations", "FINAL_NORM_FROZEN"]

FINAL_NORM_FROZEN = Assumption(
    "no final norm, or its scale frozen",
    "a live final norm divides the patched stream by its own scale, which the patch changes: "
    "the effect then gains (S'_f^{-1} - S_f^{-1}) (x_L - h + h') C G_f W_U",
    lambda arch: True,  # by construction: the identity freezes S_f at the clean run's, and a check freezes it too (dropped: live)
)


def _atoms(last: object, head: object) -> tuple:
    """The clean and patched logits, the clean write ``h``, the patched write ``h'`` and the rest of the final stream."""
    logits = at.atom("logits", "logits", at.P, at.D_VOCAB)
    patched = at.atom("logits_patched", "logits^{patched}", at.P, at.D_VOCAB, last, head)
    h = at.head(last, head)
    h_new = at.atom("head_patched", "h'", at.P, at.D_MODEL, last, head)
    rest = at.atom("stream_rest", "x^{rest}", at.P, at.D_MODEL, last + 1)  # x_L - h: every other term of the final stream
    return logits, patched, h, h_new, rest


@functools.lru_cache(maxsize=256)
def patching_direct_effect(last: object = DEPTH - 1, head: object = H_IDX, final_norm: str = "none") -> Identity:
    """``patching.direct_effect``: ``logits^{patched} - logits = r(h' - h)`` for head ``head`` of the last layer ``last``.

    ``final_norm`` is the norm before ``W_U`` ("none", "layernorm", "rmsnorm"); with one,
    its scale ``S_f`` is frozen at the clean run's (listed in ``frozen``), so ``r`` is
    linear. Both logits are observed (two runs); ``h'`` is the patched write ``z'_k W_O^k``.

    Proof: by definition ``logits = r(x^{rest} + h) + bias`` and
    ``logits^{patched} = r(x^{rest} + h') + bias`` (the same bias: the final norm's
    ``1 b_f W_U`` and ``1 b_U``); ``r`` distributes and every term but ``r(h' - h)`` cancels.
    """
    if final_norm not in ("none", "layernorm", "rmsnorm"):
        raise ValueError(f"patching_direct_effect: final_norm={final_norm!r} must be 'none', 'layernorm' or 'rmsnorm'")
    r = Readout(final_norm)
    logits, patched, h, h_new, rest = _atoms(last, head)
    definition = Rule("the two runs", "definition", {logits: r(rest + h) + r.bias, patched: r(rest + h_new) + r.bias},
                      "x_L = x^{rest} + h clean, x^{rest} + h' patched (only W_U reads the head); logits = r(x_L) + bias"
                      + ("" if final_norm == "none" else ", S_f frozen at the clean run's"))
    rhs = r(h_new - h)
    steps = (Step(r(rest + h_new) + r.bias - r(rest + h) - r.bias, "definition: the logits of both runs", definition),
             Step(rhs, "distributivity: x^{rest} and the bias cancel"))
    conditions = (FINAL_NORM_FROZEN, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD, DIRECT_PATH)
    return Identity(
        f"patching.direct_effect[l={last},h={head}" + ("]" if final_norm == "none" else f",{final_norm} frozen]"),
        "logits(patched) - logits = (h' - h) W_U" if final_norm == "none" else
        "logits(patched) - logits = S_f^{-1} (h' - h) " + ("C G_f W_U" if final_norm == "layernorm" else "G_f W_U") + ", S_f frozen",
        patched - logits, rhs, steps, conditions,
        frozen=("S_f",) if final_norm != "none" else (), notes=f"final norm {final_norm}",
    )


def live_final_norm_patching_refutation(norm: str = "layernorm") -> Refutation:
    """With the final norm live, ``logits^{patched} - logits = r(h' - h) + (S'_f^{-1} - S_f^{-1}) (x_L - h + h') C G_f W_U``.

    ``S'_f`` is the final norm's scale of the patched stream ``x_L - h + h'``. The frozen-scale
    effect misses exactly the change of each position's scale applied to all the patched
    stream holds: it vanishes when ``S'_f = S_f``, and not otherwise.
    """
    r = Readout(norm)
    logits, patched, h, h_new, _ = _atoms(DEPTH - 1, H_IDX)
    x = at.stream(DEPTH)
    S_new = at.atom("final_scale_inv_ablated", "S'_{f}^{-1}", at.P, at.P)  # the scale of the intervened stream (as norms.py's)
    live = Rule("the logits, clean and patched, the scale recomputed", "definition",
                {logits: r(x) + r.bias, patched: S_new * (x - h + h_new) * r.right + r.bias},
                "logits = S_f^{-1} x_L C G_f W_U + bias; patched: S'_f^{-1} (x_L - h + h') C G_f W_U + bias")
    defined = S_new * (x - h + h_new) * r.right + r.bias - r(x) - r.bias
    expanded = S_new * x * r.right - S_new * h * r.right + S_new * h_new * r.right - r(x)
    steps = (Step(defined, "definition: the logits, the scale recomputed from x_L - h + h'", live),
             Step(expanded, "distributivity: the biases cancel"))
    failing = Step(r(h_new - h), "the frozen-scale direct effect S_f^{-1} (h' - h) C G_f W_U")
    return Refutation("patching.direct_effect (live final norm)", steps, failing, check_step(expanded, failing),
                      "(S'_f^{-1} - S_f^{-1}) (x_L - h + h') C G_f W_U: the scale's change, applied to all the patched stream holds")


def general() -> list[Identity]:
    """The catalogue's share: the patching identity for every depth, without a final norm and through a frozen one."""
    return [patching_direct_effect(final_norm=f) for f in ("none", "layernorm", "rmsnorm")]


def refutations() -> list[Refutation]:
    """The catalogue's share: what a live final norm costs the patching effect."""
    return [live_final_norm_patching_refutation()]

