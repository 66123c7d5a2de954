"""The Claim object and the evaluation of its identities on one forward pass.

A :class:`Claim` evaluates concrete identities of the symbolic layer
(:class:`Instance` s, compiled once and cached per architecture shape) on a
trace: each side is compiled (``Identity.compile``: both sides and the magnitude of the right one in one program), its atoms
bound to the trace's and the weights' tensors (``_bindings.bind_claim``), and the
two sides compared (``_evaluate``: the instances of one derivation, every head's,
are evaluated together and measured one by one). Claims about running the model
twice add the comparison of the two runs (a ``prepare`` hook computes the
transformed weights, reruns and binds what it computed). Nothing here restates a formula.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from .. import UnsupportedError
from ..arch import Arch
from ..numeric import Trace, Weights, run
from ..numeric.bind import Unbindable
from ..symbolic import Assumption, Identity
from ._evaluate import evaluate_comparisons, evaluate_instances
from ._evidence import FAIL, INCONCLUSIVE, NOT_APPLICABLE, PASS, Evidence, Where

__all__ = ["Claim", "Instance", "Comparison", "Context", "rerun_or_reference", "RTOL_FLOAT64", "RTOL_FLOAT32", "default_tolerance"]

RTOL_FLOAT64 = 1e-10
RTOL_FLOAT64_REASON = ("float64 throughout: rounding through these few products and sums is ~1e-15 of the magnitude of their terms, "
                       "so 1e-10 leaves room only for rounding, never for a missing term (a dropped bias, head or scale moves the "
                       "result by O(1))")
RTOL_FLOAT32 = 1e-4
RTOL_FLOAT32_REASON = ("float32 arithmetic (unit roundoff 6e-8): each step perturbs by <= 1e-6 relative; through <= 3 layers of O(1)-gain "
                       "random weights we allow an amplification of 100 (tests/numeric/adapters/test_llama.py measured <= 2.3e-5)")


def default_tolerance(trace: Trace) -> tuple[float, str]:
    """1e-10 for a float64 trace, 1e-4 for a float32 or lower one, each with its reason."""
    if trace.resid_pre.dtype == torch.float64:
        return RTOL_FLOAT64, RTOL_FLOAT64_REASON
    return RTOL_FLOAT32, RTOL_FLOAT32_REASON


_COMPILED: dict[int, tuple] = {}


def _compiled(identity: Identity) -> tuple:
    """(compiled identity, names of the atoms each side reads), once per identity.

    The compiled identity's ``sides(env)`` gives lhs, rhs and the magnitude of rhs's terms
    in one program. Cached: an Identity is immutable, so its id is a stable key (the cache keeps it alive).
    """
    key = id(identity)
    if key not in _COMPILED:
        from ..symbolic._compile import atoms_of

        _COMPILED[key] = (identity, identity.compile(), (atoms_of(identity.lhs), atoms_of(identity.rhs)))
    return _COMPILED[key][1:]


def _concrete(index: tuple, layer: int | None, head: int | None) -> tuple:
    """An atom's indices with the symbols ``l`` and ``h`` replaced by the instance's layer and head."""
    out = []
    for i in index:
        symbols = getattr(i, "free_symbols", None)
        if symbols:
            i = int(i.subs({s: layer if s.name == "l" else head for s in symbols}))
        out.append(i)
    return tuple(out)


@dataclass(frozen=True)
class Instance:
    """One identity a claim evaluates, where (layer, head: the values of its symbolic indices), and whether a trace may lack its atoms."""

    label: str
    identity: Identity
    layer: int | None = None
    head: int | None = None
    optional: bool = False  # evaluated where the trace has its atoms (e.g. pre-softmax scores), skipped otherwise

    @property
    def compiled(self):
        return _compiled(self.identity)[0]

    @property
    def sides(self) -> tuple:
        """(compiled identity, (atoms the lhs reads, atoms the rhs reads)): what evaluating it needs."""
        return _compiled(self.identity)

    @functools.cached_property
    def atoms(self) -> dict[str, tuple[str, tuple]]:
        """The compiled identity's atoms with this instance's layer and head substituted."""
        return {name: (kind, _concrete(idx, self.layer, self.head)) for name, (kind, idx) in self.compiled.atoms.items()}


@dataclass(frozen=True)
class Comparison:
    """A quantity observed twice (e.g. the logits of two runs) that the claim says are equal.

    With ``per``, the leading axes of ``lhs`` and ``rhs`` run over layers and heads (e.g. every
    head's pattern, ``[L, H, B, P, P]`` with ``per=("layer", "head")``): one comparison for all,
    whose worst entry says which layer and head. ``magnitude`` (broadcastable to ``rhs``, the same
    leading axes) bounds the terms ``rhs`` is computed from, as an instance's magnitude does: the
    error is relative to the larger of ``max|rhs|`` and ``max|magnitude|`` (a pattern's rounding
    follows its scores, not its own size: ``symbolic._compile.softmax_magnitude``).
    """

    label: str
    lhs: torch.Tensor
    rhs: torch.Tensor
    layer: int | None = None
    head: int | None = None
    per: tuple[str, ...] = ()  # leading axes that run over layers or heads ("layer", "head"): the worst entry's names them
    magnitude: torch.Tensor | None = None


@dataclass
class Context:
    """What a prepare hook sees: the model, the trace, how to rerun the target, and whether the conditions are assumed."""

    arch: Arch
    weights: Weights
    trace: Trace
    rerun: Callable[[Arch, Weights], Trace]
    assume: bool
    notes: list[str] = field(default_factory=list)
    given: dict[str, object] = field(default_factory=dict)  # atom name -> value, for every instance
    per_head: dict[str, torch.Tensor] = field(default_factory=dict)  # atom name -> [L, H, *shape]: the value at (layer, head)
    comparisons: list[Comparison] = field(default_factory=list)
    # what runs the model with a component replaced (numeric.interventions): a Reference or an Adapter; None: the reference
    target: object | None = None


def _where(label: str, layer: int | None, head: int | None, index: tuple[int, ...], shape: tuple[int, ...]) -> Where:
    """Matrices are ``[..., batch, rows, cols]`` with rows the positions: read batch and position off the worst index."""
    batch = index[-3] if len(shape) >= 3 else None
    position = index[-2] if len(shape) >= 2 else None
    return Where(label, layer, head, batch, position)


@dataclass(frozen=True, eq=False)
class Claim:
    """A claim of the framework: what it states, where it comes from, when it holds, and how it is checked.

    ``conditions`` are the Assumptions under which it holds (``applies``);
    ``where`` are ``archs(**where)`` constraints that draw architectures where it
    applies (property tests filter the rest by ``applies``). ``identities(arch)``
    are the concrete symbolic identities it evaluates. ``check`` evaluates them on a
    trace and returns :class:`Evidence`.
    """

    id: str
    statement: str
    source: str
    holds_when: str
    conditions: tuple[Assumption, ...]
    where: Mapping[str, object]
    instances: Callable[[Arch], tuple[Instance, ...]] = field(repr=False)
    prepare: Callable[[Context, tuple[Instance, ...]], None] | None = field(default=None, repr=False)

    def identities(self, arch: Arch) -> tuple[Identity, ...]:
        """The concrete identities of the symbolic layer this claim evaluates for ``arch``."""
        return tuple(i.identity for i in self.instances(arch))

    def applies(self, arch: Arch) -> tuple[bool, str]:
        """Whether every condition holds for ``arch``; the reason of the first that does not."""
        for a in self.conditions:
            if not a.holds(arch):
                return False, f"{a.name}: {a.reason}"
        return True, "all conditions hold"

    def check(self, arch: Arch, weights: Weights, trace: Trace, *, rtol: float | None = None, rtol_reason: str | None = None,
              rerun: Callable[[Arch, Weights], Trace] | None = None, assume: bool = True, target: object | None = None) -> Evidence:
        """Evaluate the claim on ``trace`` (a forward pass of ``arch`` with ``weights``).

        ``rtol`` (default: :func:`default_tolerance`) bounds ``max|lhs - rhs| / scale``, the
        scale being ``max|rhs|`` or, where larger, the magnitude of the terms that make up
        ``rhs`` (``|a| |b|`` for a product: cancellation does not shrink it).
        ``rerun(arch, weights) -> Trace`` runs the same target with other weights (the
        claims that run the model twice; default the reference on the trace's tokens).
        ``assume=False`` drops the conditions: the claim is evaluated even where it
        does not apply, and frozen pieces (norm scales) are bound live; this is how a
        counterexample is found. ``target`` runs the same model with a component replaced
        (the claims that intervene: a :class:`~circuitproof.numeric.interventions.Reference`
        or an Adapter; default the reference with ``weights`` in the trace's dtype).
        """
        if assume:
            ok, reason = self.applies(arch)
            if not ok:
                return Evidence(self.id, NOT_APPLICABLE, detail=reason)
        if rtol is None:
            rtol, default_reason = default_tolerance(trace)
            rtol_reason = rtol_reason or default_reason
        rtol_reason = rtol_reason or "given by the caller"
        tokens = trace.tokens
        ctx = Context(arch, weights, trace, rerun or (lambda a, w: run(a, w, tokens, dtype=trace.resid_pre.dtype)), assume, target=target)
        instances = self.instances(arch)
        try:
            if self.prepare is not None:
                self.prepare(ctx, instances)
        except Unbindable as err:
            return Evidence(self.id, INCONCLUSIVE, tolerance=rtol, tolerance_reason=rtol_reason, detail=f"cannot evaluate: {err}")
        # instances of one derivation (every head's) are evaluated together, each measured on its own (_evaluate)
        results, unbound, skipped = evaluate_instances(instances, ctx, live=not assume)
        results += evaluate_comparisons(ctx.comparisons)
        notes = list(ctx.notes)
        if skipped:
            notes.append(f"skipped {len(skipped)} optional instance(s) ({skipped[0]})")
        if not results:
            return Evidence(self.id, INCONCLUSIVE, tolerance=rtol, tolerance_reason=rtol_reason,
                            detail="; ".join([f"cannot evaluate: {unbound[0] if unbound else 'no instance'}"] + notes))
        worst = results[0]
        for measured in results[1:]:
            if measured.rel > worst.rel:
                worst = measured
        max_abs, rel = worst.max_abs, worst.rel
        where = _where(worst.label, worst.layer, worst.head, *worst.locate())
        notes.insert(0, f"{len(results)} evaluated" + ("" if assume else ", conditions dropped"))
        if rel > rtol:
            verdict = FAIL
        elif unbound:
            verdict = INCONCLUSIVE
            notes.append(f"cannot evaluate {len(unbound)} instance(s) ({unbound[0]})")
        else:
            verdict = PASS
        return Evidence(self.id, verdict, max_abs, rel, where, rtol, rtol_reason, "; ".join(notes))


def rerun_or_reference(ctx: Context, arch: Arch, weights: Weights) -> Trace:
    """``ctx.rerun`` on transformed weights; the reference if the target cannot express the transformed Arch (noted)."""
    try:
        return ctx.rerun(arch, weights)
    except UnsupportedError as err:
        ctx.notes.append(f"rerun on the reference: the target cannot express the transformed model ({err})")
        return run(arch, weights, ctx.trace.tokens, dtype=ctx.trace.resid_pre.dtype)
