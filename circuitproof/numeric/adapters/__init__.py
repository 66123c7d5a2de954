"""Adapters between circuitproof and real implementations (Hugging Face transformers).

``adapt(model) -> Adapter`` reads a model into ``Arch`` and ``Weights`` and traces
its own forward pass; ``build(arch, weights, family)`` makes a real model of a
family carrying exactly those weights. Supported families and classes:

========== =============================================== =========================
family     transformers classes                            module
========== =============================================== =========================
gpt2       GPT2LMHeadModel, GPT2Model                      ``_gpt2``
gpt_neox   GPTNeoXForCausalLM                              ``_gpt_neox``
llama      LlamaForCausalLM                                ``_llama``
qwen2      Qwen2ForCausalLM                                ``_qwen2``
gptj       GPTJForCausalLM                                 ``_gptj``
bert       BertForMaskedLM, BertModel                      ``_bert``
gemma2     Gemma2ForCausalLM                               ``_gemma2``
olmo2      Olmo2ForCausalLM                                ``_olmo2``
========== =============================================== =========================

Each family module documents its weight conversions once, in its docstring
(transposes, fused QKV layouts, GQA head mapping, rotary pairing). Family
modules import transformers; this module does not, until a family is used.
"""

from __future__ import annotations

import importlib

import torch

from ... import UnsupportedError
from ...arch import Arch
from .._weights import Weights
from ._base import Adapter, AdapterError, preserved

__all__ = ["adapt", "build", "adapter_class", "families_for", "FAMILIES", "Adapter", "AdapterError", "preserved"]

# family -> (module, adapter class name, transformers classes it reads)
_REGISTRY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gpt2": ("_gpt2", "GPT2Adapter", ("GPT2LMHeadModel", "GPT2Model")),
    "gpt_neox": ("_gpt_neox", "GPTNeoXAdapter", ("GPTNeoXForCausalLM",)),
    "llama": ("_llama", "LlamaAdapter", ("LlamaForCausalLM",)),
    "qwen2": ("_qwen2", "Qwen2Adapter", ("Qwen2ForCausalLM",)),
    "gptj": ("_gptj", "GPTJAdapter", ("GPTJForCausalLM",)),
    "bert": ("_bert", "BertAdapter", ("BertForMaskedLM", "BertModel")),
    "gemma2": ("_gemma2", "Gemma2Adapter", ("Gemma2ForCausalLM",)),
    "olmo2": ("_olmo2", "Olmo2Adapter", ("Olmo2ForCausalLM",)),
}
FAMILIES: tuple[str, ...] = tuple(_REGISTRY)


def adapter_class(family: str) -> type[Adapter]:
    """The Adapter subclass of ``family`` (imports its module, and so transformers)."""
    if family not in _REGISTRY:
        raise UnsupportedError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")
    module, name, _ = _REGISTRY[family]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def adapt(model: torch.nn.Module) -> Adapter:
    """An Adapter for ``model``: ``.arch``, ``.weights`` and ``.trace(tokens)`` of its own forward pass.

    Raises UnsupportedError naming the class and listing the supported ones.
    """
    cls_name = type(model).__name__
    for family, (_, _, classes) in _REGISTRY.items():
        if cls_name in classes:
            return adapter_class(family)(model)
    supported = ", ".join(c for _, _, classes in _REGISTRY.values() for c in classes)
    raise UnsupportedError(f"adapt: no adapter for {cls_name}; supported classes: {supported}")


def build(arch: Arch, weights: Weights, family: str) -> torch.nn.Module:
    """A real transformers model of ``family`` carrying exactly ``weights`` (UnsupportedError names a feature it cannot express)."""
    return adapter_class(family).build(arch, weights)


def families_for(arch: Arch) -> list[str]:
    """The families that can express ``arch``."""
    return [f for f in FAMILIES if adapter_class(f).cannot_express(arch) is None]
