"""Binding the claims' atoms to a Trace and Weights, and the weight transformations of the claims that run the model twice.

:func:`circuitproof.numeric.bind.bind` supplies the atoms of the catalogue; the
identities of :mod:`circuitproof.symbolic.claims_extra` add a few kinds, bound here
(shapes: B batch, P positions; a leading batch axis where the trace has one):

=============== ====================== =====================================================
kind            shape                  tensor
=============== ====================== =====================================================
onehot          [B, P, d_vocab]        one-hot rows of the tokens
positions       [P, d_model]           ``W_pos[:P]`` (zeros without learned positions)
embed_gain/bias [d_model, d_model]/[1, d_model]  the embedding norm's ``diag(g)`` and bias
mask            [P, P]                 0 where the key is visible, ``-inf`` elsewhere
mlp_input       [B, P, d_model]        what the MLP reads (after its input norm)
mlp_raw         [B, P, d_model]        the MLP's output, before any output norm
W_gate, b_gate  [d_model, d_mlp], [1, d_mlp]  (zeros where absent)
stream_flipped  [B, P, d_model]        ``x_l`` with its positions reversed (a second input)
in_scale_inv    [B, P, P]              ``diag(1 / s)`` of the attention's input norm: frozen at
                                       ``x_l``'s scale, or (live) each argument's own
in_gain/in_bias [d_model, d_model]/[1, d_model]  that norm's ``diag(g)`` and bias
norm_*          ...                    the norm before ``W_U`` (final, or the transform head's)
=============== ====================== =====================================================

Values a claim computes itself (gauge matrices, transformed weights, ablated
logits) are passed in ``given`` by name. :func:`bind_group` binds the atoms of many
instances of one identity at once, stacked on a leading instance axis.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..arch import Arch
from ..numeric import Trace, Weights
from ..numeric.bind import WEIGHT_KINDS, Unbindable, bind, bind_stacked, bound_atoms, bound_weight_atoms
from ..numeric.reference import attention_mask
from ..numeric.reference import norm as reference_norm

__all__ = ["as_numpy", "bind_claim", "bind_group", "group_plan", "pad_group", "EXTRA_KINDS", "gain", "unembed_norm_slot", "input_norm_scale"]

EXTRA_KINDS = frozenset({"onehot", "positions", "embed_gain", "embed_bias", "mask", "mlp_input", "mlp_raw", "W_gate", "b_gate",
                         "stream_flipped", "in_scale_inv", "in_gain", "in_bias", "norm_out", "norm_input", "norm_scale", "norm_gain",
                         "norm_bias", "ones_vocab"})
# the kinds read off the weights alone (their Arch and the dtype): kept per Weights object, for every trace of them
_OF_WEIGHTS = WEIGHT_KINDS | {"embed_gain", "embed_bias", "W_gate", "b_gate", "in_gain", "in_bias", "ones_vocab"}


def _stores(arch: Arch, weights: Weights, trace: Trace) -> tuple[dict, dict]:
    """Where bound atoms are kept: (per trace and weights, per weights alone); the second is the first when ``arch`` is not the
    weights' own (an atom of the weights is then bound for that Arch, and kept with the trace only)."""
    kept = bound_atoms(trace, weights)
    own = arch is weights.arch or arch == weights.arch
    return kept, (bound_weight_atoms(weights, trace.resid_pre.dtype) if own else kept)


def as_numpy(x: object) -> np.ndarray:
    """A NumPy view of a torch tensor (a copy only off the CPU or under autograd), or ``x`` as an array.

    The compiled identities that apply no opaque function (``program.plain``) are evaluated
    on these: at the sizes drawn here NumPy's cost per operation is a third of torch's.
    """
    if type(x) is np.ndarray:  # already one (an evaluated side, a transformed weight): no exception to raise and catch
        return x
    if not isinstance(x, torch.Tensor):  # a number
        return np.asarray(x)
    try:
        return x.numpy()  # a CPU tensor outside autograd: a view, no copy
    except (RuntimeError, TypeError):  # requires grad, or not on the CPU
        return x.detach().cpu().numpy()


def gain(arch: Arch, w: torch.Tensor) -> torch.Tensor:
    """A norm's effective gain: ``w`` or ``1 + w``."""
    return 1 + w if arch.norm_gain == "one_plus_w" else w


def unembed_norm_slot(arch: Arch) -> str | None:
    """The norm whose output ``W_U`` reads: "transform" (BERT's head), "final", or None."""
    if arch.unembed_transform:
        return "transform"
    return "final" if arch.final_norm else None


def _norm_params(arch: Arch, w: Weights, slot: str, layer: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    g, b = w[f"ln_{slot}_w"], w.get(f"ln_{slot}_b")
    if layer is not None:
        g, b = g[layer], (b[layer] if b is not None else None)
    return g, b


def _scale(arch: Arch, w: Weights, slot: str, layer: int | None, x: torch.Tensor) -> torch.Tensor:
    """The norm's divisor ``s`` of ``x`` ([B, P]), by the norm's own definition."""
    g, b = _norm_params(arch, w, slot, layer)
    return reference_norm(arch, x, g, b).scale[..., 0]


def input_norm_scale(arch: Arch, w: Weights, trace: Trace, layer: int) -> torch.Tensor:
    """``s`` of the attention's input norm at ``layer``, as the trace observed it (or from its observed input)."""
    nt = trace.norms.get("attn_in")
    if nt is None:
        raise Unbindable("the trace has no attention input norm")
    if nt.scale is not None:
        return nt.scale[layer][..., 0]
    return _scale(arch, w, "attn_in", layer, nt.input[layer])


def _mlp_input(arch: Arch, t: Trace, l: int) -> torch.Tensor:
    if arch.attn_only:
        raise Unbindable("an attention-only model has no MLP")
    if arch.parallel:
        slot = "attn_in" if arch.parallel_shared_norm else "mlp_in"
        return t.norms[slot].output[l] if slot in t.norms else t.resid_pre[l]
    if "mlp_in" in t.norms:
        return t.norms["mlp_in"].output[l]
    if t.resid_mid is None:
        raise Unbindable("the trace has no mid-layer stream, which the MLP reads")
    return t.resid_mid[l]


def _extra(kind: str, idx: tuple, arch: Arch, w: Weights, t: Trace, live: bool) -> torch.Tensor:
    dtype, P = t.resid_pre.dtype, t.tokens.shape[1]
    D = arch.d_model
    if kind == "onehot":
        return torch.nn.functional.one_hot(t.tokens, arch.d_vocab).to(dtype)
    if kind == "positions":
        return w.W_pos[:P] if arch.positional == "learned" else torch.zeros(P, D, dtype=dtype)
    if kind == "embed_gain":
        return torch.diag(gain(arch, w.ln_embed_w))
    if kind == "embed_bias":
        return w.ln_embed_b[None]
    if kind == "mask":
        return torch.zeros(P, P, dtype=dtype).masked_fill(~attention_mask(arch, idx[0], P), float("-inf"))
    if kind == "mlp_input":
        return _mlp_input(arch, t, idx[0])
    if kind == "mlp_raw":
        if t.mlp_out is None:
            raise Unbindable("the trace has no MLP output")
        return t.mlp_out[idx[0]]
    if kind == "W_gate":
        return w.W_gate[idx[0]]
    if kind == "b_gate":
        return w.b_gate[idx[0]][None] if "b_gate" in w else torch.zeros(1, arch.d_mlp, dtype=dtype)
    if kind == "stream_flipped":
        return t.resid_pre[idx[0]].flip(-2)
    if kind == "in_scale_inv":
        l, which = idx
        x = t.resid_pre[l]
        if not live or which == "x":
            s = input_norm_scale(arch, w, t, l)
        else:
            arg = x.flip(-2) if which == "y" else x + x.flip(-2)
            s = _scale(arch, w, "attn_in", l, arg)
        return torch.diag_embed(1.0 / s)
    if kind == "in_gain":
        return torch.diag(gain(arch, w.ln_attn_in_w[idx[0]]))
    if kind == "in_bias":
        b = w.get("ln_attn_in_b")
        return b[idx[0]][None] if b is not None else torch.zeros(1, D, dtype=dtype)
    if kind == "ones_vocab":
        return torch.ones(arch.d_vocab, 1, dtype=dtype)
    slot = unembed_norm_slot(arch)
    if slot is None or slot not in t.norms:
        raise Unbindable("no norm stands before the unembedding")
    nt = t.norms[slot]
    if kind == "norm_out":
        return nt.output
    if kind == "norm_input":
        return nt.input
    if kind == "norm_scale":
        s = nt.scale[..., 0] if nt.scale is not None else _scale(arch, w, slot, None, nt.input)
        return torch.diag_embed(s)
    if kind == "norm_gain":
        return torch.diag(gain(arch, w[f"ln_{slot}_w"]))
    if kind == "norm_bias":
        b = w.get(f"ln_{slot}_b")
        return b[None] if b is not None else torch.zeros(1, D, dtype=dtype)
    raise Unbindable(f"no tensor for atoms of kind {kind!r}")


def bind_claim(atoms: dict[str, tuple[str, tuple]], arch: Arch, weights: Weights, trace: Trace, *,
               given: dict[str, object] | None = None, live: bool = False) -> dict[str, object]:
    """``name -> tensor`` for every atom: ``given`` first, then the kinds above, then :func:`~circuitproof.numeric.bind.bind`.

    Dimensions (``d_vocab``, ...) are bound too, for expressions that divide by them.
    ``live`` binds norm scales from each argument instead of freezing them. An atom
    bound once from ``trace`` and ``weights`` is kept (:func:`~circuitproof.numeric.bind.bound_atoms`).
    """
    given = given or {}
    env: dict[str, object] = {"d_vocab": float(arch.d_vocab), "d_model": float(arch.d_model), "d_head": float(arch.d_head),
                              "d_mlp": float(arch.d_mlp)}
    kept, of_weights = _stores(arch, weights, trace)  # atoms bound before from this trace and these weights, from these weights
    missing = {}
    for name, (kind, idx) in atoms.items():
        store = of_weights if kind in _OF_WEIGHTS else kept
        if name in given:
            env[name] = given[name]
        elif (kind, idx, live) in store:
            env[name] = store[kind, idx, live]
        else:
            missing[name] = (kind, idx)
    if not missing:
        return env
    dtype = trace.resid_pre.dtype
    w = weights.to(dtype) if weights.dtype != dtype else weights
    rest = {}
    for name, (kind, idx) in missing.items():
        if kind in EXTRA_KINDS:
            try:
                env[name] = (of_weights if kind in _OF_WEIGHTS else kept)[kind, idx, live] = _extra(kind, idx, arch, w, trace, live)
            except (KeyError, AttributeError) as err:
                raise Unbindable(f"{name} ({kind}): {err}") from None
        else:
            rest[name] = (kind, idx)
    for name, value in bind(rest, arch, w, trace, scalars={"embed_scale": arch.embed_scale}).items():
        kind, idx = rest[name]
        if kind != "scalar":  # a scalar is bound by its name, not its kind
            (of_weights if kind in _OF_WEIGHTS else kept)[kind, idx, live] = value
        env[name] = value
    return env


_TOKENS: dict[tuple, int] = {}  # a group's atom keys -> a small int, the name its stack is kept under (hashed once)
_NEXT_TOKEN = itertools.count()


def group_plan(atoms: list[dict[str, tuple[str, tuple]]]) -> tuple[tuple[str, tuple | None, tuple, int, bool], ...]:
    """How :func:`bind_group` binds each atom of ``N`` instances (instance ``i``: ``atoms[i]``), worked out once per group.

    For each atom name: ``(name, the key every instance shares or None, every instance's key, the keys' token, whether
    they are of one kind)``. A function of the instances alone, so a caller may keep it for the next trace.
    """
    plan = []
    for name in atoms[0]:
        keys = tuple(a[name] for a in atoms)
        shared = keys[0] if all(k == keys[0] for k in keys) else None
        plan.append((name, shared, keys, _TOKENS.setdefault(keys, next(_NEXT_TOKEN)), all(k[0] == keys[0][0] for k in keys)))
    return tuple(plan)


def bind_group(atoms: list[dict[str, tuple[str, tuple]]], arch: Arch, weights: Weights, trace: Trace, *,
               given: dict[str, object] | None = None, per_instance: dict[str, torch.Tensor] | None = None,
               live: bool = False, plan: tuple | None = None) -> tuple[dict[str, object], dict[str, int]]:
    """One env for ``N`` instances of one identity (instance ``i``: ``atoms[i]``), and each atom's rank.

    ``given`` values serve every instance; ``per_instance`` gives atoms already stacked,
    ``[N, *shape]`` (instance ``i``'s value at ``i``). Stacked atoms come back ``[N, *shape]``;
    :func:`pad_group` pads them to broadcast against the others.

    An atom bound to the same tensor for every instance (given, or the same kind and
    indices) is bound once; otherwise the instances' tensors are stacked
    on a leading instance axis, ``[N, *shape]`` (:func:`pad_group` then pads them with
    singleton axes to the rank ``R`` of the largest atom, ``[N, 1, ..., 1, *shape]``, so
    that every atom broadcasts against the others). Stacks are kept with the trace like single atoms.
    Returns the env and ``name -> rank of one instance's tensor`` (-1 for a number).
    ``plan`` is :func:`group_plan` of ``atoms``, if the caller kept it.
    Raises :class:`Unbindable` as :func:`bind_claim` does for any instance.
    """
    plan = group_plan(atoms) if plan is None else plan
    kept, of_weights = _stores(arch, weights, trace)
    dtype = trace.resid_pre.dtype
    w = weights.to(dtype) if weights.dtype != dtype else weights
    scalars = {"embed_scale": arch.embed_scale}

    def one(name: str, key: tuple[str, tuple]) -> object:
        store = of_weights if key[0] in _OF_WEIGHTS else kept
        value = store.get((*key, live))
        if value is None:
            kind, idx = key
            if kind in EXTRA_KINDS:
                try:
                    value = _extra(kind, idx, arch, w, trace, live)
                except (KeyError, AttributeError) as err:
                    raise Unbindable(f"{name} ({kind}): {err}") from None
            else:
                value = bind({name: key}, arch, w, trace, scalars=scalars)[name]
            if kind != "scalar":  # a scalar is bound by its name, not its kind
                store[(*key, live)] = value
        return value

    env: dict[str, object] = {}
    stacked: dict[str, torch.Tensor] = dict(per_instance or {})
    given = given or {}
    for name, shared, keys, token, one_kind in plan:
        if name in stacked:
            continue
        if name in given:
            env[name] = given[name]
            continue
        if shared is not None:
            env[name] = one(name, shared)
            continue
        store = of_weights if one_kind and keys[0][0] in _OF_WEIGHTS else kept
        together = store.get(("stacked", token, live))
        if together is None:
            together = bind_stacked(keys[0][0], [idx for _, idx in keys], arch, w, trace) if one_kind else None
            if together is None:
                together = torch.stack([torch.as_tensor(one(name, k)) for k in keys])  # [N, *shape]
            store["stacked", token, live] = together
        stacked[name] = together
    ranks = {name: (v.dim() if isinstance(v, torch.Tensor) else -1) for name, v in env.items()}
    ranks.update({name: t.dim() - 1 for name, t in stacked.items()})
    env.update(stacked)
    env.update({"d_vocab": float(arch.d_vocab), "d_model": float(arch.d_model), "d_head": float(arch.d_head), "d_mlp": float(arch.d_mlp)})
    return env, ranks


def pad_group(env: dict[str, object], ranks: dict[str, int], n: int) -> dict[str, object]:
    """``env`` of :func:`bind_group` (torch tensors or NumPy arrays) with each stacked atom padded to broadcast:
    ``[N, *shape] -> [N, 1, ..., 1, *shape]``, rank ``R + 1`` for ``R`` the rank of the largest atom."""
    R = max(max(ranks.values(), default=0), 0)
    out = dict(env)
    for name, rank in ranks.items():
        v = env[name]
        if rank >= 0 and v.ndim == rank + 1 and rank < R:  # stacked: the instance axis first
            out[name] = v.reshape((n,) + (1,) * (R - rank) + tuple(v.shape[1:]))
    return out
