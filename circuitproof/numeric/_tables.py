"""Small read-only tensors the reference forward pass looks up, kept per their arguments.

Each is made once (``functools.lru_cache``) outside inference mode, so that it is an
ordinary tensor whatever mode its first caller ran in, and shared by every later
call: callers must not change it in place (``reference.attention_mask`` returns a copy).
"""

from __future__ import annotations

import functools

import torch

__all__ = ["rotary_table", "allowed", "blocked", "kv_of_head"]


@functools.lru_cache(maxsize=256)
def rotary_table(r: int, base: float, positions: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos theta`` and ``sin theta``, ``theta[p, k] = p * base^(-2k / r)`` computed in float64, then in ``dtype``.

    Shapes ``[1, P, 1, r/2]``, to broadcast over batch and heads. Kept: read-only.
    """
    with torch.inference_mode(False):  # kept tensors are ordinary ones, whatever mode the first caller ran in
        inv_freq = base ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)  # [r/2]
        theta = torch.tensor(positions, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [P, r/2]
        return theta.cos().to(dtype)[None, :, None, :], theta.sin().to(dtype)[None, :, None, :]  # [1, P, 1, r/2]


@functools.lru_cache(maxsize=256)
def allowed(causal: bool, window: int | None, n_pos: int) -> torch.Tensor:
    """``reference.attention_mask``: True where query i may attend to key j, for a causal switch, a window (None: none) and ``n_pos`` positions (kept: read-only)."""
    with torch.inference_mode(False):  # kept tensors are ordinary ones, whatever mode the first caller ran in
        i = torch.arange(n_pos)[:, None]
        j = torch.arange(n_pos)[None, :]
        visible = j <= i if causal else torch.ones(n_pos, n_pos, dtype=torch.bool)
        if window is not None:
            visible = visible & ((i - j).abs() < window)
        return visible


@functools.lru_cache(maxsize=64)
def kv_of_head(n_heads: int, group: int) -> torch.Tensor:
    """``[H]``: the key/value head each query head reads, ``h // group`` (kept: read-only)."""
    with torch.inference_mode(False):  # kept: an ordinary tensor, whatever mode the first caller ran in
        return torch.arange(n_heads) // group


@functools.lru_cache(maxsize=256)
def blocked(causal: bool, window: int | None, n_pos: int) -> torch.Tensor:
    """``~allowed(...)``: True where query i may not attend to key j (kept: read-only, for the forward pass's masked_fill)."""
    with torch.inference_mode(False):  # kept: an ordinary tensor, whatever mode the first caller ran in
        return ~allowed(causal, window, n_pos)
