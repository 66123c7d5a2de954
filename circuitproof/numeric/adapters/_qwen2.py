"""Qwen2 (``Qwen2ForCausalLM``): the Llama adapter with Qwen2's biases and sliding window.

Qwen2's modules are Llama's (same names, shapes and forward), so every weight
convention of :mod:`._llama` holds unchanged: per-head blocks of ``q/k/v_proj``
rows, ``W_O = o_proj.weight.T.reshape(H, Dh, D)``, GQA head ``h`` reads kv head
``h // (H // K)``, full "half" rotary with ``rotary_base = rope_theta``, pre-norm
RMSNorm with gain ``w``, gated MLP ``down(act(gate(x)) * up(x))``. What differs:

- Biases are not configurable: ``q_proj``, ``k_proj`` and ``v_proj`` always have
  one (``b_Q``, ``b_K``, ``b_V``), ``o_proj`` and the MLP never do.
- ``head_dim`` is not a declared Qwen2Config field, but the attention and the
  rotary embedding read it when present (``getattr(config, "head_dim", ...)``),
  and Qwen2Config does not require ``hidden_size`` to be a multiple of the heads:
  any ``d_head`` is expressible.
- Sliding window: layer ``i`` uses ``create_sliding_window_causal_mask`` (key ``j``
  visible from query ``i`` iff ``j <= i`` and ``i - j < sliding_window``, the Arch
  semantics) iff ``config.layer_types[i] == "sliding_attention"``; that mask is
  what the eager kernel applies. ``sliding_window`` is kept only when
  ``use_sliding_window`` (else None), and ``layer_types`` defaults to sliding on
  layers ``>= max_window_layers``. Read: ``sliding_layers`` are the sliding
  entries of ``layer_types``; build writes ``layer_types`` explicitly.
- Bidirectional sliding window (``is_causal=False``, see :mod:`._llama`):
  transformers' bidirectional window is inclusive, ``|i - j| <= sliding_window``
  (``masking_utils.sliding_window_bidirectional_overlay``), the Arch's is
  ``|i - j| < sliding_window``: there ``config.sliding_window = Arch.sliding_window - 1``.
  A bidirectional window of 1 (config 0) is not expressed: Qwen2's sdpa attention
  fails on it (a mask of the wrong width), although eager computes it.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import Qwen2Config, Qwen2ForCausalLM

from ...arch import Arch
from ._base import require
from ._llama import LlamaAdapter

__all__ = ["Qwen2Adapter"]

_LAYER_TYPES = ("full_attention", "sliding_attention")


class Qwen2Adapter(LlamaAdapter):
    """Reads, traces and builds ``Qwen2ForCausalLM`` (conventions in the module docstring)."""

    family = "qwen2"
    model_classes = ("Qwen2ForCausalLM",)
    config_class: ClassVar[type] = Qwen2Config
    model_class: ClassVar[type] = Qwen2ForCausalLM
    below_dtype_steps = tuple(
        step.replace("Llama", "Qwen2").replace("modeling_llama", "modeling_qwen2").replace("models/llama", "models/qwen2")
        for step in LlamaAdapter.below_dtype_steps
    )
    fixed: ClassVar[dict[str, object]] = {
        **{k: v for k, v in LlamaAdapter.fixed.items() if k != "sliding_window"},
        **dict(q_bias=True, k_bias=True, v_bias=True, o_bias=False, mlp_bias=False),
    }
    pinned = dict(fixed)

    @classmethod
    def project(cls, arch: Arch) -> Arch:
        """Unchanged: Qwen2 fixes its biases (pinned) and takes any head size."""
        return arch

    @classmethod
    def _cannot_express_more(cls, arch: Arch) -> str | None:
        if not arch.causal and arch.sliding_window == 1:
            return "sliding_window=1 with causal=False (config.sliding_window would be 0, on which Qwen2's sdpa attention fails)"
        return None

    @classmethod
    def _read_switches(cls, config: object) -> dict[str, object]:
        """The sliding window: on the layers ``layer_types`` marks ``"sliding_attention"``."""
        types = list(config.layer_types)
        require(len(types) == config.num_hidden_layers, f"layer_types={types!r}: one entry per layer expected")
        require(all(t in _LAYER_TYPES for t in types), f"layer_types={types!r}: expressible are {_LAYER_TYPES}")
        sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
        if not sliding:
            return dict(sliding_window=None, sliding_layers=())
        window = config.sliding_window
        require(window is not None, f"layer_types={types!r} has sliding layers but sliding_window=None (use_sliding_window=False)")
        require(window >= 1, f"sliding_window={window}: causal, it masks every key; bidirectional, Qwen2's sdpa attention fails on it")
        inclusive = not getattr(config, "is_causal", True)  # bidirectional: |i - j| <= sliding_window
        return dict(sliding_window=window + int(inclusive), sliding_layers=sliding)

    @classmethod
    def _write_switches(cls, arch: Arch) -> dict[str, object]:
        types = ["sliding_attention" if arch.is_sliding(l) else "full_attention" for l in range(arch.n_layers)]
        window = arch.sliding_window
        if window is not None and not arch.causal:
            window -= 1  # transformers' bidirectional window is inclusive: |i - j| <= sliding_window
        return dict(use_sliding_window=window is not None, sliding_window=window, max_window_layers=arch.n_layers, layer_types=types)
