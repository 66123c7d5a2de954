"""Head signatures: what a head does, read from its weights and from its attention, with a ground truth for each.

Every signature has its equation (row convention, DESIGN.md) and its source in the
docstring of the function that computes it; all compute in float64 from any
:class:`~circuitproof.numeric.Weights` (the reference's, or
``circuitproof.numeric.adapters.adapt(model).weights``). With norms, the weight-based
signatures read the maps each head applies with the norm divisors frozen
(:func:`effective`): the raw weights are not what a head applies.

=========================== ================= ==================================================================
name                        reads             what it is
=========================== ================= ==================================================================
:func:`head_table`          weights, pattern  every signature of every head in one :class:`HeadTable`
                                              (``to_markdown()``, rich rendering, ``top("induction")``)
:func:`copying_score`       weights           ``sum lambda / sum |lambda|`` over the eigenvalues of ``E W_OV U``
                                              (Elhage et al. 2021), through a ``[d_head, d_head]`` product
:func:`composition_scores`  weights           Q-, K-, V-composition of every earlier head into every later head
                                              (Elhage et al. 2021); :func:`composition_baseline` ``1/sqrt(D)``
:func:`positional_qk`       weights           the score as a function of positions: ``P W_QK P^T`` (learned),
                                              ``q R(i-j) k^T`` on the mean token (rotary); offset profile
:func:`pattern_score`       pattern, tokens   previous-token, duplicate-token, induction scores (:data:`TARGETS`;
                                              Olsson et al. 2022) on :func:`probe_tokens`
:func:`ov_prediction`       weights, pattern  a layer-0 head's logit update from its OV circuit, in labelled parts
:func:`disagreements`       both              every head where a weight-based prediction and the forward pass
                                              disagree, listed (never averaged)
=========================== ================= ==================================================================

GQA: query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``; every
per-head result is indexed by query head. Not scored is NaN, with the reason in
``HeadTable.notes``; a direct call on an unsupported architecture raises
:class:`~circuitproof.UnsupportedError` saying why.
"""

from ._agreement import RTOL_OV, RTOL_OV_REASON, Disagreement, checked, disagreements
from ._composition import COMPOSITIONS, composition_baseline, composition_scores, qk_composition_supported
from ._effective import Effective, effective, norm_linear
from ._ov import OVPrediction, copying_score, ov_eigenvalues, ov_prediction
from ._patterns import TARGETS, pattern_score, pattern_scores, target_mask
from ._positional import PositionalQK, positional_qk
from ._table import COLUMNS, HeadScore, HeadTable, head_table, probe_tokens

__all__ = [
    "head_table", "HeadTable", "HeadScore", "COLUMNS", "probe_tokens",
    "copying_score", "ov_eigenvalues", "ov_prediction", "OVPrediction",
    "composition_scores", "composition_baseline", "qk_composition_supported", "COMPOSITIONS",
    "positional_qk", "PositionalQK",
    "pattern_score", "pattern_scores", "target_mask", "TARGETS",
    "disagreements", "checked", "Disagreement", "RTOL_OV", "RTOL_OV_REASON",
    "effective", "Effective", "norm_linear",
]
