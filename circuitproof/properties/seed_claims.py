"""The seed's own formulas as claims (``seed.*``): stricter than the catalogue, evaluated as the seed writes them.

``SEED_CLAIMS`` maps each id to a :class:`~circuitproof.properties.claims.Claim` (the same
machinery as ``CLAIMS``). Each evaluates an identity of :mod:`circuitproof.symbolic.seed`
or :mod:`~circuitproof.symbolic.seed_strict`; its conditions are that identity's
assumptions. Column-convention identities are evaluated through one more checked step,
``x^{col} = x^T, W^{col} = W^T`` (with the seed's ``1/sqrt(d)`` a named scalar), so that
their atoms bind to a trace:

====================== ================================================================ ===========================
claim                  the seed's form (row convention)                                 evaluated
====================== ================================================================ ===========================
seed.update_rule       ``x_{l+1} = x + Attn(x) + MLP(x + Attn(x))``                     ``seed.update_rule``, sublayers run
seed.layer_split       ``x_{l+1} = x_l + sum_h h_{l,h} + m_l`` (``f = sum_h Attn_h + MLP``) ``seed_strict.layer_split``
seed.logits_linear     ``logits = x_L W_U`` (``W_U x_L``)                               ``seed.logits_linear``
seed.qk                ``A = softmax(X W_QK X^T / sqrt(d_head) + M)``                   ``seed.qk``
seed.qk.d_model        ``A = softmax(X W_QK X^T / sqrt(d_model) + M)``                  ``seed_strict.qk_d_model``
seed.ov                ``h = A x W_V W_O`` on the stream ``x`` (``W_O W_V x_j``)        ``seed.ov``
seed.head_linear       ``h(x + y) = h(x) + h(y)`` for a fixed pattern                   ``seed_strict.head_linear``
seed.no_erasure        no component erases prior information (below)                    ranks of Jacobians
====================== ================================================================ ===========================

``seed.update_rule`` evaluates the seed's form with its sublayers as functions of the
stream: ``Attn_l(x_l)`` is what the attention adds (``a_l``, read from the trace);
``MLP_l(y)`` is the MLP sublayer applied to ``y``: its input norm, ``mlp.formula``, its
output norm.

``seed.no_erasure`` reads "no component erases prior information" to first order: each
layer's map ``x_l -> x_{l+1}`` loses no direction, ``rank(d x_{l+1} / d x_l) = P d_model``
(Jacobians over all positions, per sequence), which by the chain rule is
``rank(d x_L / d e) = rank(d x_0 / d e)`` (``x_0 = e`` without an embedding norm). Layer by
layer because the product is ill-conditioned: in a norm-free model the stream grows ~25x
a layer while some directions do not, so after three layers a kept direction can lie at
``2e-11`` of the largest singular value of ``d x_3 / d e`` (found by the thorough profile).
A direction counts as lost where its singular value is below the numerical-rank
threshold, ``n eps`` of the largest for an ``n x n`` Jacobian (:func:`rank_rtol`, the
convention of LAPACK and ``torch.linalg.matrix_rank``): rounding perturbs every singular
value by about ``eps`` of the largest, so a lost direction lies below it (``circuits.eraser_head``:
0; a post-LayerNorm's mean: ~1e-17), and whatever lies above it is kept, however small:
one generic layer kept a direction at ``9e-11`` of its largest (found by the thorough
profile), an RMSNorm after the add keeps the stream's scale at ~``1e-12`` through its eps.
"""

from __future__ import annotations

import functools
import operator

import sympy as sp
import torch

from ..arch import Arch
from ..numeric.bind import Unbindable
from ..numeric.reference import block
from ..numeric.reference import norm as reference_norm
from ..symbolic import Assumption, Identity, Rule, Step, seed, seed_strict
from ..symbolic import _atoms as at
from ..symbolic import claims_extra as ce
from ..symbolic._compile import CompileError
from ..symbolic.residual import NO_POST_NORM, block_kind
from ._bindings import bind_claim
from ._claim import Claim, Comparison, Context, Instance

__all__ = ["rank_rtol", "SEED_CLAIMS"]

SEED = "seed (../shared/seed/transformer-circuits-framework.txt)"


def rank_rtol(n: int) -> float:
    """The numerical-rank threshold of an ``n x n`` float64 Jacobian, relative to its largest singular value: ``n eps``.

    Rounding in computing the Jacobian perturbs each singular value by about ``eps`` times
    the largest, so a direction below ``n eps`` (2.4e-14 for 110 directions) of the largest
    cannot be told from a lost one, and one above it is kept, however small.
    """
    return n * torch.finfo(torch.float64).eps


NO_EMBED_NORM = Assumption(
    "no embedding norm", "an embedding norm keeps each position's radial direction only through eps (a singular value of "
    "d x_0 / d e near eps / mean(x^2) of the largest, 4e-7 in a drawn model): whether x_0 keeps it is a matter of eps, "
    "and any later norm squashes it further (7.6e-11 one layer on), so the ranks compare nothing real",
    lambda a: not a.embed_norm)
_l, _h = sp.Symbol("l", integer=True, nonnegative=True), sp.Symbol("h", integer=True, nonnegative=True)
_D_HEAD, _D_MODEL = sp.Symbol("d_head^{-1/2}", positive=True), sp.Symbol("d_model^{-1/2}", positive=True)


# ------------------------------------------------------------------ the column convention, as one more checked step
def _rows(exact: Identity, n_layers: int | None = None) -> Identity:
    """``exact`` with its column atoms replaced by transposed row atoms and ``1/sqrt(d)`` by a named scalar.

    The mapping is the identity's own "column convention" rules (``x_L`` made concrete
    with ``n_layers``); the added step is checked like every other.
    """
    mapping: dict = {}
    for step in exact.steps:
        if step.rule is not None and step.rule.name == "the column convention":
            mapping.update(step.rule.mapping)
    L = sp.Symbol("L", integer=True, nonnegative=True)
    for col, row in list(mapping.items()):
        if n_layers is not None and row.has(at.stream(L)):
            mapping[col] = row.xreplace({at.stream(L): at.stream(n_layers)})
    scalars = {s: v for s, v in ((_D_HEAD, 1 / sp.sqrt(at.D_HEAD)), (_D_MODEL, 1 / sp.sqrt(at.D_MODEL))) if exact.rhs.has(v)}
    rhs = exact.rhs.xreplace(mapping).xreplace({v: s for s, v in scalars.items()})
    rule = Rule("the column convention", "definition", {**mapping, **scalars}, "x^{col} = x^T, W^{col} = W^T; d^{-1/2} named")
    return Identity(exact.id, exact.statement, exact.lhs, rhs, exact.steps + (Step(rhs, "x^{col} = x^T, W^{col} = W^T", rule),),
                    exact.assumptions, frozen=exact.frozen)


@functools.lru_cache(maxsize=1)
def _qk() -> Identity:
    return _rows(seed.qk_formula()[0])


@functools.lru_cache(maxsize=1)
def _qk_d_model() -> Identity:
    return _rows(seed_strict.qk_d_model()[0])


@functools.lru_cache(maxsize=1)
def _ov() -> Identity:
    return _rows(seed.ov_formula()[0])


@functools.lru_cache(maxsize=8)
def _logits(L: int) -> tuple[Instance, ...]:
    return (Instance(f"seed.logits_linear[L={L}]", _rows(seed.logits_linear()[0], L)),)


@functools.lru_cache(maxsize=256)
def _per_head(which: str, l: int, h: int, flag: str = "") -> tuple[Instance, ...]:
    identity = {"qk": _qk, "qk.d_model": _qk_d_model, "ov": _ov, "linear": lambda: seed_strict.head_linear(flag)[0]}[which]()
    return (Instance(f"{identity.id}[l={l},h={h}]", identity, l, h),)


def _each_head(which: str, flag=lambda a: ""):
    return lambda arch: tuple(i for l in range(arch.n_layers) for h in range(arch.n_heads) for i in _per_head(which, l, h, flag(arch)))


@functools.lru_cache(maxsize=64)
def _layer_split(kind: str, L: int, H: int) -> tuple[Instance, ...]:
    identity = seed_strict.layer_split(kind, H)[0]
    return tuple(Instance(f"{identity.id}[l={l}]", identity, l) for l in range(L))


def _scales(ctx: Context, instances: tuple[Instance, ...]) -> None:
    """Bind the seed's ``1/sqrt(d)`` read as ``d_head`` and as ``d_model``."""
    ctx.given.update({_D_HEAD.name: ctx.arch.d_head ** -0.5, _D_MODEL.name: ctx.arch.d_model ** -0.5})


# ------------------------------------------------------------------ seed.update_rule: the sublayers as functions
def _atoms(identity: Identity, layer: int) -> dict[str, tuple[str, tuple]]:
    out = {}
    for side in (identity.lhs, identity.rhs):
        for symbol in side.atoms(sp.MatrixSymbol):
            kind, idx = at.atom_of(symbol)
            out[symbol.name] = (kind, tuple(int(i.subs(_l, layer)) if isinstance(i, sp.Basic) else i for i in idx))
    return out


def _norm(arch: Arch, w, slot: str, l: int, x: torch.Tensor) -> torch.Tensor:
    if slot not in arch.norm_slots():
        return x
    bias = w.get(f"ln_{slot}_b")
    return reference_norm(arch, x, w[f"ln_{slot}_w"][l], bias[l] if bias is not None else None).output


def _mlp_sublayer(ctx: Context, l: int):
    """``MLP_l(y)``: the input norm, ``mlp.formula`` (the symbolic layer's), the output norm (output, sandwich placements)."""
    arch, w = ctx.arch, ctx.weights.to(ctx.trace.resid_pre.dtype)
    if arch.attn_only:
        raise Unbindable("an attention-only model has no MLP")
    inst = Instance(f"mlp.formula[l={l}]", ce.mlp_formula(arch.gated, arch.act), l)
    slot_in = "attn_in" if arch.parallel_shared_norm else "mlp_in"

    def mlp(y: torch.Tensor) -> torch.Tensor:
        env = bind_claim(inst.atoms, arch, w, ctx.trace, given={"X^{mlp}_{l}": _norm(arch, w, slot_in, l, y)})
        out = inst.compiled.rhs(env)
        return _norm(arch, w, "mlp_out", l, out) if arch.norm_placement in ("output", "sandwich") else out

    return mlp


def _value(expr: sp.Basic, env: dict, sublayers: dict, x_l: sp.MatrixSymbol) -> torch.Tensor:
    """Evaluate a sum of atoms and sublayer applications (``Apply``) on bound tensors."""
    if isinstance(expr, seed.Apply):
        name, arg = expr.args[0].name, expr.args[1]
        if name.startswith("Attn"):
            if arg != x_l:
                raise Unbindable(f"Attn is observed at x_l only, not at {arg}")
            return sublayers["Attn"]
        return sublayers["MLP"](_value(arg, env, sublayers, x_l))
    if isinstance(expr, sp.MatAdd):
        return functools.reduce(operator.add, (_value(a, env, sublayers, x_l) for a in expr.args))
    if isinstance(expr, sp.MatrixSymbol):
        return env[expr.name]
    raise CompileError(f"seed.update_rule: cannot evaluate {type(expr).__name__} {expr}")


def _prepare_update_rule(ctx: Context, instances: tuple[Instance, ...]) -> None:
    identity = seed.update_rule()["update_rule.sequential"]
    for l in range(ctx.arch.n_layers):
        env = bind_claim({**_atoms(identity, l), "a": ("attn", (l,))}, ctx.arch, ctx.weights, ctx.trace)
        sublayers = {"Attn": env["a"], "MLP": _mlp_sublayer(ctx, l)}
        rhs = _value(identity.rhs, env, sublayers, at.stream(_l))
        ctx.comparisons.append(Comparison(f"seed.update_rule[l={l}]", env[identity.lhs.name], rhs, l))


# ------------------------------------------------------------------ seed.no_erasure
def _prepare_no_erasure(ctx: Context, instances: tuple[Instance, ...]) -> None:
    """``rank(d x_{l+1} / d x_l)`` against ``P d_model`` for every layer and sequence, at the trace's streams (the reference's layers)."""
    arch, trace = ctx.arch, ctx.trace
    weights = ctx.weights.to(torch.float64)
    B, P = trace.tokens.shape
    n = P * arch.d_model
    threshold, worst = rank_rtol(n), 1.0
    for b in range(B):
        for l in range(arch.n_layers):
            x = trace.resid_pre[l, b : b + 1].to(torch.float64).detach()  # [1, P, D]
            J = torch.autograd.functional.jacobian(lambda v, l=l: block(arch, weights, l, v), x, vectorize=True).reshape(n, n)
            s = torch.linalg.svdvals(J)
            ratio = s / s[:1].clamp_min(torch.finfo(s.dtype).tiny)
            kept = ratio[ratio > threshold]
            worst = min(worst, float(kept.min()) if kept.numel() else 0.0)
            label = f"rank of d x_{l + 1} / d x_{l} (sequence {b}) vs the {n} directions of x_{l}"
            ctx.comparisons.append(Comparison(label, torch.tensor(float(kept.numel()), dtype=torch.float64), torch.tensor(float(n)), l))
    ctx.notes.append(f"ranks over {n} directions; the smallest kept singular value is {worst:.2e} of the largest")


# ------------------------------------------------------------------ the catalogue
def _input_norm(arch: Arch) -> str:
    return arch.norm if "attn_in" in arch.norm_slots() else "none"


def _claims() -> dict[str, Claim]:
    from hypothesis import strategies as st

    no_rotary = st.sampled_from(["none", "learned"])
    qk = dict(q_bias=False, positional=no_rotary, qk_norm="none", attn_softcap=None)
    update = seed.update_rule()["update_rule.sequential"]
    return {c.id: c for c in (
        Claim("seed.update_rule", "x_{l+1} = x + Attn(x) + MLP(x + Attn(x)), the sublayers as functions of the stream",
              f"{SEED}, 'Additive updates, not overwriting'", "sequential blocks with an MLP, no post-norm", update.assumptions,
              dict(parallel=False, attn_only=False), lambda a: (), _prepare_update_rule),
        Claim("seed.layer_split", "x_{l+1} = x_l + sum_h h_{l,h} + m_l: f = sum_h Attn_h + MLP, with no b_O",
              f"{SEED}, 'State evolution ... Each f decomposes as: f = sum_h Attn_h + MLP'", "no post-norm, no output norm, no b_O",
              seed_strict.layer_split("sequential", 1)[0].assumptions, dict(o_bias=False),
              lambda a: _layer_split(block_kind(a), a.n_layers, a.n_heads)),
        Claim("seed.logits_linear", "logits = W_U x_L (column) = x_L W_U: no bias", f"{SEED}, 'The final logits are linear in x_L'",
              "no final norm, no b_U, no logit softcap, no transform head", seed.logits_linear()[0].assumptions,
              dict(final_norm=False, unembed_bias=False, logit_softcap=None, unembed_transform=False), lambda a: _logits(a.n_layers)),
        Claim("seed.qk", "A = softmax(x W_Q W_K^T x^T / sqrt(d_head) + mask), x what the head reads",
              f"{SEED}, 'alpha_ij = softmax_j(x_i^T W_Q^T W_K x_j / sqrt(d))'", "no query bias, rotary, QK-norm or score softcap; "
              "scale 1/sqrt(d_head)", seed.qk_formula()[0].assumptions, dict(qk, attn_scale=None), _each_head("qk"), _scales),
        Claim("seed.qk.d_model", "A = softmax(x W_Q W_K^T x^T / sqrt(d_model) + mask): sqrt(d) read as sqrt(d_model)",
              f"{SEED}, 'alpha_ij = softmax_j(x_i^T W_Q^T W_K x_j / sqrt(d))'", "as seed.qk, with scale 1/sqrt(d_model)",
              seed_strict.qk_d_model()[0].assumptions, dict(qk, attn_scale=None, d_model=4, d_head=4), _each_head("qk.d_model"), _scales),
        Claim("seed.ov", "head_i = sum_j A_ij x_j W_V W_O on the stream x, no b_V", f"{SEED}, 'Delta x_i = sum_j alpha_ij W_O W_V x_j'",
              "no value bias; the head reads the stream (no pre-norm or sandwich input norm)", seed.ov_formula()[0].assumptions,
              dict(v_bias=False), _each_head("ov")),
        Claim("seed.head_linear", "for a fixed pattern (and frozen norm scale) a head is linear: h(x + y) = h(x) + h(y)",
              f"{SEED}, 'for a fixed attention pattern, the head's contribution is a linear function of the residual stream'",
              "no value bias and no LayerNorm input bias (the scale frozen)", (ce.FROZEN_SCALE, seed_strict.NO_VALUE_BIAS,
                                                                                seed_strict.NO_INPUT_NORM_BIAS),
              dict(v_bias=False), _each_head("linear", _input_norm)),
        Claim("seed.no_erasure", "no component erases prior information: rank(d x_{l+1} / d x_l) = P d_model for every layer, "
              "so rank(d x_L / d e) = rank(d x_0 / d e)",
              f"{SEED}, 'No component erases prior information'; 'The residual stream does not compress or gate or route'",
              "no post-norm (a LayerNorm after the add erases each position's mean exactly; an RMSNorm keeps its scale only through eps), "
              "no embedding norm (it keeps a direction only through eps), and generic weights (a head writing -x erases: "
              "circuits.eraser_head)", (NO_POST_NORM, NO_EMBED_NORM), dict(embed_norm=False), lambda a: (),
              _prepare_no_erasure),
    )}


SEED_CLAIMS: dict[str, Claim] = _claims()
