"""Evaluating a claim's instances on one trace, a group of instances at a time, and measuring their errors.

The instances of one identity that differ only in their layer and head (a claim's
per-head instances: one derivation with symbolic ``l`` and ``h``) are evaluated
together. :func:`~circuitproof.properties._bindings.bind_group` binds their atoms: an
atom with the same tensor for every instance once, the others stacked on a leading
instance axis and padded with singleton axes to the rank ``R`` of the largest atom,
so that every atom broadcasts against the others::

    x_l    [B, P, D]   ->  [N, B, P, D]      (heads of several layers)
    W_Q    [D, Dh]     ->  [N, 1, D, Dh]
    mask   [P, P]          (heads of one layer: the same tensor, bound once)

and the compiled sides (``@``, ``+``, ``*``, entrywise and row-wise functions, all
broadcasting over leading axes) are evaluated once for the ``N`` instances. A side
that reads only unstacked atoms has no instance axis and serves every instance. An
instance that cannot be bound, or tensors that do not stack, send the group one by
one through :func:`~circuitproof.properties._bindings.bind_claim`, as a lone instance
goes, so that each is reported (or raises) as on its own.

:func:`errors` then measures each instance as on its own: ``max|lhs_i - rhs_i|``
(NaN counts as infinite; two infinities of the same sign agree) relative to the
scale of instance ``i``: the largest finite ``|rhs_i|`` or, where larger, of its
magnitude (``symbolic._compile.compile_magnitude``), else of ``|lhs_i|``. The worst entry's
index is computed for the worst instance only, in the instance's own shape (the
broadcast of its sides' shapes, without the padding). Evaluation runs in inference
mode: its tensors are its own, never differentiated (a claim's ``prepare`` hook,
which may differentiate, runs outside it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from ..numeric.bind import Unbindable
from ..symbolic._compile import CompileError
from ._bindings import as_numpy, bind_claim, bind_group, group_plan, pad_group

__all__ = ["Measured", "errors", "evaluate_instances", "evaluate_comparisons"]

_INF = float("inf")


class Measured(NamedTuple):
    """One evaluated instance (or comparison): its errors, and ``locate() -> (index of the worst entry, shape)``.

    A named tuple (a catalogue check makes dozens an example: a third of a frozen dataclass' cost to build)."""

    label: str
    layer: int | None
    head: int | None
    max_abs: float
    rel: float
    locate: Callable[[], tuple[tuple[int, ...], tuple[int, ...]]]


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.append(i)
    return tuple(reversed(index))


def _leading(x: object, rank: int) -> np.ndarray:
    """``x`` with ``rank + 1`` axes: unchanged if it has the instance axis already, else ``[1, ..., 1, *shape]``."""
    t = as_numpy(x)
    return t if t.ndim == rank + 1 else t.reshape((1,) * (rank + 1 - t.ndim) + t.shape)


def _finite_max(t: np.ndarray, n: int) -> np.ndarray:
    """``[n]``: the largest finite ``|t_i|`` of each instance (0 where there is none)."""
    return np.nan_to_num(np.abs(t), nan=0.0, posinf=0.0).reshape(n, -1).max(axis=1)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of two shapes of equal length (a 1 stretches to the other size)."""
    return a if a == b else tuple(x if x != 1 else y for x, y in zip(a, b))


def errors(lhs: object, rhs: object, magnitude: object | None, n: int, rank: int,
           natural: int) -> tuple[list[tuple[float, float]], Callable[[int], tuple[tuple[int, ...], tuple[int, ...]]]]:
    """``[(max abs error, relative error)]`` of each of ``n`` instances, and ``locate(i) -> (worst index, shape)``.

    ``lhs``, ``rhs`` and ``magnitude`` (torch tensors or NumPy arrays) have ``rank + 1`` axes
    (a leading instance axis of size ``n``) or at most ``rank`` (the same for every
    instance); ``natural`` is the rank of one instance's result, whose shape ``locate`` reports.
    """
    with np.errstate(all="ignore"):  # inf - inf and inf * 0 (masked scores) are NaN by design, handled below
        return _errors(_leading(lhs, rank), _leading(rhs, rank), magnitude, n, rank, natural)


def _errors(a: np.ndarray, b: np.ndarray, magnitude: object | None, n: int, rank: int, natural: int):
    if a.dtype != b.dtype:
        a, b = a.astype(np.float64), b.astype(np.float64)
    full = (n, *_broadcast(a.shape, b.shape)[1:])
    shape = full[len(full) - natural:] if natural else ()
    if 0 in full:
        return [(0.0, 0.0)] * n, lambda i: ((), shape)
    diff = np.abs(a - b)
    m = _leading(magnitude, rank) if magnitude is not None else None
    # every entry finite (the common case): the maxima of |a - b| and of max(|b|, |m|) (the scale) over each instance's
    # entries, one reduction each; a part without the instance axis (the same for every instance) has one maximum, which
    # serves them all
    parts = (diff, np.abs(b) if m is None else np.maximum(np.abs(b), np.abs(m)))
    maxima = [[p.max().item()] if len(p) == 1 else p.reshape(len(p), -1).max(axis=1).tolist() for p in parts]  # NaN and inf propagate
    maxima = [row * n if len(row) < n else row for row in maxima]  # one maximum serves every instance
    if math.isfinite(sum(maxima[0]) + sum(maxima[1])):  # no NaN or inf (an overflowing sum of finite ones takes the general path below, as right)
        max_abs, scale = maxima

        def locate(i: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
            return _unravel(int(diff[i if len(diff) > 1 else 0].argmax()), shape), shape
    else:
        a, b = np.broadcast_to(a, full), np.broadcast_to(b, full)
        m = np.broadcast_to(m, full) if m is not None else None
        # NaN is an infinite error; equal entries agree, two infinities of the same sign (masked -inf scores) included
        diff = np.nan_to_num(np.where(a == b, 0.0, np.abs(a - b)), nan=_INF, posinf=_INF)
        scales = [diff.reshape(n, -1).max(axis=1), _finite_max(b, n)] + ([_finite_max(m, n)] if m is not None else [])
        values = np.stack(scales).tolist()
        max_abs, scale = values[0], [max(s) for s in zip(*values[1:])]

        def locate(i: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
            return _unravel(int(diff[i].argmax()), shape), shape
    if 0.0 in scale:  # nothing to measure against in rhs: the scale of lhs
        scale = [s or a_s for s, a_s in zip(scale, _finite_max(np.broadcast_to(a, full), n).tolist())]
    out = [(m, 0.0 if m == 0.0 else (m / s if s > 0 else _INF)) for m, s in zip(max_abs, scale)]
    return out, locate


def _ranks(env: dict[str, object]) -> dict[str, int]:
    return {name: (v.dim() if isinstance(v, torch.Tensor) else -1) for name, v in env.items()}


def _group(instances) -> list[list[int]]:
    """Positions of the instances, grouped by identity (per-head instances of one derivation share theirs)."""
    groups: dict[tuple, list[int]] = {}
    for i, inst in enumerate(instances):
        groups.setdefault((id(inst.identity), inst.optional), []).append(i)
    return list(groups.values())


_GROUPS: dict[int, tuple] = {}


def _groups(instances) -> list[tuple[list, tuple | None]]:
    """``[(members, bind plan)]``: the instances grouped by identity (:func:`_group`), each group of several with its
    :func:`~circuitproof.properties._bindings.group_plan` (or None when the instances' atoms do not line up).

    Kept per instances tuple (a claim's instances are kept per architecture shape, so every example of one shape
    reuses them); the tuple is kept with its entry, so that its id cannot be reused while the entry lives.
    """
    entry = _GROUPS.get(id(instances))
    if entry is not None and entry[0] is instances:
        return entry[1]
    out = []
    for group in _group(instances):
        members = [(pos, instances[pos]) for pos in group]
        try:
            plan = group_plan([inst.atoms for _, inst in members]) if len(members) > 1 else None
        except KeyError:  # instances whose atoms differ in name: bind_group raises too, and they go one by one
            plan = None
        out.append((members, plan))
    if len(_GROUPS) >= 512:
        _GROUPS.clear()
    _GROUPS[id(instances)] = (instances, out)
    return out


def _measure(members, env: dict[str, object], ranks: dict[str, int], sides, out: dict[int, Measured]) -> None:
    """Evaluate the compiled sides once on the group's env; a Measured for each member."""
    compiled, (lhs_names, rhs_names) = sides
    rank = max(max(ranks.values(), default=0), 0)
    natural = max([0] + [ranks.get(name, 0) for name in lhs_names + rhs_names])  # one instance's result: the rank of its largest atom
    n = len(members)
    if compiled.sides.plain:  # products, sums, transposes, inverses: on NumPy arrays, a third of torch's cost per operation here
        env = {name: v if type(v) is float else as_numpy(v) for name, v in env.items()}
        lhs, rhs, mag = compiled.sides(pad_group(env, ranks, n) if n > 1 else env)
    else:
        with torch.inference_mode():  # opaque functions (softmax, activations, norms) are torch's; no autograd bookkeeping
            lhs, rhs, mag = compiled.sides(pad_group(env, ranks, n) if n > 1 else env)
    measured, locate = errors(lhs, rhs, mag, n, rank, natural)
    for k, ((pos, inst), (max_abs, rel)) in enumerate(zip(members, measured)):
        out[pos] = Measured(inst.label, inst.layer, inst.head, max_abs, rel, lambda k=k: locate(k))


def _given(ctx, inst) -> dict[str, object]:
    """The values given for one instance: ``ctx.given`` and its (layer, head) entry of each ``ctx.per_head`` stack."""
    if not ctx.per_head:
        return ctx.given
    return {**ctx.given, **{name: stack[inst.layer, inst.head] for name, stack in ctx.per_head.items() if name in inst.atoms}}


def _one_by_one(members, ctx, live: bool, out: dict[int, Measured], miss) -> None:
    for pos, inst in members:
        try:
            env = bind_claim(inst.atoms, ctx.arch, ctx.weights, ctx.trace, given=_given(ctx, inst), live=live)
            _measure([(pos, inst)], env, _ranks(env), inst.sides, out)
        except (Unbindable, CompileError) as err:
            miss(inst, err)


@functools.lru_cache(maxsize=64)
def _every_head(L: int, H: int) -> list[tuple[int, int]]:
    """``[(l, h)]`` of every head, layer by layer (kept: read-only)."""
    return [(l, h) for l in range(L) for h in range(H)]


def evaluate_instances(instances, ctx, live: bool) -> tuple[list[Measured], list[str], list[str]]:
    """(measured instances in order, unbound ones, skipped optional ones), each instance's atoms bound from ``ctx``.

    An instance whose atoms cannot be bound (:class:`Unbindable`) or compiled
    (:class:`CompileError`) is unbound, or skipped if optional, with the reason. A
    group of instances is bound and evaluated together (``bind_group``); if any of
    them cannot be, or their tensors do not stack, they are taken one by one.
    """
    out: dict[int, Measured] = {}
    unbound, skipped = [], []

    def miss(inst, err) -> None:
        (skipped if inst.optional else unbound).append(f"{inst.label}: {err}")

    for members, plan in _groups(instances):
        if len(members) == 1:
            _one_by_one(members, ctx, live, out, miss)
            continue
        try:
            atoms = members[0][1].atoms
            stacks = {name: stack for name, stack in ctx.per_head.items() if name in atoms}
            if stacks:  # each member's (layer, head) entry, [N, *shape], by one index of each stack
                where = [(inst.layer, inst.head) for _, inst in members]
                if where == _every_head(*next(iter(stacks.values())).shape[:2]):  # all of them, layer by layer: a view
                    stacks = {name: stack.flatten(0, 1) for name, stack in stacks.items()}
                else:
                    layers, heads = (torch.tensor(v) for v in zip(*where))
                    stacks = {name: stack[layers, heads] for name, stack in stacks.items()}
            env, ranks = bind_group([inst.atoms for _, inst in members], ctx.arch, ctx.weights, ctx.trace,
                                    given=ctx.given, per_instance=stacks, live=live, plan=plan)
            _measure(members, env, ranks, members[0][1].sides, out)
        except Exception:  # noqa: BLE001 - some instance cannot be bound or evaluated, or the tensors do not stack:
            _one_by_one(members, ctx, live, out, miss)  # one by one, each reported (or raising) as on its own
    return [out[pos] for pos in sorted(out)], unbound, skipped


def evaluate_comparisons(comparisons) -> list[Measured]:
    """Each comparison measured as an instance (with its magnitude, if it has one); those of one label and shape together."""
    if not comparisons:
        return []
    with torch.inference_mode():  # the stacks and errors are this evaluation's own tensors: no autograd bookkeeping
        return _comparisons(comparisons)


def _per_layer_head(c) -> list[Measured]:
    """A comparison whose leading axes run over layers and heads: each (layer, head) measured as an instance of its own."""
    lhs, rhs, k = torch.as_tensor(c.lhs), torch.as_tensor(c.rhs), len(c.per)
    lead = tuple(lhs.shape[:k])
    if tuple(rhs.shape[:k]) != lead:
        raise ValueError(f"comparison {c.label!r}: the sides' leading {c.per} axes differ ({lead} and {tuple(rhs.shape[:k])})")
    n, rank = math.prod(lead), lhs.dim() - k
    mag = None if c.magnitude is None else torch.as_tensor(c.magnitude)
    if mag is not None and tuple(mag.shape[:k]) != lead:
        raise ValueError(f"comparison {c.label!r}: the magnitude's leading {c.per} axes are {tuple(mag.shape[:k])}, not {lead}")
    mag = None if mag is None else mag.reshape(n, *mag.shape[k:])
    measured, locate = errors(lhs.reshape(n, *lhs.shape[k:]), rhs.reshape(n, *rhs.shape[k:]), mag, n, rank, rank)
    out = []
    for i, (max_abs, rel) in enumerate(measured):
        named = dict(zip(c.per, _unravel(i, lead)))
        out.append(Measured(c.label, named.get("layer", c.layer), named.get("head", c.head), max_abs, rel, lambda i=i: locate(i)))
    return out


def _padded(comparisons, group: list[int], side: str, shape: tuple[int, ...], rank: int) -> torch.Tensor:
    """``[N, 1, ..., 1, *shape]``: the ``side`` of each comparison of ``group``, padded to ``rank`` axes, on an instance axis."""
    return torch.stack([torch.as_tensor(getattr(comparisons[i], side)).reshape((1,) * (rank - len(shape)) + shape) for i in group])


def _comparisons(comparisons) -> list[Measured]:
    groups: dict[tuple, list[int]] = {}
    out: dict[int, Measured] = {}
    stacked: list[Measured] = []  # the comparisons over layers and heads, after the others
    for i, c in enumerate(comparisons):
        if c.per:
            stacked += _per_layer_head(c)
            continue
        lhs, rhs = torch.as_tensor(c.lhs), torch.as_tensor(c.rhs)
        mshape = None if c.magnitude is None else tuple(torch.as_tensor(c.magnitude).shape)
        groups.setdefault((c.label, tuple(lhs.shape), tuple(rhs.shape), mshape, lhs.dtype, rhs.dtype), []).append(i)
    for (_, lshape, rshape, mshape, _, _), group in groups.items():
        rank = max(len(lshape), len(rshape), len(mshape or ()))
        mag = None if mshape is None else _padded(comparisons, group, "magnitude", mshape, rank)
        measured, locate = errors(_padded(comparisons, group, "lhs", lshape, rank), _padded(comparisons, group, "rhs", rshape, rank),
                                  mag, len(group), rank, rank)
        for k, (i, (max_abs, rel)) in enumerate(zip(group, measured)):
            c = comparisons[i]
            out[i] = Measured(c.label, c.layer, c.head, max_abs, rel, lambda k=k, locate=locate: locate(k))
    return [out[i] for i in sorted(out)] + stacked
