"""Hand-built circuits: exact weights for the heads the framework describes, written into :class:`Weights`.

Every circuit is an attention-only, norm-free model with learned positions, tied
unembedding (``W_U = W_E^T``) and ``attn_scale = 1`` (the gain ``c`` sits in ``W_Q``).
The stream is a direct sum of named subspaces, each spanned by standard basis
vectors (row convention, ``x`` a row of ``d_model`` entries)::

    x = [ tok (d_vocab) | prev (d_vocab) | pos (n_ctx) ]
    W_E[t]   = e^tok_t          (one-hot in tok: the token's identity)
    W_pos[p] = e^pos_p          (one-hot in pos: the position)
    W_U      = W_E^T            (logits read tok only: logit_v = x[tok_v])

so ``x_0[p] = e^tok_{t_p} + e^pos_p`` and ``x W_U`` is the tok block of ``x``. A head is
written by its four maps, each a sum of outer products of basis vectors; with
``scale = 1`` the scores are ``S_ij = q_i . k_j``.

Attention is exact to float64 rounding: a score gap of ``c = 50`` leaves the other
keys a weight ``e^{-50} ~ 2e-22`` each, below the resolution of ``1`` in float64 for
fewer than ``10^5`` positions, so the attended weight rounds to exactly ``1.0``.

========================= =====================================================================
builder                   what it computes
========================= =====================================================================
:func:`previous_token`    one layer: ``S_ij = c [j = i - 1]``; OV moves the token into prev:
                          ``h_i = e^prev_{t_{i-1}}`` (``i >= 1``; position 0 attends to itself)
:func:`copy_head`         one layer: the same QK; ``W_OV = lambda I`` on tok: ``h_i = lambda e^tok_{t_{i-1}}``
:func:`duplicate_token`   one layer: ``S_ij = c ([t_j = t_i] - [j = i])``: attends to an earlier occurrence of
                          its own token; ``W_OV = lambda I`` on tok
:func:`induction_circuit` two layers: a previous-token head, K-composed with an induction head
                          attending to ``k`` with ``t_{k-1} = t_i`` and copying ``t_k`` (``lambda I`` on tok)
:func:`eraser_head`       one layer, no positions: ``W_OV = -I``: a position attending to itself writes ``-x``
========================= =====================================================================

:func:`repeated_sequence`, :func:`attended` and :func:`predicted` drive and read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..arch import Arch
from ._trace import Trace
from ._weights import Weights

__all__ = [
    "GAIN",
    "Circuit",
    "Layout",
    "attended",
    "copy_head",
    "duplicate_token",
    "eraser_head",
    "induction_circuit",
    "predicted",
    "previous_token",
    "repeated_sequence",
]

GAIN = 50.0  # the score gap c: e^{-50} ~ 2e-22 is below float64's resolution of 1


@dataclass(frozen=True)
class Layout:
    """The stream's subspaces: ``tok`` (token identity), ``prev`` (the previous token, written by a head), ``pos`` (position)."""

    d_vocab: int
    n_ctx: int
    prev: bool = True

    @property
    def tok(self) -> slice:
        return slice(0, self.d_vocab)

    @property
    def prev_(self) -> slice:
        if not self.prev:
            raise ValueError("Layout: this circuit has no prev subspace")
        return slice(self.d_vocab, 2 * self.d_vocab)

    @property
    def pos(self) -> slice:
        start = 2 * self.d_vocab if self.prev else self.d_vocab
        return slice(start, start + self.n_ctx)

    @property
    def d_model(self) -> int:
        return self.pos.stop


@dataclass(frozen=True)
class Circuit:
    """A hand-built model: its Arch, exact Weights, the stream layout, and the call that builds it (pasteable)."""

    call: str
    arch: Arch
    weights: Weights
    layout: Layout | None

    def __repr__(self) -> str:
        return self.call


def _arch(layout: Layout, n_layers: int, d_head: int) -> Arch:
    return Arch(n_layers=n_layers, n_heads=1, d_model=layout.d_model, d_head=d_head, d_vocab=layout.d_vocab, n_ctx=layout.n_ctx,
                attn_only=True, norm="none", positional="learned", tied=True, attn_scale=1.0)


def _embeddings(layout: Layout) -> dict[str, torch.Tensor]:
    """``W_E[t] = e^tok_t``, ``W_pos[p] = e^pos_p``."""
    D = layout.d_model
    W_E = torch.zeros(layout.d_vocab, D, dtype=torch.float64)
    W_E[:, layout.tok] = torch.eye(layout.d_vocab, dtype=torch.float64)
    W_pos = torch.zeros(layout.n_ctx, D, dtype=torch.float64)
    W_pos[:, layout.pos] = torch.eye(layout.n_ctx, dtype=torch.float64)
    return {"W_E": W_E, "W_pos": W_pos}


def _previous_token_qk(layout: Layout, d_head: int, gain: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``W_Q = c sum_p e^pos_p (e^head_p)^T``, ``W_K = sum_p e^pos_p (e^head_{p+1})^T``: ``S_ij = c [i = j + 1]``."""
    D, n = layout.d_model, layout.n_ctx
    W_Q, W_K = torch.zeros(D, d_head, dtype=torch.float64), torch.zeros(D, d_head, dtype=torch.float64)
    pos = range(layout.pos.start, layout.pos.stop)
    for p, row in enumerate(pos):
        W_Q[row, p] = gain
        if p + 1 < n:
            W_K[row, p + 1] = 1.0
    return W_Q, W_K


def _ov(layout: Layout, d_head: int, source: slice, target: slice, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``W_V = sum_v e^source_v (e^head_v)^T``, ``W_O = lambda sum_v e^head_v (e^target_v)^T``: ``W_OV = lambda`` (source -> target)."""
    D, V = layout.d_model, layout.d_vocab
    W_V, W_O = torch.zeros(D, d_head, dtype=torch.float64), torch.zeros(d_head, D, dtype=torch.float64)
    for v in range(V):
        W_V[source.start + v, v] = 1.0
        W_O[v, target.start + v] = lam
    return W_V, W_O


def _stack(layers: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
    """``[(W_Q, W_K, W_V, W_O)]`` per layer -> tensors ``[layer, head=1, ...]``."""
    return {name: torch.stack([layer[i] for layer in layers])[:, None] for i, name in enumerate(("W_Q", "W_K", "W_V", "W_O"))}


def _check(d_vocab: int, n_ctx: int, gain: float) -> None:
    for name, value, low in (("d_vocab", d_vocab, 2), ("n_ctx", n_ctx, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"circuits: {name}={value!r} must be an integer >= {low}")
    if not gain > 0:
        raise ValueError(f"circuits: gain={gain!r} must be > 0")


def previous_token(d_vocab: int = 8, n_ctx: int = 16, *, gain: float = GAIN) -> Circuit:
    """One previous-token head: attends from ``i`` to ``i - 1`` and writes ``t_{i-1}`` into the prev subspace.

    QK: ``q_i = c e^head_i``, ``k_j = e^head_{j+1}``, so ``S_ij = c [j = i - 1]`` and
    ``A_{i,i-1} = 1`` (``i >= 1``; position 0 sees only itself, ``A_00 = 1``).
    OV: ``W_OV = sum_v e^tok_v (e^prev_v)^T``, so ``h_i = sum_j A_ij x_j W_OV = e^prev_{t_{i-1}}``.
    """
    _check(d_vocab, n_ctx, gain)
    layout = Layout(d_vocab, n_ctx)
    d_head = max(n_ctx, d_vocab)
    W_Q, W_K = _previous_token_qk(layout, d_head, gain)
    W_V, W_O = _ov(layout, d_head, layout.tok, layout.prev_, 1.0)
    arch = _arch(layout, 1, d_head)
    return Circuit(f"previous_token(d_vocab={d_vocab}, n_ctx={n_ctx})", arch,
                   Weights(arch, {**_embeddings(layout), **_stack([(W_Q, W_K, W_V, W_O)])}), layout)


def copy_head(d_vocab: int = 8, n_ctx: int = 16, *, lam: float = 1.0, gain: float = GAIN) -> Circuit:
    """One copy head: the previous-token QK, and ``W_OV = lambda I`` on the token subspace (zero elsewhere).

    ``h_i = lambda sum_j A_ij x_j Pi_tok = lambda e^tok_{t_{i-1}}``: the destination's stream
    gains ``lambda`` times the source token's embedding (not its position), and its logits
    ``h_i W_U = lambda e_{t_{i-1}}``. No prev subspace: ``x = [tok | pos]``.
    """
    _check(d_vocab, n_ctx, gain)
    layout = Layout(d_vocab, n_ctx, prev=False)
    d_head = max(n_ctx, d_vocab)
    W_Q, W_K = _previous_token_qk(layout, d_head, gain)
    W_V, W_O = _ov(layout, d_head, layout.tok, layout.tok, lam)
    arch = _arch(layout, 1, d_head)
    return Circuit(f"copy_head(d_vocab={d_vocab}, n_ctx={n_ctx}, lam={lam:g})", arch,
                   Weights(arch, {**_embeddings(layout), **_stack([(W_Q, W_K, W_V, W_O)])}), layout)


def duplicate_token(d_vocab: int = 8, n_ctx: int = 16, *, lam: float = 1.0, gain: float = GAIN) -> Circuit:
    """One duplicate-token head: attends from ``i`` to the earlier positions holding the same token.

    QK (``d_head = d_vocab + n_ctx``): ``W_Q`` maps ``e^tok_v -> c e^head_v`` and
    ``e^pos_p -> c e^head_{V+p}``, ``W_K`` maps ``e^tok_v -> e^head_v`` and
    ``e^pos_p -> -e^head_{V+p}``, so ``S_ij = c ([t_j = t_i] - [j = i])``: an earlier
    occurrence of ``t_i`` scores ``c``, the query itself ``0`` (pushed out), every other key
    ``0``. On a repeated sequence of distinct tokens, ``i`` of the second half attends to
    ``i - n`` with weight 1 (float64); a first-half query attends uniformly.
    OV: ``W_OV = lambda I`` on tok, as :func:`copy_head`. No prev subspace: ``x = [tok | pos]``.
    """
    _check(d_vocab, n_ctx, gain)
    layout = Layout(d_vocab, n_ctx, prev=False)
    D, V = layout.d_model, d_vocab
    d_head = V + n_ctx
    W_Q, W_K = torch.zeros(D, d_head, dtype=torch.float64), torch.zeros(D, d_head, dtype=torch.float64)
    for v in range(V):
        W_Q[layout.tok.start + v, v] = gain  # the query's token ...
        W_K[layout.tok.start + v, v] = 1.0  # ... matched against the key's
    for p in range(n_ctx):
        W_Q[layout.pos.start + p, V + p] = gain  # the query's position ...
        W_K[layout.pos.start + p, V + p] = -1.0  # ... against the key's: the query itself scores c - c = 0
    W_V, W_O = _ov(layout, d_head, layout.tok, layout.tok, lam)
    arch = _arch(layout, 1, d_head)
    return Circuit(f"duplicate_token(d_vocab={d_vocab}, n_ctx={n_ctx}, lam={lam:g})", arch,
                   Weights(arch, {**_embeddings(layout), **_stack([(W_Q, W_K, W_V, W_O)])}), layout)


def induction_circuit(d_vocab: int = 8, n_ctx: int = 16, *, lam: float = 2.0, gain: float = GAIN) -> Circuit:
    """Two layers: a previous-token head (layer 0), K-composed with an induction head (layer 1).

    Layer 0 is :func:`previous_token`: ``x_1[k] = x_0[k] + e^prev_{t_{k-1}}`` (``k >= 1``;
    ``x_1[0]`` gets ``e^prev_{t_0}``).

    Layer 1, the induction head (``d_head >= d_vocab + 1``):

    - QK: ``q_i = c (e^head_{t_i} + e^head_V)`` (``W_Q`` maps ``e^tok_v`` to both: every token
      row has exactly one 1, so the second term is the constant 1); ``k_k = x_1[k]``'s prev
      block in head coordinates ``0..V-1``, minus ``e^head_V`` at position 0 (``W_K`` maps
      ``e^prev_v -> e^head_v`` and ``e^pos_0 -> -e^head_V``). So
      ``S_ik = c ([t_{k-1} = t_i] - [k = 0])``: the key matches where the token *before* ``k``
      is the current token (K-composition: ``W_K`` reads what layer 0's ``W_O`` wrote), and
      position 0, whose prev block holds ``t_0`` itself, is pushed out.
    - OV: ``W_OV = lambda I`` on tok (a copy head): ``h_i = lambda e^tok_{t_k}``.

    On a sequence whose first half has distinct tokens, repeated, position ``i`` of the
    second half attends to the unique ``k = i - n + 1`` (``t_{k-1} = t_i``) with weight 1,
    and ``logits_i = x_2[i] W_U = e_{t_i} + lambda e_{t_k}``: with ``lambda > 1`` it predicts
    ``t_k = t_{i+1}``.
    """
    _check(d_vocab, n_ctx, gain)
    if not lam > 1:
        raise ValueError(f"induction_circuit: lam={lam!r} must be > 1, so that the copied token outweighs the current one")
    layout = Layout(d_vocab, n_ctx)
    D, V = layout.d_model, d_vocab
    d_head = max(n_ctx, V + 1)
    prev_QK = _previous_token_qk(layout, d_head, gain)
    prev_OV = _ov(layout, d_head, layout.tok, layout.prev_, 1.0)
    W_Q, W_K = torch.zeros(D, d_head, dtype=torch.float64), torch.zeros(D, d_head, dtype=torch.float64)
    for v in range(V):
        W_Q[layout.tok.start + v, v] = gain  # the current token ...
        W_Q[layout.tok.start + v, V] = gain  # ... and the constant 1 (one token row is one-hot)
        W_K[layout.prev_.start + v, v] = 1.0  # matched against the previous token written at k
    W_K[layout.pos.start, V] = -1.0  # position 0 has no previous token: pushed out
    ih_OV = _ov(layout, d_head, layout.tok, layout.tok, lam)
    arch = _arch(layout, 2, d_head)
    tensors = _stack([(*prev_QK, *prev_OV), (W_Q, W_K, *ih_OV)])
    weights = Weights(arch, {**_embeddings(layout), **tensors})
    return Circuit(f"induction_circuit(d_vocab={d_vocab}, n_ctx={n_ctx}, lam={lam:g})", arch, weights, layout)


def eraser_head(d_model: int = 2, d_vocab: int = 2) -> Circuit:
    """One head with ``W_OV = -I`` (``W_V = I``, ``W_O = -I``, ``d_head = d_model``) and ``W_QK = 0`` (uniform attention).

    A position that attends only to itself (position 0 under the causal mask) gets
    ``x_1 = x_0 - x_0 = 0``: the head erases the stream. ``W_E`` is ``I`` on its first
    ``d_vocab`` coordinates (``d_vocab <= d_model``); no positions.
    """
    for name, value, low in (("d_model", d_model, 1), ("d_vocab", d_vocab, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"eraser_head: {name}={value!r} must be an integer >= {low}")
    if d_vocab > d_model:
        raise ValueError(f"eraser_head: d_vocab={d_vocab} must be <= d_model={d_model}")
    arch = Arch(d_model=d_model, d_head=d_model, d_vocab=d_vocab, n_ctx=2, attn_only=True, norm="none", positional="none", tied=True)
    eye = torch.eye(d_model, dtype=torch.float64)
    W_E = eye[:d_vocab].clone()
    zero = torch.zeros(1, 1, d_model, d_model, dtype=torch.float64)
    tensors = {"W_E": W_E, "W_Q": zero, "W_K": zero.clone(), "W_V": eye[None, None].clone(), "W_O": -eye[None, None]}
    return Circuit(f"eraser_head(d_model={d_model}, d_vocab={d_vocab})", arch, Weights(arch, tensors), None)


# ------------------------------------------------------------------ driving and reading
def repeated_sequence(d_vocab: int, half: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """``[batch, 2 half]`` ids: ``half`` distinct random tokens (a permutation prefix), then the same again."""
    if not 1 <= half <= d_vocab:
        raise ValueError(f"repeated_sequence: half={half!r} must lie in [1, d_vocab={d_vocab}] (distinct tokens)")
    gen = torch.Generator().manual_seed(seed)
    first = torch.stack([torch.randperm(d_vocab, generator=gen)[:half] for _ in range(batch)])
    return torch.cat([first, first], dim=1)


def attended(trace: Trace, layer: int, head: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(position, weight)``, each ``[B, P]``: the key each query attends to most (argmax of the pattern row) and its weight."""
    weight, position = trace.pattern[layer, :, head].max(dim=-1)
    return position, weight


def predicted(trace: Trace) -> torch.Tensor:
    """``[B, P]``: the argmax token of the logits at each position."""
    return trace.logits.argmax(dim=-1)
