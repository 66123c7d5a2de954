"""The claims catalogue: every claim of DESIGN.md as a :class:`Claim` that evaluates the symbolic layer's identities.

``CLAIMS`` maps each claim id to its Claim; ``claim.check(arch, weights, trace)``
returns :class:`Evidence` (verdict, max abs and relative error, the worst
instance, layer, head, batch and position, the tolerance and why). What each
claim evaluates:

=================================== =========================================================================
claim                               evaluated (``claims_extra`` unless named)
=================================== =========================================================================
embedding.x0                        ``embedding_x0``: x_0 from the tokens' one-hot rows, W_pos, m and the embedding norm
residual.additive                   ``additive_at`` for every layer
residual.expansion                  ``residual.unrolled_expansion(kind, L)``
attention.head_sum                  ``attention.head_sum(H, l)`` for every layer
attention.qk_circuit                ``qk_pattern`` (the pattern) and ``attention.qk_circuit`` (the scores, where observed)
attention.key_bias_invariance       ``key_bias_invariance``: the pattern without b_K's terms
attention.ov_circuit                ``attention.ov_circuit(l, h)``
attention.linear_given_pattern      ``head_affine``: h(x + y) = h(x) + h(y) - h(0), scale frozen (dropped: live)
attention.gauge                     ``gauge_scores``, ``gauge_ov``, and a rerun with the gauged weights (logits, patterns)
mlp.formula                         ``mlp_formula`` for every layer
logits.linear_in_final_resid        ``logits.linear_in_final_resid(L)``
logits.decomposition                ``logits.unrolled_decomposition(kind, final norm, L)``
logits.heads_only                   ``logits.heads_only(L, H)``
paths.attention_only                ``paths.path_expansion(L, H)``
ablation.direct_effect              ``direct_effect_rerun`` with each last-layer head zero-ablated in a rerun (one batched pass)
norm.folding                        ``fold_and_centre_final`` on the trace, and a rerun with every norm folded (log-probs)
patching.direct_effect              ``interventions.patching_direct_effect``: each last-layer head patched through the target's own pass
=================================== =========================================================================

Concrete identities are built once per shape (layer, head, block kind) and cached.
"""

from __future__ import annotations

import functools

import torch

from ..arch import Arch
from ..symbolic import ALWAYS, Assumption
from ..symbolic import claims_extra as ce
from ..symbolic.attention import NO_ROTARY, NO_SOFTCAP, head_sum, ov_circuit, qk_circuit
from ..symbolic.interventions import FINAL_NORM_FROZEN, patching_direct_effect
from ..symbolic.logits import NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD, heads_only, linear_in_final_resid, unrolled_decomposition
from ..symbolic.norms import PRE_NORM
from ..symbolic.paths import ATTN_ONLY_FROZEN, path_expansion
from ..symbolic.residual import NO_POST_NORM, block_kind, unrolled_expansion
from ._claim import Claim, Comparison, Context, Instance, rerun_or_reference
from ._evidence import Evidence

__all__ = ["Claim", "Evidence", "CLAIMS", "NO_OUTPUT_NORM", "HAS_MLP", "patch_source"]

PAPER = "Elhage et al. 2021, A Mathematical Framework for Transformer Circuits"
HAS_MLP = Assumption("an MLP", "an attention-only model has no MLP to check", lambda a: a.has_mlp)
NO_OUTPUT_NORM = Assumption("no norm on a sublayer's output", "an output, sandwich or post norm rescales every head's write before it "
                            "reaches the stream", lambda a: not a.has_norm or a.norm_placement == "pre")


def _input_norm(arch: Arch) -> str:
    """The norm the attention reads through: the Arch's norm if it has an ``attn_in`` slot, else "none"."""
    return arch.norm if "attn_in" in arch.norm_slots() else "none"


# ------------------------------------------------------------------ instances, cached per shape
@functools.lru_cache(maxsize=64)
def _x0(learned: bool, embed_norm: str, eps: float) -> tuple[Instance, ...]:
    return (Instance("embedding.x0", ce.embedding_x0(learned, embed_norm, eps)),)


@functools.lru_cache(maxsize=64)
def _additive(kind: str, L: int) -> tuple[Instance, ...]:
    """Every layer's instance of one derivation with symbolic ``l`` (evaluated together, measured layer by layer)."""
    identity = ce.additive_at(kind, ce.L_IDX)
    return tuple(Instance(f"residual.additive[l={l}]", identity, layer=l) for l in range(L))


@functools.lru_cache(maxsize=64)
def _expansion(kind: str, L: int) -> tuple[Instance, ...]:
    return (Instance(f"residual.expansion[L={L}]", unrolled_expansion(kind, L)),)


@functools.lru_cache(maxsize=64)
def _head_sum(L: int, H: int) -> tuple[Instance, ...]:
    """Every layer's instance of one derivation with symbolic ``l`` (evaluated together, measured layer by layer)."""
    identity = head_sum(H, ce.L_IDX, o_bias=True)
    return tuple(Instance(f"attention.head_sum[l={l}]", identity, layer=l) for l in range(L))


@functools.lru_cache(maxsize=32)
def _generic(which: str, *flags: object) -> tuple[tuple[str, object, bool], ...]:
    """(label, identity with symbolic l and h, optional) for one head; built once, evaluated for every head."""
    return {
        "qk": lambda: (("attention.qk_circuit.pattern", ce.qk_pattern(), False), ("attention.qk_circuit.scores", qk_circuit(), True)),
        "key_bias": lambda: (("attention.key_bias_invariance", ce.key_bias_invariance(), False),),
        "ov": lambda: (("attention.ov_circuit", ov_circuit(), False),),
        "affine": lambda: (("attention.linear_given_pattern", ce.head_affine(*flags), False),),
        "gauge": lambda: (("attention.gauge.scores", ce.gauge_scores(), False), ("attention.gauge.ov", ce.gauge_ov(), False)),
    }[which]()


@functools.lru_cache(maxsize=1024)
def _per_head(which: str, l: int, h: int, *flags: object) -> tuple[Instance, ...]:
    return tuple(Instance(f"{label}[l={l},h={h}]", identity, l, h, optional) for label, identity, optional in _generic(which, *flags))


def _each_head(which: str, *flags):
    def instances(arch: Arch) -> tuple[Instance, ...]:
        return _every_head(which, arch.n_layers, arch.n_heads, *(f(arch) for f in flags))

    return instances


@functools.lru_cache(maxsize=256)
def _every_head(which: str, L: int, H: int, *flags: object) -> tuple[Instance, ...]:
    """Every head's instances of one generic identity, layer by layer, kept per shape."""
    return tuple(i for l in range(L) for h in range(H) for i in _per_head(which, l, h, *flags))


@functools.lru_cache(maxsize=64)
def _mlp(L: int, gated: bool, act: str) -> tuple[Instance, ...]:
    return tuple(Instance(f"mlp.formula[l={l}]", ce.mlp_formula(gated, act), layer=l) for l in range(L))


@functools.lru_cache(maxsize=16)
def _linear(L: int) -> tuple[Instance, ...]:
    return (Instance(f"logits.linear_in_final_resid[L={L}]", linear_in_final_resid(L)),)


@functools.lru_cache(maxsize=64)
def _decomposition(kind: str, final: str, L: int) -> tuple[Instance, ...]:
    return (Instance(f"logits.decomposition[L={L}]", unrolled_decomposition(kind, final, L)),)


@functools.lru_cache(maxsize=64)
def _heads_only(L: int, H: int) -> tuple[Instance, ...]:
    return (Instance(f"logits.heads_only[L={L},H={H}]", heads_only(L, H)),)


@functools.lru_cache(maxsize=64)
def _paths(L: int, H: int) -> tuple[Instance, ...]:
    return (Instance(f"paths.attention_only[L={L},H={H}]", path_expansion(L, H)),)


@functools.lru_cache(maxsize=64)
def _direct(L: int, H: int) -> tuple[Instance, ...]:
    return tuple(Instance(f"ablation.direct_effect[l={L - 1},h={h}]", ce.direct_effect_rerun(L - 1, h), L - 1, h) for h in range(H))


@functools.lru_cache(maxsize=64)
def _patching(L: int, H: int, final: str) -> tuple[Instance, ...]:
    return tuple(Instance(f"patching.direct_effect[l={L - 1},h={h}]", patching_direct_effect(L - 1, h, final), L - 1, h) for h in range(H))


@functools.lru_cache(maxsize=16)
def _folding(norm: str, L: int) -> tuple[Instance, ...]:
    return (Instance(f"norm.folding[{norm}]", ce.fold_and_centre_final(norm, L)),)


def _unembed_norm(arch: Arch) -> str:
    return arch.norm if (arch.unembed_transform or arch.final_norm) else "none"


# ------------------------------------------------------------------ reruns
def _prepare_gauge(ctx: Context, instances: tuple[Instance, ...]) -> None:
    """Gauge every head (M, N per key/value head), rerun, compare logits and patterns; bind M, N and the primed weights per head."""
    from ..numeric._kept import kept_per_weights
    from ._transforms import gauge_matrices

    arch, w, dtype = ctx.arch, ctx.weights, ctx.trace.resid_pre.dtype
    M, N, note = gauge_matrices(arch, general_qk=not ctx.assume)
    gauged, stacks = kept_per_weights(w, ("gauge", not ctx.assume, dtype), lambda: _gauged(arch, w, M, N, dtype))
    ctx.notes.append(note)
    for inst in {id(i.identity): i for i in instances}.values():  # one instance per identity: every head's atoms have its names
        for atom, (kind, _) in inst.compiled.atoms.items():
            if kind in ("gauge", "gauged"):
                ctx.per_head[atom] = stacks[atom.split("_{")[0]]
    with torch.inference_mode():  # a pass to compare, never differentiated: its tensors need not be ordinary ones (run)
        rerun = rerun_or_reference(ctx, arch, gauged)
    ctx.comparisons.append(Comparison("forward pass with the gauged weights: logits", rerun.logits, ctx.trace.logits))
    ctx.comparisons.append(Comparison("forward pass with the gauged weights: pattern", rerun.pattern.transpose(1, 2),
                                      ctx.trace.pattern.transpose(1, 2), per=("layer", "head"),  # [L, H, B, P, P]
                                      magnitude=_pattern_magnitude(ctx.trace)))


def _gauged(arch: Arch, w, M: torch.Tensor, N: torch.Tensor, dtype: torch.dtype) -> tuple:
    """The gauged weights, and ``name -> [L, H, ...]`` per query head in ``dtype`` (biases as rows) of M, N and the primed weights."""
    from ._transforms import gauged_weights, per_query_head

    gauged = gauged_weights(arch, w, M, N)
    L, H = arch.n_layers, arch.n_heads
    absent = torch.zeros(1, 1, 1, arch.d_head, dtype=dtype).expand(L, H, 1, arch.d_head)  # a bias the architecture lacks
    gauged_at = gauged.to(dtype) if gauged.dtype != dtype else gauged
    stacks = {"M": per_query_head(arch, M.to(dtype)), "N": per_query_head(arch, N.to(dtype)), "W_Q'": gauged_at.W_Q, "W_O'": gauged_at.W_O,
              "W_K'": per_query_head(arch, gauged_at.W_K), "W_V'": per_query_head(arch, gauged_at.W_V)}
    for name, query in (("b_Q", True), ("b_K", False), ("b_V", False)):
        stacks[f"{name}'"] = (gauged_at[name] if query else per_query_head(arch, gauged_at[name]))[:, :, None, :] if name in gauged else absent
    return gauged, stacks


def _pattern_magnitude(trace) -> torch.Tensor | None:
    """``[L, H, B, P, P]``: the softmax-row magnitude of every head's pattern (``softmax_magnitude``), the observed
    scores as its argument, masked keys not counted; None where the trace has no scores (then the pattern's own size)."""
    from ..numeric.reference import masked_keys
    from ..symbolic._compile import softmax_magnitude

    if trace.scores is None:
        return None
    arch, P = trace.arch, trace.scores.shape[-1]
    hidden = torch.stack([masked_keys(arch, l, P) for l in range(arch.n_layers)])[:, None, None]  # [L, 1, 1, P, P]
    return softmax_magnitude(trace.pattern, trace.scores.abs().masked_fill(hidden, float("inf"))).transpose(1, 2)


def _prepare_ablation(ctx: Context, instances: tuple[Instance, ...]) -> None:
    """Zero-ablate each last-layer head (its ``z``, so its write ``0 W_O = 0``) in a rerun through the target's own forward
    pass, every head's rerun a copy in one batched pass (:func:`~circuitproof.numeric.interventions.run_replaced_each`);
    bind each run's logits as ``logits^{ablated}``."""
    from ..numeric import interventions as iv

    target, tokens, last = _intervention_target(ctx), ctx.trace.tokens, ctx.arch.n_layers - 1
    heads = [iv.Head(last, inst.head) for inst in instances]
    with torch.inference_mode():  # nothing here is differentiated: the reference runs in inference mode and keeps its tensors
        logits = _copies(iv.run_replaced_each(target, tokens, [(head, torch.zeros(ctx.arch.d_head)) for head in heads]), len(heads))
    for head, copy in zip(heads, logits):
        ctx.given[f"logits^{{ablated}}_{{{last},{head.head}}}"] = copy


def _intervention_target(ctx: Context):
    """What runs the model with a component replaced: the context's target, or the reference with its weights in the trace's dtype."""
    from ..numeric import interventions as iv

    return iv.as_target(ctx.target if ctx.target is not None else iv.Reference(ctx.weights, ctx.trace.resid_pre.dtype))


def _copies(trace, k: int) -> list[torch.Tensor]:
    """The logits of each of the ``k`` copies of a batched run (``run_replaced_each``), ``[B, P, V]`` each."""
    from ..numeric.bind import Unbindable

    if trace.logits is None:
        raise Unbindable("the target computes no logits (a model without its LM head)")
    return list(trace.logits.chunk(k))


def patch_source(tokens: torch.Tensor, d_vocab: int) -> torch.Tensor:
    """The source tokens ``patching.direct_effect`` patches from: every id advanced by one, ``(t + 1) mod d_vocab``.

    Deterministic, the shape of ``tokens``, and different at every position (d_vocab >= 2), so every head's write changes.
    """
    return (tokens + 1) % d_vocab


def _prepare_patching(ctx: Context, instances: tuple[Instance, ...]) -> None:
    """Patch each last-layer head's ``z`` with its value on :func:`patch_source` tokens, through the target's own forward
    pass (final norm scale frozen at the clean run's; live with the conditions dropped); bind the patched logits as
    ``logits^{patched}`` and the source run's write as ``h'``."""
    from ..numeric import interventions as iv

    target, tokens, last = _intervention_target(ctx), ctx.trace.tokens, ctx.arch.n_layers - 1
    heads = [iv.Head(last, inst.head) for inst in instances]
    with torch.inference_mode():  # passes to compare, never differentiated (run: no copies out of inference mode)
        source = target.trace(patch_source(tokens, ctx.arch.d_vocab))
        frozen = iv.final_scale(target, ctx.trace) if (ctx.assume and ctx.arch.final_norm) else None
        patched = iv.run_replaced_each(target, tokens, [(head, iv.value(source, head)) for head in heads], final_scale=frozen)
    ctx.notes.append("final norm scale " + ("frozen at the clean run's" if frozen is not None else "live" if ctx.arch.final_norm else "absent"))
    for head, copy in zip(heads, _copies(patched, len(heads))):  # every head's patched run: a copy in one batched pass
        ctx.given[f"logits^{{patched}}_{{{last},{head.head}}}"] = copy
        ctx.given[f"h'_{{{last},{head.head}}}"] = source.head_out[last, :, :, head.head]


def _prepare_folding(ctx: Context, instances: tuple[Instance, ...]) -> None:
    """Fold every foldable norm and centre W_U (the symbolic definitions), rerun, compare log-probabilities; bind the centred weights."""
    from ._bindings import bind_claim
    from ..numeric._kept import kept_per_weights
    from ._transforms import folded

    arch2, w2, done = kept_per_weights(ctx.weights, ("folded",), lambda: folded(ctx.arch, ctx.weights))
    ctx.notes.append(f"folded {', '.join(done) or 'no norm'}; W_U centred")
    with torch.inference_mode():  # a pass to compare, never differentiated
        trace2 = rerun_or_reference(ctx, arch2, w2)
    ctx.comparisons.append(Comparison("log-probabilities after folding", trace2.logits.log_softmax(-1), ctx.trace.logits.log_softmax(-1)))
    # the identity at W_U reads the folded and centred unembedding: its own definitions, evaluated in derivation order
    base = {"W_U": ("W_U", ()), "b_U": ("b_U", ()), "1_{V}": ("ones_vocab", ())}
    if _unembed_norm(ctx.arch) != "none":
        base.update({"G": ("norm_gain", ()), "b_{N}": ("norm_bias", ()), "C": ("centring", ())})
    env = bind_claim(base, ctx.arch, ctx.weights, ctx.trace)
    for inst in instances:
        for name, definition in _compiled_definitions(inst.identity):
            env[name] = definition(env)
        ctx.given.update({n: env[n] for n, (kind, _) in inst.compiled.atoms.items() if kind == "centred"})


_DEFINITIONS: dict[int, tuple] = {}


def _compiled_definitions(identity) -> tuple[tuple[str, object], ...]:
    """(atom name, compiled definition) of the identity's defined atoms, in derivation order, compiled once per identity.

    The norm's output ``N_{...}`` is left out: it is bound from the trace, not from its definition.
    """
    from ..symbolic import norms
    from ..symbolic._compile import compile_expr

    key = id(identity)
    if key not in _DEFINITIONS:  # keep the identity alive with its key
        _DEFINITIONS[key] = (identity, tuple((atom.name, compile_expr(definition.expand().doit()))
                                             for atom, definition in norms.definitions(identity) if not atom.name.startswith("N_{")))
    return _DEFINITIONS[key][1]


# ------------------------------------------------------------------ the catalogue
def _claim(id: str, statement: str, source: str, holds_when: str, conditions: tuple, where: dict, instances, prepare=None) -> Claim:
    return Claim(id, statement, source, holds_when, conditions, where, instances, prepare)


_NO_ROTARY_DRAW = dict(qk_norm="none", attn_softcap=None)

CLAIMS: dict[str, Claim] = {c.id: c for c in (
    _claim("embedding.x0", "x_0 = m (W_E[t] + W_pos[p]), then the embedding norm if any",
           f"seed: 'Tokens -> Embedding: [e1] [e2] [e3]'; {PAPER}, 'Transformer Overview'",
           "always, with the Arch's multiplier and positions",
           (ALWAYS,), {}, lambda a: _x0(a.positional == "learned", a.norm if a.embed_norm else "none", float(a.norm_eps))),
    _claim("residual.additive", "x_{l+1} = x_l + attn_l + mlp_l (parallel: both read x_l; sequential: the MLP reads x_l + attn_l)",
           "seed: 'x_{l+1} = x + Attn(x) + MLP(x + Attn(x))'; 'Every transformer layer ... writes an additive update back to it'",
           "no post-norm; fails for BERT's post-norm", (NO_POST_NORM,), {}, lambda a: _additive(block_kind(a), a.n_layers)),
    _claim("residual.expansion", "x_L = x_0 + sum_l (attn_l + mlp_l)",
           "seed: 'Expanded over all layers: x_L = x_0 + sum f(x)'", "no post-norm, every L (proof by induction)", (NO_POST_NORM,), {},
           lambda a: _expansion(block_kind(a), a.n_layers)),
    _claim("attention.head_sum", "attn_l = sum_h head_{l,h} + b_O", "seed: 'Each f decomposes as: f = sum_h Attn_h + MLP'; "
           f"{PAPER}, 'Attention Heads are Independent and Additive'", "always (GQA: per query head)", (ALWAYS,), {},
           lambda a: _head_sum(a.n_layers, a.n_heads)),
    _claim("attention.qk_circuit", "scores = x W_QK x^T * scale + bias terms; pattern = softmax(mask(scores))",
           "seed: 'alpha_ij = softmax_j(x_i^T W_Q^T W_K x_j / sqrt(d))'; "
           "'The product W_Q^T W_K ... fully characterises the attention pattern'",
           "no rotary and no QK-norm (and no score softcap); with rotary the bilinear form depends on the offset",
           (NO_ROTARY, NO_SOFTCAP), dict(_NO_ROTARY_DRAW), _each_head("qk")),
    _claim("attention.key_bias_invariance", "the terms of b_K constant along the key axis cancel in the softmax",
           f"{PAPER}, 'Summarizing Attention Heads' (biases folded away)", "always per DESIGN; evaluated where the scores are "
           "bilinear (no rotary, QK-norm or score softcap: under rotary b_K is rotated by the key's position and does not cancel)",
           (NO_ROTARY, NO_SOFTCAP), dict(_NO_ROTARY_DRAW), _each_head("key_bias")),
    _claim("attention.ov_circuit", "head_i = sum_j A_ij x_j W_OV + b_V W_O",
           "seed: 'Delta x_i = sum_j alpha_ij W_O W_V x_j'; 'The OV circuit - W_V W_O, again a single matrix'",
           "always, x the normalised input",
           (ALWAYS,), {}, _each_head("ov")),
    _claim("attention.linear_given_pattern", "with pattern and norm scales frozen, a head is affine in the stream",
           "seed: 'for a fixed attention pattern, the head's contribution is a linear function of the residual stream'",
           "always with the scales frozen; with live norms it is not", (ce.FROZEN_SCALE,), {}, _each_head("affine", _input_norm)),
    _claim("attention.gauge", "W_Q M, W_K M^-T and W_V N, N^-1 W_O leave the forward pass unchanged",
           f"seed: 'You do not need to reason about W_Q and W_K independently'; {PAPER}, 'Summarizing Attention Heads'",
           "QK part: no rotary, no QK-norm (or M commuting with them: under rotary M is a scaled rotation in each pair; "
           "under QK-norm M = I)",
           (ALWAYS,), {}, _each_head("gauge"), _prepare_gauge),
    _claim("mlp.formula", "mlp(x) = act(x W_in + b_in) W_out + b_out (gated: (act(x W_gate) * x W_in) W_out)",
           f"{PAPER}, 'Transformer Overview'", "always (where there is an MLP)", (HAS_MLP,), dict(attn_only=False),
           lambda a: _mlp(a.n_layers, a.gated, a.act)),
    _claim("logits.linear_in_final_resid", "logits = x_L W_U + b_U", "seed: 'The final logits are linear in x_L: logits = W_U x_L'",
           "no final norm and no logit softcap (and no transform head)", (NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD),
           dict(final_norm=False, logit_softcap=None, unembed_transform=False), lambda a: _linear(a.n_layers)),
    _claim("logits.decomposition", "logits = sum_c (c / s_final) W_U + remainder, over x_0, every head, every MLP, every bias",
           "seed: 'the model's output logits decompose exactly into a sum of per-head and per-layer contributions'",
           "exact with the final norm's scale frozen and no softcap", (NO_POST_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD),
           dict(logit_softcap=None, unembed_transform=False), lambda a: _decomposition(block_kind(a), _unembed_norm(a), a.n_layers)),
    _claim("logits.heads_only", "logits = x_0 W_U + sum_{l,h} head_{l,h} W_U",
           "seed: 'logits = W_U x_L = W_U x_0 + sum_{l,h} W_U Attn_h(x)'; 'There is no approximation here. This is an exact identity.'",
           "attention-only, no biases, no final norm (and no norm on a sublayer's output)",
           tuple(heads_only(1, 1).assumptions) + (NO_POST_NORM, NO_OUTPUT_NORM),
           dict(attn_only=True, o_bias=False, v_bias=False, unembed_bias=False, logit_softcap=None, final_norm=False),
           lambda a: _heads_only(a.n_layers, a.n_heads)),
    _claim("paths.attention_only", "the (1+H)^L path expansion with virtual weights", f"{PAPER}, 'Path Expansion of Logits' and "
           "'Virtual Attention Heads'", "attention-only, frozen patterns (no norms, no b_V or b_O)", ATTN_ONLY_FROZEN,
           dict(attn_only=True, norm="none", v_bias=False, o_bias=False), lambda a: _paths(a.n_layers, a.n_heads)),
    _claim("ablation.direct_effect", "zero-ablating a last-layer head moves the logits by exactly -head W_U",
           "seed: 'we can ask: what does the model compute counterfactually if we ablate v? The linear structure makes such "
           "interventions clean.'", "no final norm (or its scale frozen), no softcap; and nothing but W_U reads the head "
           "(attention-only or parallel last layer, no output norm)", (NO_FINAL_NORM, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD, ce.DIRECT_PATH),
           dict(final_norm=False, logit_softcap=None, unembed_transform=False), lambda a: _direct(a.n_layers, a.n_heads),
           _prepare_ablation),
    _claim("norm.folding", "folding norm gains/biases and centring W_U leave log-probabilities unchanged",
           f"{PAPER}, 'Additional Intuition and Observations' (layer norm folding); TransformerLens fold_ln, center_unembed",
           "pre-norm layernorm / rmsnorm, no logit softcap", (PRE_NORM, NO_LOGIT_SOFTCAP), dict(logit_softcap=None),
           lambda a: _folding(_unembed_norm(a), a.n_layers), _prepare_folding),
    _claim("patching.direct_effect", "patching a last-layer head's write from h to h' (its value on other tokens) moves the "
           "logits by exactly (h' - h) W_U (through the final norm with its scale frozen: S_f^{-1} (h' - h) C G_f W_U)",
           "seed: 'locating the components - determining which heads and MLP neurons causally affect that behaviour, typically "
           "via activation patching'; 'ablate a head (or factor), observe the exact change in output'",
           "no final norm or its scale frozen at the clean run's, no softcap, no transform head; and nothing but W_U reads the "
           "head (attention-only or parallel last layer, no output norm); with the final norm live it fails",
           (FINAL_NORM_FROZEN, NO_LOGIT_SOFTCAP, NO_TRANSFORM_HEAD, ce.DIRECT_PATH), dict(logit_softcap=None, unembed_transform=False),
           lambda a: _patching(a.n_layers, a.n_heads, a.norm if a.final_norm else "none"), _prepare_patching),
)}
