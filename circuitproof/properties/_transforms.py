"""The weight transformations of the claims that run the model twice (gauge, folding), and a head's ablation by weights.

Each transformation's formula is the symbolic layer's: the gauge's primed weights
are the definitions of ``claims_extra.gauge_scores``/``gauge_ov``, the folded weights
those of ``norms.fold_layernorm``/``fold_rmsnorm`` and the centred unembedding those
of ``norms.centre_unembedding``, compiled and evaluated on whole weight stacks at once
(leading layer and head axes broadcast through ``@``). Only the choice of the gauge
matrices and which tensors to zero are made here. ``ablated_weights`` zeroes a head's
``W_O`` rows: the weight route that tests compare ``ablation.direct_effect``'s hook
ablation (``interventions.run_replaced_each``) with.
"""

from __future__ import annotations

import functools
import math

import torch

from ..arch import Arch
from ..numeric import Weights, weight_shapes
from ..numeric._tables import kv_of_head
from ._bindings import as_numpy, gain

__all__ = ["gauge_matrices", "gauged_weights", "per_query_head", "ablated_weights", "folded"]

# ------------------------------------------------------------------ compiled definitions
@functools.lru_cache(maxsize=None)
def _definitions(which: str) -> dict[str, object]:
    """``{"W" or "b": compiled definition}`` of one symbolic transformation: a norm's folding, or the centring of ``W_U``."""
    from ..symbolic import norms
    from ..symbolic._compile import compile_expr

    identity = {"fold_layernorm": norms.fold_layernorm, "fold_rmsnorm": norms.fold_rmsnorm, "centre": norms.centre_unembedding}[which]()
    out = {}
    for atom, definition in norms.definitions(identity):
        if "fold" in atom.name or "^{c}" in atom.name:
            out["W" if atom.shape[0] != 1 else "b"] = compile_expr(definition.expand().doit())
    return out


@functools.lru_cache(maxsize=None)
def _gauge_program(which: str, names: tuple[str, ...]):
    """``f(env) -> (definition of each of names...)``: the gauge's primed weights in one program (``M^{-T}``, ``N^{-1}`` once)."""
    from ..symbolic import claims_extra as ce
    from ..symbolic import norms
    from ..symbolic._compile import compile_program

    identity = {"gauge_qk": ce.gauge_scores, "gauge_ov": ce.gauge_ov}[which]()
    definitions = {atom.name.split("'")[0]: definition.expand().doit() for atom, definition in norms.definitions(identity)
                   if atom.name.endswith("'_{l,h}")}
    return compile_program(tuple(definitions[n] for n in names))


def _env_names(which: str) -> dict[str, str]:
    """The atom names the gauge definitions read (indices l, h: the formulas serve every head)."""
    return {"W_Q": "W_Q^{l,h}", "W_K": "W_K^{l,h}", "W_V": "W_V^{l,h}", "W_O": "W_O^{l,h}", "b_Q": "b_Q^{l,h}", "b_K": "b_K^{l,h}",
            "b_V": "b_V^{l,h}", "M": "M_{l,h}", "N": "N_{l,h}"}


# ------------------------------------------------------------------ gauge
def _conditioned(shape: tuple[int, ...], n: int, gen: torch.Generator) -> torch.Tensor:
    """``[*shape, n, n]`` invertible matrices, condition number <= 12: ``diag(d) (I + R / (2 |R|_F))``, ``d`` in [0.5, 2].

    ``|R / (2 |R|_F)|_2 <= 1/2``, so the second factor's singular values lie in [0.5, 1.5].
    All drawn at once (one per layer and key/value head).
    """
    R = torch.randn(*shape, n, n, generator=gen, dtype=torch.float64)
    d = 0.5 * 4.0 ** torch.rand(*shape, n, generator=gen, dtype=torch.float64)
    frobenius = torch.linalg.matrix_norm(R)[..., None, None]  # [*shape, 1, 1]
    return torch.diag_embed(d) @ (torch.eye(n, dtype=torch.float64) + R / (2 * frobenius))


def _commuting_with_rotary(Dh: int, r: int, style: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """``[*shape, Dh, Dh]`` invertible matrices commuting with every rotary rotation: a scaled rotation within each rotated pair
    (scale in [0.5, 2], any angle), a well-conditioned block on the rest."""
    M = torch.zeros(*shape, Dh, Dh, dtype=torch.float64)
    k = torch.arange(r // 2)
    a, b = (k, k + r // 2) if style == "half" else (2 * k, 2 * k + 1)  # the coordinates of pair k
    s = 0.5 * 4.0 ** torch.rand(*shape, r // 2, generator=gen, dtype=torch.float64)
    phi = 2 * math.pi * torch.rand(*shape, r // 2, generator=gen, dtype=torch.float64)
    c, si = s * torch.cos(phi), s * torch.sin(phi)
    M[..., a, a], M[..., a, b], M[..., b, a], M[..., b, b] = c, -si, si, c
    if r < Dh:
        M[..., r:, r:] = _conditioned(shape, Dh - r, gen)
    return M


def gauge_matrices(arch: Arch, *, general_qk: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``M, N`` per layer and key/value head (``[L, K, d_head, d_head]``) and a note on what ``M`` is.

    ``N`` is any well-conditioned invertible matrix. ``M`` too when ``general_qk``
    or the architecture has neither rotary nor QK-norm; under rotary (no QK-norm) it
    commutes with the rotations; under QK-norm it is the identity (the QK gauge is
    not a symmetry there). A function of the shapes, the rotary layout and the seed only,
    so kept per those (read-only: callers must not change them in place).
    """
    rotary = (arch.rotary_dims, arch.rotary_style) if arch.positional == "rotary" else None
    return _gauge_matrices(arch.n_layers, arch.n_kv_heads, arch.d_head, rotary, arch.qk_norm, general_qk, seed)


@functools.lru_cache(maxsize=256)
def _gauge_matrices(L: int, K: int, Dh: int, rotary: tuple | None, qk_norm: str, general_qk: bool,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    gen = torch.Generator().manual_seed(seed)
    N = _conditioned((L, K), Dh, gen)
    if general_qk or (rotary is None and qk_norm == "none"):
        M, note = _conditioned((L, K), Dh, gen), "M general"
    elif qk_norm == "none":
        M = _commuting_with_rotary(Dh, *rotary, (L, K), gen)
        note = "M commutes with the rotary rotations (scaled rotations within each pair)"
    else:
        M, note = torch.eye(Dh, dtype=torch.float64).expand(L, K, Dh, Dh).clone(), "M = I: QK-norm leaves no QK gauge"
    return M, N, note


def per_query_head(arch: Arch, t: torch.Tensor) -> torch.Tensor:
    """A key/value head's tensor repeated over its query heads, ``[L, K, ...] -> [L, H, ...]`` (``t`` itself without GQA)."""
    return t if arch.group_size == 1 else t[:, kv_of_head(arch.n_heads, arch.group_size)]


def gauged_weights(arch: Arch, w: Weights, M: torch.Tensor, N: torch.Tensor) -> Weights:
    """The weights with ``W_Q' = W_Q M``, ``W_K' = W_K M^{-T}``, ``W_V' = W_V N``, ``W_O' = N^{-1} W_O`` (and biases).

    ``M`` and ``N`` are given per key/value head; a query head uses its key/value head's.
    """
    dtype = w.dtype
    M, N = M.to(dtype), N.to(dtype)
    names = _env_names("gauge")
    L, H, K, Dh = arch.n_layers, arch.n_heads, arch.n_kv_heads, arch.d_head

    def bias(name: str, heads: int) -> torch.Tensor:
        return w[name][:, :, None, :] if name in w else torch.zeros(L, heads, 1, Dh, dtype=dtype)

    # the definitions are products and inverses only: evaluated on NumPy views (a third of torch's cost at these sizes)
    env = {names["W_Q"]: w.W_Q, names["W_K"]: w.W_K, names["W_V"]: w.W_V, names["W_O"]: w.W_O, names["b_Q"]: bias("b_Q", H),
           names["b_K"]: bias("b_K", K), names["b_V"]: bias("b_V", K)}
    env = {name: as_numpy(value) for name, value in env.items()}
    M_q, N_q = per_query_head(arch, M), per_query_head(arch, N)
    M, N, M_q, N_q = (as_numpy(m) for m in (M, N, M_q, N_q))
    device = w.W_Q.device
    out = {}
    # one program for each set of heads and gauge matrix: the weights of query heads (M or N per query head), of key/value heads
    for which, key, mats, names_ in (("gauge_qk", "M", M_q, ("W_Q", "b_Q")), ("gauge_qk", "M", M, ("W_K", "b_K")),
                                     ("gauge_ov", "N", N, ("W_V", "b_V")), ("gauge_ov", "N", N_q, ("W_O",))):
        wanted = tuple(n for n in names_ if n.startswith("W_") or n in w)
        for name, value in zip(wanted, _gauge_program(which, wanted)({**env, names[key]: mats})):
            value = torch.from_numpy(value if name.startswith("W_") else value[:, :, 0, :]).to(device)
            out[name] = value
    return w.replace(**out)


# ------------------------------------------------------------------ ablation
def ablated_weights(w: Weights, layer: int, head: int) -> Weights:
    """The weights with head ``(layer, head)`` zero-ablated: its ``W_O`` rows zero, so its write ``z W_O`` is 0."""
    W_O = w.W_O.clone()
    W_O[layer, head] = 0
    return w.replace(W_O=W_O)


# ------------------------------------------------------------------ folding
def _fold_into(arch: Arch, w: Weights, slot: str, targets: list[tuple[str, str, bool]], out: dict, layered: bool) -> None:
    """Fold norm ``slot`` into each (weight, bias, has head axis) of ``targets``: ``W <- C G W``, ``b <- b + b_N W`` (RMSNorm: ``G W``)."""
    dtype, D = w.dtype, arch.d_model
    g = gain(arch, w[f"ln_{slot}_w"])
    G = torch.diag_embed(g)  # [L, D, D] or [D, D]
    C = torch.eye(D, dtype=dtype) - 1.0 / D
    b_N = w.get(f"ln_{slot}_b")
    b_N = b_N[..., None, :] if b_N is not None else torch.zeros(*g.shape[:-1], 1, D, dtype=dtype)
    defs = _definitions("fold_layernorm" if arch.norm == "layernorm" else "fold_rmsnorm")
    for wname, bname, heads in targets:
        W = out.get(wname, w[wname])
        b = out.get(bname, w[bname] if bname in w else torch.zeros(*W.shape[:-2], W.shape[-1], dtype=dtype))
        b = b[..., None, :]
        Gx, bx = (G[:, None], b_N[:, None]) if (layered and heads) else (G, b_N)
        env = {"W": W, "b": b, "G": Gx, "C": C, "b_{N}": bx}
        out[wname] = defs["W"](env)
        if "b" in defs:  # LayerNorm: b + b_N W, a bias even where the map had none
            out[bname] = defs["b"](env)[..., 0, :]
        elif bname in w or bname in out:
            out[bname] = b[..., 0, :]


def folded(arch: Arch, w: Weights) -> tuple[Arch, Weights, list[str]]:
    """Every norm that feeds a linear map folded into it, then ``W_U`` and ``b_U`` centred over the vocabulary.

    Folded: the attention's and MLP's input norms (pre-norm and parallel blocks), the
    final norm (into ``W_U``, or ``W_T`` before BERT's transform head) and the
    transform head's norm (into ``W_U``). Their gains become 1 and biases 0. Folding a
    LayerNorm's bias creates biases the architecture may lack, so the returned Arch
    switches them on (zeros where nothing was folded) and unties ``W_U``.
    Returns the Arch, the Weights and the names of the folded norms.
    """
    out: dict[str, torch.Tensor] = {}
    done: list[str] = []
    slots = arch.norm_slots() if (arch.has_norm and arch.norm_placement == "pre") else ()
    mlp_maps = [("W_in", "b_in", False)] + ([("W_gate", "b_gate", False)] if arch.gated else [])
    if "attn_in" in slots:
        attn_maps = [("W_Q", "b_Q", True), ("W_K", "b_K", True), ("W_V", "b_V", True)]
        _fold_into(arch, w, "attn_in", attn_maps + (mlp_maps if arch.parallel_shared_norm else []), out, layered=True)
        done.append("attn_in")
    if "mlp_in" in slots:
        _fold_into(arch, w, "mlp_in", mlp_maps, out, layered=True)
        done.append("mlp_in")
    if arch.final_norm:
        _fold_into(arch, w, "final", [("W_T", "b_T", False)] if arch.unembed_transform else [("W_U", "b_U", False)], out, layered=False)
        done.append("final")
    if arch.unembed_transform:
        _fold_into(arch, w, "transform", [("W_U", "b_U", False)], out, layered=False)
        done.append("transform")
    centre = _definitions("centre")
    W_U = out.get("W_U", w.W_U)
    b_U = out.get("b_U", w["b_U"] if "b_U" in w else None)
    env = {"W_U": W_U, "b_U": b_U[None] if b_U is not None else None, "1_{V}": torch.ones(arch.d_vocab, 1, dtype=w.dtype),
           "d_vocab": float(arch.d_vocab)}
    out["W_U"] = centre["W"](env)
    if b_U is not None:
        out["b_U"] = centre["b"](env)[0]
    layernorm = arch.norm == "layernorm"
    changes: dict[str, object] = {"tied": False}
    if layernorm and "attn_in" in done:
        changes.update(q_bias=True, k_bias=True, v_bias=True)
    if layernorm and ("mlp_in" in done or ("attn_in" in done and arch.parallel_shared_norm)):
        changes["mlp_bias"] = True
    if "b_U" in out:
        changes["unembed_bias"] = True
    arch2 = arch.replace(**changes)
    tensors = {}
    for name, shape in weight_shapes(arch2).items():
        if name in out:
            tensors[name] = out[name]
        elif name.startswith("ln_") and any(name.startswith(f"ln_{s}_") for s in done):
            one = 0.0 if (name.endswith("_w") and arch.norm_gain == "one_plus_w") else 1.0
            tensors[name] = torch.full(shape, one if name.endswith("_w") else 0.0, dtype=w.dtype)
        elif name in w:
            tensors[name] = w[name]
        else:
            tensors[name] = torch.zeros(shape, dtype=w.dtype)
    return arch2, Weights(arch2, tensors), done
