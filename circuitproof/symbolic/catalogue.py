"""The catalogue: every identity for every depth, every refutation, and the concrete instances for one Arch.

``general()`` builds the whole catalogue (each identity's derivation checked as
it is built; the inductions with their base cases, inductive steps and
unrollings for L = 1..6). ``instances(arch)`` builds the concrete identities
that apply to ``arch``, with its depth, heads and biases, for the numeric layer
to evaluate on a trace: these are the very expressions that were proved.
"""

from __future__ import annotations

import functools

from ..arch import Arch
from . import attention, interventions, logits, norms, paths, residual, seed, seed_strict
from ._core import Identity, Refutation

__all__ = ["general", "refutations", "instances"]

_KINDS = ("sequential", "parallel", "attn_only")
_FINAL = ("none", "layernorm", "rmsnorm")


def general() -> list[Identity]:
    """Every identity of the catalogue, proved for every depth where it has one."""
    out: list[Identity] = []
    out += [residual.additive(k) for k in _KINDS]
    out += [residual.expansion(k) for k in _KINDS]
    out += [attention.head_sum(3), attention.qk_circuit(), attention.rotary_scores(), attention.ov_circuit(),
            attention.linear_given_pattern(), attention.gauge_qk(), attention.gauge_ov()]
    out += [logits.linear_in_final_resid()]
    out += [logits.decomposition(k, f) for k in _KINDS for f in _FINAL]
    out += [logits.heads_only(2, 2), logits.direct_effect(3, 1)]
    out += paths.general() + norms.general() + seed.general() + seed_strict.general() + interventions.general()
    return out


def refutations() -> list[Refutation]:
    """Where claims break, each with the failing step and the term that breaks it."""
    out = [residual.post_norm_refutation(), attention.rotary_qk_refutation(), attention.gauge_qk_rotary_refutation(),
           logits.final_norm_refutation()]
    out += norms.refutations() + seed.refutations() + seed_strict.refutations() + interventions.refutations()
    return out


def instances(arch: Arch) -> list[Identity]:
    """The concrete identities that apply to ``arch`` (each checked as built, once per shape), for evaluation on its traces."""
    final = arch.norm if arch.final_norm else "none"
    candidates = _candidates(residual.block_kind(arch), arch.n_layers, arch.n_heads, final)
    return [identity for identity in candidates if identity.applies(arch)[0]]


@functools.lru_cache(maxsize=256)
def _candidates(kind: str, L: int, H: int, final: str) -> tuple[Identity, ...]:
    """Every concrete identity for a depth, head count, block kind and final norm (biases are bound, absent ones as zeros)."""
    out: list[Identity] = [residual.unrolled_expansion(kind, L)]
    out += [attention.head_sum(H, l, o_bias=True) for l in range(L)]
    out += [attention.ov_circuit(l, h) for l in range(L) for h in range(H)]
    out += [attention.qk_circuit(l, h) for l in range(L) for h in range(H)]
    out.append(logits.linear_in_final_resid(L))
    out.append(logits.unrolled_decomposition(kind, final, L))
    return tuple(out)
