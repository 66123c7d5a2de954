"""The reference transformer, written for clarity from the framework's equations.

Read top to bottom, in forward order::

    x_0 = n_embed(m (W_E[t] + W_pos[p]))                  embedding
    for each layer l:
        attention:  q = x W_Q + b_Q, k = x W_K + b_K, v = x W_V + b_V
                    (QK-norm, then rotary on q and k)
                    A = softmax(mask(softcap(q k^T * scale)))
                    head_h = (A v_{h // group}) W_O[h];  attn = sum_h head_h + b_O
        MLP:        act(x W_in + b_in) W_out + b_out
                    (gated: (act(x W_gate + b_gate) * (x W_in + b_in)) W_out + b_out)
        residual:   pre       x = x + attn(n(x));        x = x + mlp(n(x))
                    post      x = n(x + attn(x));        x = n(x + mlp(x))
                    output    x = x + n(attn(x));        x = x + n(mlp(x))
                    sandwich  x = x + n'(attn(n(x)));    x = x + n'(mlp(n(x)))
                    parallel  x = x + attn(n1(x)) + mlp(n2(x))
    logits = softcap(n_final(x_L) W_U + b_U)

This module is the semantics every implementation is compared against; it is
not copied from any of them. It computes in the weights' dtype (float64 by
default) and records everything in a :class:`~circuitproof.numeric.Trace`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import CircuitproofError, ShapeError
from ..arch import Arch
from ._tables import allowed, blocked, kv_of_head, rotary_table
from ._trace import NormTrace, Trace
from ._weights import Weights

__all__ = ["run", "block", "TokenError"]


class TokenError(CircuitproofError, ValueError):
    """Token ids that the architecture cannot read: out of the vocabulary, or longer than n_ctx."""


# --------------------------------------------------------------------- pieces
def norm(arch: Arch, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, scale: torch.Tensor | None = None) -> NormTrace:
    """LayerNorm ``(x - mean) / sqrt(var + eps) * g + b`` or RMSNorm ``x / sqrt(mean(x^2) + eps) * g``.

    ``g = w`` or ``1 + w`` (``arch.norm_gain``); statistics over the last axis,
    the variance biased (divide by n). Shapes: x [..., n], w and b [n].
    ``scale`` [..., 1], if given, is the divisor frozen (e.g. at another run's), not computed from x.
    """
    if arch.norm == "layernorm":
        var, mean = torch.var_mean(x, -1, correction=0, keepdim=True)  # the biased variance: mean((x - mean)^2)
        centred = x - mean
    else:
        var, centred = (x.pow(2).mean(-1, keepdim=True) if scale is None else None), x  # RMSNorm: mean(x^2)
    if scale is None:
        scale = (var + arch.norm_eps).sqrt()
    gain = 1 + w if arch.norm_gain == "one_plus_w" else w
    out = centred / scale * gain
    if b is not None:
        out = out + b
    return NormTrace(input=x, scale=scale, output=out)


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """gelu: x Phi(x); gelu_tanh: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); relu; silu: x sigmoid(x)."""
    if name == "gelu":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))
    if name == "relu":
        return x.clamp_min(0)
    return x * torch.sigmoid(x)


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``cap * tanh(x / cap)``; the identity when ``cap`` is None."""
    return x if cap is None else cap * torch.tanh(x / cap)


def rotary(arch: Arch, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``rotary_dims`` coordinates of each head by position.

    Pair ``k`` (``0 <= k < r/2``, ``r = rotary_dims``) is rotated by the angle
    ``theta = p * base^(-2k / r)``: ``(a, b) -> (a cos - b sin, a sin + b cos)``,
    where ``(a, b)`` are coordinates ``(k, k + r/2)`` ("half") or ``(2k, 2k+1)``
    ("interleaved"). Shapes: x [B, P, heads, Dh], positions [P].
    """
    return _rotate(arch, x, tuple(positions.tolist()))


def _rotate(arch: Arch, x: torch.Tensor, positions: tuple[int, ...]) -> torch.Tensor:
    """:func:`rotary` with the positions as a tuple of ints (the forward pass's ``0 .. P-1``, without a tensor)."""
    r = arch.rotary_dims
    if r == 0:
        return x
    cos, sin = rotary_table(r, arch.rotary_base, positions, x.dtype)  # [1, P, 1, r/2] each
    rot, rest = x[..., :r], x[..., r:]
    if arch.rotary_style == "half":
        a, b = rot[..., : r // 2], rot[..., r // 2 :]
        rotated = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    else:
        a, b = rot[..., 0::2], rot[..., 1::2]
        rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)  # re-interleave
    return rotated if rest.shape[-1] == 0 else torch.cat([rotated, rest], dim=-1)


def attention_mask(arch: Arch, layer: int, n_pos: int) -> torch.Tensor:
    """``[P, P]`` bool, True where query i may attend to key j (causal, sliding window)."""
    return allowed(arch.causal, _window(arch, layer), n_pos).clone()


def masked_keys(arch: Arch, layer: int, n_pos: int) -> torch.Tensor:
    """``~attention_mask(arch, layer, n_pos)`` ``[P, P]``: True where query i may not attend to key j; the kept table itself
    (read-only), which the forward pass's masked_fill reads."""
    return blocked(arch.causal, _window(arch, layer), n_pos)


def _window(arch: Arch, layer: int) -> int | None:
    """The sliding window at ``layer`` (None: the layer attends to every visible key)."""
    return arch.sliding_window if arch.is_sliding(layer) else None


# ----------------------------------------------------------------- sublayers
Edit = Callable[[str, "int | None", torch.Tensor], torch.Tensor]


def _edited(edit: Edit, name: str, layer: int | None, value: torch.Tensor) -> torch.Tensor:
    """``edit``'s replacement for ``value``, which must keep its shape (ShapeError naming the component otherwise)."""
    new = edit(name, layer, value)
    if not isinstance(new, torch.Tensor) or new.shape != value.shape:
        got = list(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
        raise ShapeError(f"run: edit({name!r}, layer={layer}) returned {got}; it must return a tensor of shape {list(value.shape)}")
    return new.to(value.dtype)
def _ln(arch: Arch, w: Weights, slot: str, layer: int | None, x: torch.Tensor) -> NormTrace:
    weight = w[f"ln_{slot}_w"] if layer is None else w[f"ln_{slot}_w"][layer]
    bias = w.get(f"ln_{slot}_b")
    if bias is not None and layer is not None:
        bias = bias[layer]
    return norm(arch, x, weight, bias)


def _projections(arch: Arch, w: Weights, rec: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every layer's query, key and value maps side by side, ``[L, D, (H + 2K) Dh]``, and their biases ``[L, H + 2K, Dh]``.

    Column block ``n`` of ``x [W_Q[l, 0] | ... | W_K[l, 0] | ... | W_V[l, 0] | ...]`` is
    ``x`` times the ``n``-th map: the queries, keys and values of every head in one
    product. Biases the Arch lacks are zero blocks (None if it has none). Built once
    per forward pass and kept in ``rec``.
    """
    kept = rec.get("_projections")
    if kept is None:
        L, D, Dh = arch.n_layers, arch.d_model, arch.d_head
        maps = torch.cat([w.W_Q, w.W_K, w.W_V], dim=1)  # [L, H + 2K, D, Dh]
        side_by_side = maps.transpose(1, 2).reshape(L, D, -1)  # [L, D, (H + 2K) Dh]
        biases = None
        if arch.q_bias or arch.k_bias or arch.v_bias:
            H, K = arch.n_heads, arch.n_kv_heads
            parts = [w.b_Q if arch.q_bias else w.W_Q.new_zeros(L, H, Dh), w.b_K if arch.k_bias else w.W_Q.new_zeros(L, K, Dh),
                     w.b_V if arch.v_bias else w.W_Q.new_zeros(L, K, Dh)]
            biases = torch.cat(parts, dim=1)  # [L, H + 2K, Dh]
        kept = rec["_projections"] = (side_by_side, biases)
    return kept


def _attention(arch: Arch, w: Weights, layer: int, x: torch.Tensor, rec: dict, edit: Edit | None = None) -> torch.Tensor:
    """One attention sublayer on its (already normalised) input ``x`` [B, P, D]; returns attn [B, P, D].

    ``edit("head_out", layer, head_out)`` may replace the per-head writes [B, P, H, D] before they are summed.
    """
    B, P, _ = x.shape
    l, H, K = layer, arch.n_heads, arch.n_kv_heads
    maps, biases = _projections(arch, w, rec)
    qkv = (x @ maps[l]).unflatten(-1, (H + 2 * K, arch.d_head))  # [B, P, (H + 2K) Dh] -> [B, P, H + 2K, Dh]
    if biases is not None:
        qkv = qkv + biases[l]  # q = x W_Q + b_Q, k = x W_K + b_K, v = x W_V + b_V
    q, k, v = qkv[:, :, :H], qkv[:, :, H : H + K], qkv[:, :, H + K :]  # [B, P, H, Dh], [B, P, K, Dh], [B, P, K, Dh]
    if arch.qk_norm == "all_heads":
        nq = _ln(arch, w, "q", l, q.flatten(-2))  # over all heads' concatenated queries
        nk = _ln(arch, w, "k", l, k.flatten(-2))
        q, k = nq.output.view(q.shape), nk.output.view(k.shape)
        rec.setdefault("norm.q", []).append(nq)
        rec.setdefault("norm.k", []).append(nk)
    elif arch.qk_norm == "per_head":
        nq, nk = _ln(arch, w, "q", l, q), _ln(arch, w, "k", l, k)
        q, k = nq.output, nk.output
        rec.setdefault("norm.q", []).append(nq)
        rec.setdefault("norm.k", []).append(nk)
    if arch.rotary_dims:
        positions = tuple(range(P))
        if arch.qk_norm == "none":  # queries and keys side by side: one rotation
            qk = _rotate(arch, qkv[:, :, : H + K], positions)
            q, k = qk[:, :, :H], qk[:, :, H:]
        else:
            q, k = _rotate(arch, q, positions), _rotate(arch, k, positions)

    k_h, v_h = k, v  # [B, P, H, Dh]: query head h reads kv head h // group
    if arch.group_size > 1:
        kv = kv_of_head(arch.n_heads, arch.group_size)
        k_h, v_h = k[:, :, kv], v[:, :, kv]
    scores = (q.transpose(1, 2) @ k_h.permute(0, 2, 3, 1)) * arch.scale  # [B, H, P_q, Dh] @ [B, H, Dh, P_k] -> [B, H, P_q, P_k]
    scores = softcap(scores, arch.attn_softcap)
    masked_out = masked_keys(arch, l, P)
    pattern = torch.softmax(scores.masked_fill(masked_out, float("-inf")), dim=-1)  # rows sum to 1
    z_by_head = pattern @ v_h.transpose(1, 2)  # [B, H, P, Dh]: z_i = sum_j A_ij v_j
    z = z_by_head.transpose(1, 2)  # [B, P, H, Dh]
    head_out = (z_by_head @ w.W_O[l]).transpose(1, 2)  # [B, H, P, Dh] @ [H, Dh, D] -> [B, P, H, D]: head_h = z_h W_O[h]
    if edit is not None:
        head_out = _edited(edit, "head_out", l, head_out)
    attn = head_out.sum(dim=2)  # sum over heads
    if arch.o_bias:
        attn = attn + w.b_O[l]
    for name, value in (("q", q), ("k", k), ("v", v), ("scores", scores), ("pattern", pattern), ("z", z), ("head_out", head_out), ("attn_out", attn)):
        rec.setdefault(name, []).append(value)
    return attn


def _mlp(arch: Arch, w: Weights, layer: int, x: torch.Tensor, rec: dict, edit: Edit | None = None) -> torch.Tensor:
    """One MLP on its (already normalised) input ``x`` [B, P, D]; returns mlp [B, P, D] (``edit("mlp_out", layer, out)`` may replace it)."""
    l = layer
    pre = x @ w.W_in[l]  # [B, P, M]
    if arch.mlp_bias:
        pre = pre + w.b_in[l]
    if arch.gated:
        gate = x @ w.W_gate[l]
        if arch.mlp_bias:
            gate = gate + w.b_gate[l]
        hidden = activation(arch.act, gate) * pre
    else:
        hidden = activation(arch.act, pre)
    out = hidden @ w.W_out[l]  # [B, P, D]
    if arch.mlp_bias:
        out = out + w.b_out[l]
    if edit is not None:
        out = _edited(edit, "mlp_out", l, out)
    for name, value in (("mlp_pre", pre), ("mlp_post", hidden), ("mlp_out", out)):
        rec.setdefault(name, []).append(value)
    return out


def _block(arch: Arch, w: Weights, l: int, x: torch.Tensor, rec: dict, edit: Edit | None = None) -> torch.Tensor:
    """One layer: the residual update in the Arch's placement. ``x`` [B, P, D] -> [B, P, D]."""

    def ln(slot: str, value: torch.Tensor) -> torch.Tensor:
        if slot not in arch.norm_slots():
            return value
        nt = _ln(arch, w, slot, l, value)
        rec.setdefault(f"norm.{slot}", []).append(nt)
        return nt.output

    if arch.parallel:
        attn = _attention(arch, w, l, ln("attn_in", x), rec, edit)
        mlp_in = rec["norm.attn_in"][-1].output if arch.parallel_shared_norm and arch.has_norm else ln("mlp_in", x)
        mlp = _mlp(arch, w, l, mlp_in, rec, edit)
        return x + attn + mlp  # both sublayers read x_l

    placement = arch.norm_placement if arch.has_norm else "pre"
    if placement == "post":
        x = ln("attn_out", x + _attention(arch, w, l, x, rec, edit))
    else:  # pre, output, sandwich: absent slots are the identity
        x = x + ln("attn_out", _attention(arch, w, l, ln("attn_in", x), rec, edit))
    if not arch.has_mlp:
        return x
    rec.setdefault("resid_mid", []).append(x)
    if placement == "post":
        return ln("mlp_out", x + _mlp(arch, w, l, x, rec, edit))
    return x + ln("mlp_out", _mlp(arch, w, l, ln("mlp_in", x), rec, edit))


# ---------------------------------------------------------------------- run
def _check_tokens(arch: Arch, tokens: torch.Tensor) -> torch.Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2 or tokens.shape[1] == 0:
        raise ShapeError(f"run: tokens must be [batch, pos] with pos >= 1, got shape {list(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TokenError(f"run: tokens must be integer ids, got dtype {tokens.dtype}")
    low, high = (int(v) for v in tokens.aminmax())
    if low < 0 or high >= arch.d_vocab:
        raise TokenError(f"run: token ids must lie in [0, d_vocab={arch.d_vocab}), got [{low}, {high}]")
    if arch.positional == "learned" and tokens.shape[1] > arch.n_ctx:
        raise TokenError(f"run: {tokens.shape[1]} positions exceed n_ctx={arch.n_ctx} learned positions")
    return tokens.long()


def _stack(rec: dict, name: str) -> torch.Tensor | None:
    return torch.stack(rec[name]) if name in rec else None


def block(arch: Arch, weights: Weights, layer: int, x: torch.Tensor) -> torch.Tensor:
    """``x_{l+1}`` as a function of ``x_l`` [B, P, D]: layer ``layer``'s residual update alone, in ``x``'s dtype.

    The same computation :func:`run` does for that layer (its norms, attention, MLP, in the
    Arch's placement), for a caller that needs the layer as a map, e.g. its Jacobian
    ``d x_{l+1} / d x_l``.
    """
    if not 0 <= layer < arch.n_layers:
        raise ValueError(f"block: layer={layer} is out of range; the architecture has n_layers={arch.n_layers}")
    w = weights.to(x.dtype) if weights.dtype != x.dtype else weights
    return _block(arch, w, layer, x, {})


def _forward(arch: Arch, w: Weights, tokens: torch.Tensor, edit: Edit | None) -> tuple:
    """The forward pass itself: (every layer's recorded values, the embedding/final/transform norms, embed, logits_raw, logits)."""
    B, P = tokens.shape
    rec: dict[str, list] = {}

    x = w.W_E[tokens]  # [B, P, D]
    if arch.positional == "learned":
        x = x + w.W_pos[:P]
    embed = arch.embed_scale * x
    if edit is not None:
        embed = _edited(edit, "embed", None, embed)
    x = embed
    norms: dict[str, NormTrace] = {}
    if arch.embed_norm:
        norms["embed"] = _ln(arch, w, "embed", None, x)
        x = norms["embed"].output

    for l in range(arch.n_layers):
        rec.setdefault("resid_pre", []).append(x)
        x = _block(arch, w, l, x, rec, edit)
        rec.setdefault("resid_post", []).append(x)

    final = x
    if arch.final_norm:
        nt = _ln(arch, w, "final", None, final)
        if edit is not None:  # the final norm's divisor may be frozen ("final_scale")
            scale = _edited(edit, "final_scale", None, nt.scale)
            if scale is not nt.scale:
                nt = norm(arch, final, w.ln_final_w, w.get("ln_final_b"), scale=scale)
        norms["final"] = nt
        final = nt.output
    if arch.unembed_transform:
        hidden = activation(arch.act, final @ w.W_T + w.b_T)
        norms["transform"] = _ln(arch, w, "transform", None, hidden)
        final = norms["transform"].output
    logits_raw = final @ w.W_U  # [B, P, V]
    if arch.unembed_bias:
        logits_raw = logits_raw + w.b_U
    logits = softcap(logits_raw, arch.logit_softcap)

    return rec, norms, embed, logits_raw, logits


def run(arch: Arch, weights: Weights, tokens: torch.Tensor, *, dtype: torch.dtype = torch.float64, edit: Edit | None = None) -> Trace:
    """The reference forward pass of ``arch`` with ``weights`` on ``tokens`` ([B, P] or [P]).

    Computes in ``dtype`` (float64 by default; float32 on request) and returns
    the full :class:`Trace`. ``edit(name, layer, value) -> value`` intervenes on the
    components a circuit analysis addresses, as they are written to the stream:
    ``"embed"`` (layer None, ``[B, P, D]``: m (W_E[t] + W_pos[p]), before the
    embedding norm), ``"head_out"`` (``[B, P, H, D]``: every head's write, before the
    sum and b_O), ``"mlp_out"`` (``[B, P, D]``) and ``"final_scale"`` (layer None, ``[B, P, 1]``: the
    final norm's divisor, to freeze it at another run's); the trace records the edited
    values and everything downstream of them (``circuitproof.numeric.interventions``). Raises :class:`TokenError` for ids outside the
    vocabulary or too many positions, :class:`~circuitproof.WeightsError` if
    the weights belong to another Arch.

    Autograd: when a weight requires grad (or an edit is given) and grad mode is on, the
    pass records the graph as usual. Otherwise its layers run in inference mode (cheaper per
    operation), and the Trace's tensors are still ordinary tensors, made outside it.
    """
    from .. import WeightsError

    if weights.arch is not arch and weights.arch != arch:  # a dataclass' == compares every field, even of one object
        raise WeightsError(f"run: weights are for {weights.arch!r}, not for {arch!r}")
    tokens = _check_tokens(arch, tokens)
    w = weights.to(dtype) if weights.dtype != dtype else weights
    # Nothing to differentiate (no edit, no weight requiring grad, or grad off): the layers run in inference mode, a
    # fifth cheaper per operation at these sizes, and the trace's tensors are made outside it (stacked or copied
    # below), so that they are ordinary tensors.
    fast = not torch.is_grad_enabled() or (edit is None and not any(t.requires_grad for t in w._tensors.values()))
    with torch.inference_mode(fast):
        rec, norms, embed, logits_raw, logits = _forward(arch, w, tokens, edit)
    if fast and not torch.is_inference_mode_enabled():
        uncapped = logits is logits_raw
        embed, logits_raw = embed.clone(), logits_raw.clone()
        logits = logits_raw if uncapped else logits.clone()
        norms = {slot: NormTrace(*(None if t is None else t.clone() for t in (nt.input, nt.scale, nt.output))) for slot, nt in norms.items()}

    for key in [k for k in rec if k.startswith("norm.")]:
        parts = rec[key]
        norms[key[5:]] = NormTrace(
            input=torch.stack([p.input for p in parts]),
            scale=torch.stack([p.scale for p in parts]),
            output=torch.stack([p.output for p in parts]),
        )
    return Trace(
        arch=arch,
        tokens=tokens,
        embed=embed,
        resid_pre=_stack(rec, "resid_pre"),
        resid_mid=_stack(rec, "resid_mid"),
        resid_post=_stack(rec, "resid_post"),
        q=_stack(rec, "q"),
        k=_stack(rec, "k"),
        v=_stack(rec, "v"),
        scores=_stack(rec, "scores"),
        pattern=_stack(rec, "pattern"),
        z=_stack(rec, "z"),
        head_out=_stack(rec, "head_out"),
        attn_out=_stack(rec, "attn_out"),
        mlp_pre=_stack(rec, "mlp_pre"),
        mlp_post=_stack(rec, "mlp_post"),
        mlp_out=_stack(rec, "mlp_out"),
        logits_raw=logits_raw,
        logits=logits,
        norms=norms,
    )
