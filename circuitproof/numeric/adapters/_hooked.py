"""Reading, tracing and building helpers for families whose heads are seen only through ``z`` (GPT-NeoX, GPT-J; the
Llama-like families' traces through ``_decoder.assemble``).

Their attention forward does rotary and the scores inside one module, so a trace
records ``v`` and ``z`` (the input of the output projection) and computes each head's
write from ``z``; their weights are read layer by layer into per-layer dicts and
stacked. What each family names differently (modules, fused or separate projections)
stays in its adapter; these helpers are the parts that are the same:

================== ===================================================================
helper             does
================== ===================================================================
``reader(owner)``  ``get(label, tensor, shape)``: a fresh copy of a parameter, its shape checked
``writer()``       ``put(param, value, label)``: copy a value into a parameter, its shape checked
``stack_layers``   ``[{name: tensor}]`` per layer -> ``{name: [L, ...]}``
``unembedding``    ``W_U`` from ``lm_head`` (untied), or the check that it is the embedding (tied)
``z_trace``        the Trace of a forward pass recorded under the standard keys (below)
================== ===================================================================

``z_trace`` reads the Recorder keys ``embed``, ``resid_pre``, ``resid_post``, ``v``,
``pattern``, ``z`` (heads concatenated, ``[B, P, H * Dh]``), ``attn_out``, ``mlp_pre``,
``mlp_post`` and ``mlp_out``; ``q``, ``k`` and ``scores`` are None.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...arch import Arch
from .._trace import NormTrace, Trace
from ._base import AdapterError, Recorder, check_shape

__all__ = ["reader", "writer", "stack_layers", "unembedding", "z_trace"]


def reader(owner: str) -> Callable[[str, torch.Tensor, tuple[int, ...]], torch.Tensor]:
    """``get(label, tensor, shape)``: a detached copy of ``tensor``; AdapterError naming ``owner`` and ``label`` unless it has ``shape``."""

    def get(label: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return check_shape(owner, label, t.detach(), shape).clone()

    return get


def writer() -> Callable[[torch.Tensor, torch.Tensor, str], None]:
    """``put(param, value, label)``: ``param.copy_(value)``; AdapterError naming ``label`` unless ``value`` has the parameter's shape.

    Call it under ``torch.no_grad()``.
    """

    def put(param: torch.Tensor, value: torch.Tensor, label: str) -> None:
        param.copy_(check_shape("build", label, value, tuple(param.shape)))

    return put


def stack_layers(layers: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{name: [L, ...]}``: each name's per-layer tensors stacked (a fresh, contiguous copy)."""
    return {name: torch.stack([layer[name] for layer in layers]).contiguous() for name in layers[0]} if layers else {}


def unembedding(get, model: torch.nn.Module, arch: Arch, embed: torch.Tensor, embed_label: str) -> dict[str, torch.Tensor]:
    """``{"W_U": lm_head.weight^T}`` ``[D, V]`` if untied; tied: ``{}`` after checking that ``lm_head.weight`` is the embedding."""
    if not arch.tied:
        return {"W_U": get("lm_head.weight", model.lm_head.weight, (arch.d_vocab, arch.d_model)).T.contiguous()}
    if model.lm_head.weight.data_ptr() != embed.data_ptr():
        raise AdapterError(f"{type(model).__name__}: tie_word_embeddings=True but lm_head.weight is not {embed_label}")
    return {}


def z_trace(arch: Arch, tokens: torch.Tensor, rec: Recorder, logits: torch.Tensor, W_O: torch.Tensor, norms: dict[str, NormTrace],
            resid_mid: torch.Tensor | None, *, v: torch.Tensor | None = None, logits_raw: torch.Tensor | None = None) -> Trace:
    """The Trace of a recorded forward pass (the module's standard keys); ``W_O`` ``[L, H, Dh, D]`` as the model holds it.

    ``z`` ``[L, B, P, H, Dh]`` is the recorded concatenation split by head and
    ``head_out[l, :, :, h] = z_h W_O[l, h]`` ``[L, B, P, H, D]``: the write of each head.
    ``v`` defaults to the recorded ``v``, ``logits_raw`` (before any softcap) to ``logits``.
    """
    z = rec.stack("z").unflatten(-1, (arch.n_heads, arch.d_head))  # [L, B, P, H * Dh] -> [L, B, P, H, Dh]
    return Trace(
        arch=arch,
        tokens=tokens,
        embed=rec.last("embed"),
        resid_pre=rec.stack("resid_pre"),
        resid_mid=resid_mid,
        resid_post=rec.stack("resid_post"),
        q=None,
        k=None,
        v=rec.stack("v") if v is None else v,
        scores=None,
        pattern=rec.stack("pattern"),
        z=z,
        head_out=torch.einsum("lbphe,lhed->lbphd", z, W_O),  # head_h = z_h W_O[h]
        attn_out=rec.stack("attn_out"),
        mlp_pre=rec.stack("mlp_pre"),
        mlp_post=rec.stack("mlp_post"),
        mlp_out=rec.stack("mlp_out"),
        logits_raw=logits if logits_raw is None else logits_raw,
        logits=logits,
        norms=norms,
    )
