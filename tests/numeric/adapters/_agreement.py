"""Comparing two traces of the same model: the reference's and a real implementation's.

Errors are relative to the scale of the quantity compared: ``max|a - b| / max|b|``
(patterns are probabilities, their scale is 1). Every comparison reports the
worst field, its error and the tolerance, so that a failure says where.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from circuitproof.numeric import Trace

# fields compared when both traces have them; a missing field on the real side is an error
COMPARED = ("logits", "resid_pre", "resid_mid", "resid_post", "pattern", "head_out", "attn_out", "mlp_out")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max|actual - expected| / max(max|expected|, tiny)``, in float64."""
    a, e = actual.double(), expected.double()
    if a.shape != e.shape:
        raise AssertionError(f"shapes differ: {list(a.shape)} vs {list(e.shape)}")
    scale = max(e.abs().max().item(), torch.finfo(torch.float64).tiny)
    return (a - e).abs().max().item() / scale


def trace_errors(real: Trace, ref: Trace, fields: tuple[str, ...] = COMPARED) -> dict[str, float]:
    """Relative error of each field present in ``ref`` (the real trace must have it too)."""
    out = {}
    for name in fields:
        expected = getattr(ref, name)
        if expected is None:
            continue
        actual = getattr(real, name)
        if actual is None:
            raise AssertionError(f"the real trace lacks {name!r}, which the reference has")
        out[name] = relative_error(actual, expected)
    return out


def assert_traces_agree(real: Trace, ref: Trace, rtol: float, fields: tuple[str, ...] = COMPARED) -> dict[str, float]:
    """Every compared field within ``rtol`` relative error; returns the errors (for ``note``)."""
    errors = trace_errors(real, ref, fields)
    worst = max(errors, key=errors.get)
    if errors[worst] > rtol:
        detail = ", ".join(f"{k}={v:.2e}" for k, v in errors.items())
        raise AssertionError(f"{worst} differs by {errors[worst]:.3e} relative (tolerance {rtol:g}); all: {detail}")
    return errors


# ------------------------------------------------------------------ each family's tolerance as shipped
U = 2.0**-24  # float32 unit roundoff


def kappa(ref: Trace) -> float:
    """The LayerNorm conditioning of a trace: max over its norms of max|input| / min(scale), at least 1."""
    return max([1.0] + [(nt.input.abs().max() / nt.scale.min()).item() for nt in ref.norms.values()])


# family -> (relative tolerance of a float64 model against the float64 reference, as a function of the reference
# trace, and why it has that size). Each family's test module shows that the whole difference is its float32 steps:
# kept in float64 inside the test, every family agrees to 1e-9.
_EXACT = ("computes in the model's dtype throughout: float64 rounding (1e-16) through at most 3 layers of small dot "
          "products stays many orders below 1e-9")
_LLAMA = ("runs RMSNorm, the rotary tables and the softmax in float32 whatever the model's dtype: each perturbs by <= 1e-6 "
          "relative (a few u = 6e-8; rotary angles < 16 rad rounded, <= 16 u); through <= 3 layers of O(1)-gain random "
          "weights with cancellation we allow an amplification of 100 (measured over 3,800 drawn models each: Llama <= 1.3e-5, "
          "Qwen2 <= 2.9e-5, the largest on d_model = 2)")
_KAPPA = ("runs the rotary table and the softmax (GPT-J: the scores q k^T, accumulated over Dh + 2 terms) in float32: <= ~46 u "
          "on the pattern (angles <= 15 rad rounded before cos/sin, <= 16 u; scores <= ~30 rounded), budget 64 u; the linear maps "
          "(1/sqrt(fan_in) weights) carry it at O(1); a LayerNorm amplifies an error small against max|x| by up to kappa = max|x| / sqrt(var + eps) "
          "at its worst position (huge when coordinates nearly coincide at d_model = 2): 64 u kappa, kappa read off the "
          "reference trace (measured <= 2 u kappa over 2,700 draws; raw error up to 2.6e-5 at kappa 1170)")
_SANDWICH = ("runs RMSNorm (output/sandwich, final and QK norms), the rotary tables and the softmax in float32: an output norm "
             "divides by one position's rms, which can be 1e-3 of the sublayer's scale elsewhere, dot products over d_model 2 "
             "cancel, three layers compound; no small universal bound: over 6,000 drawn models Gemma 2 reached 2.2e-4 "
             "(3,700 u) and OLMo 2 3.0e-5 at worst, median ~2 u; 1e-3 keeps a margin of 4.5 over the worst")
RTOL_FLOAT64 = 1e-9  # any family as shipped that computes in float64, and any family with its float32 steps kept in float64
RTOL_LLAMA = 1e-4
RTOL_SANDWICH = 1e-3
TOLERANCES: dict[str, tuple[Callable[[Trace], float], str]] = {
    "gpt2": (lambda ref: RTOL_FLOAT64, _EXACT),
    "bert": (lambda ref: RTOL_FLOAT64, _EXACT),
    "llama": (lambda ref: RTOL_LLAMA, _LLAMA),
    "qwen2": (lambda ref: RTOL_LLAMA, _LLAMA),
    "gpt_neox": (lambda ref: 64 * U * kappa(ref), _KAPPA),
    "gptj": (lambda ref: 64 * U * kappa(ref), _KAPPA),
    "gemma2": (lambda ref: RTOL_SANDWICH, _SANDWICH),
    "olmo2": (lambda ref: RTOL_SANDWICH, _SANDWICH),
}


def rtol_as_shipped(family: str, ref: Trace) -> float:
    """The family's tolerance against the reference trace ``ref`` (TOLERANCES, with its reason there)."""
    return TOLERANCES[family][0](ref)


# ------------------------------------------------------------------ the user's model, untouched
def model_state(model: torch.nn.Module) -> tuple:
    """What a trace must give back: every module's mode, the attention implementation, each parameter's
    dtype, device and value, and the hooks left on any module (none)."""
    hooks = tuple((n, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()
                  if m._forward_hooks or m._forward_pre_hooks)
    params = tuple((n, p.dtype, p.device, p.detach().clone()) for n, p in model.named_parameters())
    return tuple(m.training for m in model.modules()), model.config._attn_implementation, hooks, params


def same_state(a: tuple, b: tuple) -> bool:
    """Two ``model_state`` s are equal (parameter values compared exactly)."""
    return a[:3] == b[:3] and len(a[3]) == len(b[3]) and all(
        x[:3] == y[:3] and torch.equal(x[3], y[3]) for x, y in zip(a[3], b[3], strict=True))


# ------------------------------------------------------------------ shared by the family tests
def draw_and_compare(family: str, data, rtol_of: Callable[[Trace], float]) -> None:
    """Draw an Arch the family can express, its weights and tokens; the family's trace must agree with the reference's
    to ``rtol_of(reference trace)``."""
    from hypothesis import note

    from circuitproof.numeric import run
    from circuitproof.numeric.adapters import adapt, build
    from circuitproof.properties.strategies import family_archs, tokens, weights

    arch = data.draw(family_archs(family), label="arch")
    w = data.draw(weights(arch), label="weights")
    toks = data.draw(tokens(arch), label="tokens")
    real = adapt(build(arch, w, family)).trace(toks)
    ref = run(arch, w, toks)
    rtol = rtol_of(ref)
    note(f"rtol {rtol:.2e}, errors: {assert_traces_agree(real, ref, rtol)}")


def eager_attention_in_dtype(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention computed in the inputs' dtype throughout (for families that step down to float32 in it).

    q, k, v ``[B, H, P, Dh]``; returns ``z`` ``[B, P, H, Dh]`` and the pattern ``[B, H, P, P]``, as transformers' eager forward.
    """
    scores = query @ key.transpose(-1, -2) * scaling  # [B, H, P, P]
    if attention_mask is not None:
        scores = scores + attention_mask
    pattern = scores.softmax(dim=-1)
    return (pattern @ value).transpose(1, 2), pattern  # z [B, P, H, Dh]
