"""Behavioural head scores: the attention a head pays to a target position, measured from its pattern.

Each score is a pure function of a pattern ``A`` ``[..., B, H, P, P]`` (rows sum to 1) and
the tokens ``t`` ``[B, P]``, through a target mask ``T[b, i, j]`` (STYLE: pure signature
functions, dispatched through the :data:`TARGETS` registry)::

    score = mean over scored queries (b, i) of  sum_j A[b, i, j] T[b, i, j]

where a query is scored if it has at least one target. The targets:

================== ============================================ ==================================
name               T[b, i, j] (j <= i: the key is visible)      source
================== ============================================ ==================================
``previous_token`` ``j = i - 1``                                Elhage et al. 2021 (two-layer
                                                                models: the previous-token head);
                                                                Olsson et al. 2022
``duplicate_token`` ``j < i and t_j = t_i``: an earlier          Wang et al. 2022 (IOI's duplicate-
                   occurrence of the same token                 token heads); Olsson et al. 2022
``induction``      ``1 <= j <= i and t_{j-1} = t_i``: the token Olsson et al. 2022, "In-context
                   after an earlier occurrence of the current   Learning and Induction Heads",
                   token (prefix matching)                      the prefix-matching score
================== ============================================ ==================================

On a repeated random sequence ``[r_0 .. r_{n-1}, r_0 .. r_{n-1}]`` with distinct ``r``
(:func:`~circuitproof.numeric.circuits.repeated_sequence`) the duplicate-token target of
``i >= n`` is ``i - n`` and the induction target ``i - n + 1``, and only the second half
is scored: the means are the mean attention to the earlier occurrence and to the token
after it, as Olsson et al. measure them (TransformerLens' ``head_detector`` builds the
same masks). A score lies in ``[0, 1]``; a uniform head over ``i + 1`` keys scores about
``1 / (i + 1)``.

The scores read the pattern, so they are what the forward pass makes them: unchanged by
the QK and OV gauges and by an orthogonal change of the residual basis that the norms
commute with (none changes the forward pass), but not by scaling the QK circuit.
Without QK-norm, ``W_Q, b_Q -> c W_Q, c b_Q`` (``c > 0``) multiplies every pre-softmax
score by ``c`` exactly as ``attn_scale -> c attn_scale`` does (an inverse temperature:
``c -> 0`` gives the uniform pattern, large ``c`` the arg max); under QK-norm the
query's norm undoes the factor (up to its ``eps``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ... import ShapeError

__all__ = ["TARGETS", "target_mask", "pattern_score", "pattern_scores"]


def _previous(tokens: torch.Tensor) -> torch.Tensor:
    """``T[b, i, j] = [j = i - 1]``."""
    B, P = tokens.shape
    return torch.ones(P, P, dtype=torch.bool).tril(-1).triu(-1).expand(B, P, P) if P > 1 else torch.zeros(B, P, P, dtype=torch.bool)


def _duplicate(tokens: torch.Tensor) -> torch.Tensor:
    """``T[b, i, j] = [j < i] [t_j = t_i]``."""
    P = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :]  # [B, P, P]: t_i = t_j
    return same & torch.ones(P, P, dtype=torch.bool).tril(-1)


def _induction(tokens: torch.Tensor) -> torch.Tensor:
    """``T[b, i, j] = [1 <= j <= i] [t_{j-1} = t_i]``: the duplicate-token mask shifted one key to the right."""
    B, P = tokens.shape
    out = torch.zeros(B, P, P, dtype=torch.bool)
    out[:, :, 1:] = tokens[:, :, None] == tokens[:, None, :-1]  # T[i, j] = [t_i = t_{j-1}]
    return out & torch.ones(P, P, dtype=torch.bool).tril()


TARGETS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "previous_token": _previous,
    "duplicate_token": _duplicate,
    "induction": _induction,
}


def target_mask(name: str, tokens: torch.Tensor) -> torch.Tensor:
    """``[B, P, P]`` bool: the target keys ``T[b, i, j]`` of score ``name`` (a key of :data:`TARGETS`) on ``tokens`` ``[B, P]``."""
    if name not in TARGETS:
        raise ValueError(f"target_mask: name={name!r} must be one of {sorted(TARGETS)}")
    tokens = torch.as_tensor(tokens)
    if tokens.dim() != 2:
        raise ShapeError(f"target_mask: tokens must be [batch, pos], got shape {list(tokens.shape)}")
    return TARGETS[name](tokens)


def pattern_score(name: str, pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``[..., H]``: ``mean_{scored (b, i)} sum_j A[..., b, h, i, j] T[b, i, j]`` (module docstring) for ``pattern`` ``[..., B, H, P, P]``.

    Raises ``ValueError`` naming ``tokens`` when no query has a target (one position;
    or no token repeats: duplicate-token and induction scores need repeated sequences),
    :class:`~circuitproof.ShapeError` when the shapes disagree.
    """
    T = target_mask(name, tokens)  # [B, P, P]
    B, P, _ = T.shape
    if pattern.dim() < 4 or tuple(pattern.shape[-4:]) != (B, pattern.shape[-3], P, P):
        raise ShapeError(f"pattern_score: pattern {list(pattern.shape)} must be [..., B={B}, H, P={P}, P={P}] "
                         f"for tokens {list(T.shape[:2])}")
    scored = T.any(-1)  # [B, P]: queries with a target
    n = int(scored.sum())
    if n == 0:
        raise ValueError(f"pattern_score: tokens give no query a {name} target (e.g. no token repeats); use repeated sequences "
                         "such as circuits.repeated_sequence(d_vocab, half >= 2)")
    mass = (pattern * T[:, None].to(pattern.dtype)).sum(-1)  # [..., B, H, P]: attention on the targets
    return (mass * scored[:, None].to(pattern.dtype)).sum((-3, -1)) / n  # mean over scored (b, i)


def pattern_scores(pattern: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every score of :data:`TARGETS`: ``{name: [..., H]}`` (see :func:`pattern_score`)."""
    return {name: pattern_score(name, pattern, tokens) for name in TARGETS}
