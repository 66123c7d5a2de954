"""One table of every head's signatures: :func:`head_table` -> :class:`HeadTable`.

Weight-based columns read any :class:`~circuitproof.numeric.Weights` (the reference's, or
``adapt(model).weights``), folded as in ``_effective``; behavioural columns read a forward
pass on repeated random sequences (the reference run unless a trace is given). NaN
means "not scored"; :attr:`HeadTable.notes` says why, column by column.

======================= ============= ========================================================
column                  from          definition
======================= ============= ========================================================
``copying``             weights       ``sum lambda / sum |lambda|`` of ``E W_OV U`` (:func:`copying_score`)
``previous_token``      pattern       attention to ``i - 1`` (:func:`pattern_score`)
``duplicate_token``     pattern       attention to earlier occurrences of the current token
``induction``           pattern       attention to the token after an earlier occurrence
``positional_previous`` weights       ``previous_token`` of the positional QK's pattern (:func:`positional_qk`)
``q_composition``       weights       max over earlier heads of Q-composition (:func:`composition_scores`)
``k_composition``       weights       max over earlier heads of K-composition
``v_composition``       weights       max over earlier heads of V-composition
======================= ============= ========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ... import UnsupportedError
from ...arch import Arch
from .._trace import Trace
from .._weights import Weights
from ..reference import run
from ._composition import COMPOSITIONS, composition_scores, qk_composition_supported
from ._effective import effective
from ._ov import copying_score
from ._patterns import pattern_scores
from ._positional import positional_qk

__all__ = ["COLUMNS", "HeadScore", "HeadTable", "head_table", "probe_tokens"]

COLUMNS = ("copying", "previous_token", "duplicate_token", "induction", "positional_previous",
           "q_composition", "k_composition", "v_composition")


class HeadScore(NamedTuple):
    """One head's value in one column; ``str`` is ``L{layer}H{head}``."""

    layer: int
    head: int
    value: float

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass(frozen=True, eq=False)
class HeadTable:
    """Every head's signatures: ``scores[column]`` ``[L, H]`` (NaN: not scored, see ``notes``), pairwise ``composition``.

    ``composition[name]`` ``[L, H, L, H]`` holds the score of ``(l1, h1) -> (l2, h2)``
    (NaN unless ``l1 < l2``); ``tokens`` is the probe the behavioural columns were read on.
    """

    arch: Arch
    scores: dict[str, torch.Tensor]
    composition: dict[str, torch.Tensor]
    notes: dict[str, str] = field(default_factory=dict)
    tokens: torch.Tensor | None = None

    def rows(self) -> list[dict[str, float]]:
        """One dict per head, ``{"layer", "head", column: value}``, layer-major."""
        L, H = self.arch.n_layers, self.arch.n_heads
        return [{"layer": l, "head": h, **{c: float(self.scores[c][l, h]) for c in COLUMNS}} for l in range(L) for h in range(H)]

    def top(self, column: str, k: int = 1) -> list[HeadScore]:
        """The ``k`` heads scoring highest in ``column`` (not-scored heads left out), best first: ``table.top("induction")``."""
        if column not in self.scores:
            raise ValueError(f"HeadTable.top: column={column!r} must be one of {list(self.scores)}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"HeadTable.top: k={k!r} must be an integer >= 1")
        s = self.scores[column]
        heads = [HeadScore(l, h, float(s[l, h])) for l in range(s.shape[0]) for h in range(s.shape[1]) if not torch.isnan(s[l, h])]
        return sorted(heads, key=lambda x: -x.value)[:k]

    def to_markdown(self, digits: int = 3) -> str:
        """A markdown table, one row per head, ``-`` where not scored, then the notes."""
        head = "| head | " + " | ".join(COLUMNS) + " |"
        lines = [head, "|" + " --- |" * (len(COLUMNS) + 1)]
        for row in self.rows():
            cells = ["-" if math.isnan(v) else f"{v:.{digits}f}" for v in (row[c] for c in COLUMNS)]
            lines.append(f"| L{row['layer']}H{row['head']} | " + " | ".join(cells) + " |")
        lines += [""] + [f"- `{c}`: {why}" for c, why in self.notes.items()]
        return "\n".join(lines).rstrip() + "\n"

    def __rich__(self):
        """A ``rich.table.Table`` (``rich.print(table)``), ``-`` where not scored."""
        from rich.table import Table

        out = Table(title=f"head signatures of {self.arch!r}", caption="; ".join(f"{c}: {w}" for c, w in self.notes.items()) or None)
        out.add_column("head")
        for c in COLUMNS:
            out.add_column(c.replace("_", "\n"), justify="right")  # "previous\ntoken": narrow enough for 80 columns
        for row in self.rows():
            out.add_row(f"L{row['layer']}H{row['head']}", *("-" if math.isnan(row[c]) else f"{row[c]:.3f}" for c in COLUMNS))
        return out

    def __repr__(self) -> str:
        best = {c: [str(x) for x in self.top(c)] for c in ("previous_token", "induction") if self.top(c)}
        return f"HeadTable({self.arch!r}, {self.arch.n_layers * self.arch.n_heads} heads, top {best})"


def probe_tokens(arch: Arch, *, half: int | None = None, batch: int = 8, seed: int = 0) -> torch.Tensor:
    """``[batch, 2 half]``: repeated random sequences (``half`` distinct tokens, then again), the behavioural probe.

    ``half`` defaults to ``min(n_ctx // 2, d_vocab, 32)``. Raises ``ValueError`` naming
    ``half`` if it is < 2 (too short for induction scores: with one token repeated the
    only induction target is the query itself), > d_vocab (not distinct) or > n_ctx / 2.
    """
    from ..circuits import repeated_sequence

    h = min(arch.n_ctx // 2, arch.d_vocab, 32) if half is None else half
    if not isinstance(h, int) or isinstance(h, bool) or not 2 <= h <= min(arch.d_vocab, arch.n_ctx // 2):
        raise ValueError(f"probe_tokens: half={h!r} must be an integer in [2, min(d_vocab={arch.d_vocab}, n_ctx // 2={arch.n_ctx // 2})]: "
                         "induction scores need a repeat of at least two distinct tokens within n_ctx")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"probe_tokens: batch={batch!r} must be an integer >= 1")
    return repeated_sequence(arch.d_vocab, h, seed=seed, batch=batch)


def _max_over_earlier(pairs: torch.Tensor) -> torch.Tensor:
    """``[L, H]``: for each later head, the max over earlier heads of ``pairs`` ``[L, H, L, H]`` (NaN where there is none)."""
    L, H = pairs.shape[:2]
    flat = pairs.reshape(L * H, L, H)  # [(l1, h1), l2, h2]
    best = flat.nan_to_num(float("-inf")).max(0).values
    return torch.where(flat.isnan().all(0), torch.full_like(best, float("nan")), best)


def head_table(arch: Arch, weights: Weights, tokens: torch.Tensor | None = None, *, trace: Trace | None = None,
               half: int | None = None, batch: int = 8, seed: int = 0) -> HeadTable:
    """Every head's signatures in one :class:`HeadTable` (columns in the module docstring).

    Behavioural columns are read on ``trace`` if given (e.g. an adapter's trace; its
    tokens are the probe), else on the reference run of ``tokens``, else on
    :func:`probe_tokens` (``half``, ``batch``, ``seed``). Weight-based columns that the
    architecture does not support are NaN with the reason in ``notes`` (post-norm,
    rotary or QK-norm for Q/K composition, no positions, a nonlinear unembedding).
    """
    from ... import WeightsError

    if weights.arch != arch:
        raise WeightsError(f"head_table: weights are for {weights.arch!r}, not for {arch!r}")
    w = weights.to(torch.float64) if weights.dtype != torch.float64 else weights
    if trace is None:
        tokens = probe_tokens(arch, half=half, batch=batch, seed=seed) if tokens is None else torch.as_tensor(tokens)
        trace = run(arch, w, tokens)
    tokens = trace.tokens
    L, H = arch.n_layers, arch.n_heads
    nan = torch.full((L, H), float("nan"), dtype=torch.float64)
    scores = {c: nan.clone() for c in COLUMNS}
    notes: dict[str, str] = {}
    for name, value in pattern_scores(trace.pattern.to(torch.float64), tokens).items():
        scores[name] = value
    composition = {name: torch.full((L, H, L, H), float("nan"), dtype=torch.float64) for name in COMPOSITIONS}
    try:
        eff = effective(arch, w)
    except UnsupportedError as e:
        for c in ("copying", "positional_previous", *(f"{n}_composition" for n in COMPOSITIONS)):
            notes[c] = str(e).split(": ", 1)[1]
        return HeadTable(arch, scores, composition, notes, tokens)
    if eff.U is None:
        notes["copying"] = "unembed_transform: the unembedding is not linear, the full OV circuit is not a matrix"
    else:
        scores["copying"] = copying_score(arch, w, eff=eff)
        if scores["copying"].isnan().any():
            notes["copying"] = ("NaN where the full OV circuit E W_OV U has no spectrum (zero to rounding: e.g. the head "
                                "writes only where U does not read)")
    try:
        scores["positional_previous"] = positional_qk(arch, w, n_pos=tokens.shape[1], eff=eff).previous_token()
    except UnsupportedError as e:
        notes["positional_previous"] = str(e).split(": ", 1)[1]
    composition = composition_scores(arch, w, eff=eff)
    why_qk = qk_composition_supported(arch)
    for name in COMPOSITIONS:
        scores[f"{name}_composition"] = _max_over_earlier(composition[name])
        if name != "v" and why_qk:
            notes[f"{name}_composition"] = why_qk
    if L == 1:
        for name in COMPOSITIONS:
            notes.setdefault(f"{name}_composition", "one layer: no earlier head to compose with")
    return HeadTable(arch, scores, composition, notes, tokens)
