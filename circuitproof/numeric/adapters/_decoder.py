"""Conversions shared by the Llama-like decoder families (Gemma 2, OLMo 2): reading and writing the layers' weights,
hooking their forward pass, assembling the Trace, and the hook points interventions use.

Each decoder layer holds ``self_attn.{q,k,v,o}_proj`` (``nn.Linear``, weight ``[out, in]``: ``W_Q[l, h] =
q_proj.weight[h Dh:(h+1) Dh].T``), ``mlp.{gate,up,down}_proj`` (``W_gate = gate_proj.weight.T``, ``W_in =
up_proj.weight.T``, ``W_out = down_proj.weight.T``) and its norms; the family modules name which norms.
"""

from __future__ import annotations

import torch

from ...arch import Arch
from .._trace import NormTrace, Trace
from .._weights import Weights
from ._base import AdapterError, Recorder, check_shape, require
from ._hooked import z_trace

__all__ = ["ACTS", "ACT_NAMES", "LlamaLayout", "assemble", "hook_layers", "hook_norm", "norm_trace", "read_act", "read_layers",
           "read_unembed", "rope_theta", "stack_layers", "write_layers"]

# transformers activation name -> Arch.act; the first name of each act is the one build writes
ACTS = {
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "gelu_new": "gelu_tanh",
    "swish": "silu",
}
ACT_NAMES = {act: name for name, act in reversed(ACTS.items())}


def read_layers(name: str, model: torch.nn.Module, arch: Arch) -> dict[str, torch.Tensor]:
    """W_Q, W_K, W_V, W_O, biases and the gated MLP of every ``model.model.layers[l]``, canonical and stacked."""
    H, K, D, Dh, M = arch.n_heads, arch.n_kv_heads, arch.d_model, arch.d_head, arch.d_mlp
    out: dict[str, list[torch.Tensor]] = {}

    def keep(key: str, value: torch.Tensor) -> None:
        out.setdefault(key, []).append(value.detach())

    for l, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        for key, proj, n in (("Q", attn.q_proj, H), ("K", attn.k_proj, K), ("V", attn.v_proj, K)):
            weight = check_shape(name, f"layers[{l}].self_attn.{key.lower()}_proj.weight", proj.weight, (n * Dh, D))
            keep(f"W_{key}", weight.view(n, Dh, D).transpose(1, 2))  # [n*Dh, D] -> [n, D, Dh]: split heads, transpose
            if getattr(arch, f"{key.lower()}_bias"):
                keep(f"b_{key}", check_shape(name, f"layers[{l}].self_attn.{key.lower()}_proj.bias", proj.bias, (n * Dh,)).view(n, Dh))
        weight = check_shape(name, f"layers[{l}].self_attn.o_proj.weight", attn.o_proj.weight, (D, H * Dh))
        keep("W_O", weight.T.reshape(H, Dh, D))  # [D, H*Dh] -> [H*Dh, D] -> [H, Dh, D]
        if arch.o_bias:
            keep("b_O", check_shape(name, f"layers[{l}].self_attn.o_proj.bias", attn.o_proj.bias, (D,)))
        keep("W_in", check_shape(name, f"layers[{l}].mlp.up_proj.weight", mlp.up_proj.weight, (M, D)).T)  # [D, M]
        keep("W_gate", check_shape(name, f"layers[{l}].mlp.gate_proj.weight", mlp.gate_proj.weight, (M, D)).T)  # [D, M]
        keep("W_out", check_shape(name, f"layers[{l}].mlp.down_proj.weight", mlp.down_proj.weight, (D, M)).T)  # [M, D]
    return {key: torch.stack(values) for key, values in out.items()}


def stack_layers(name: str, model: torch.nn.Module, path: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``model.model.layers[l].<path>`` of every layer, each shape-checked, stacked: ``[L, *shape]``."""
    tensors = [check_shape(name, f"layers[{l}].{path}", layer.get_parameter(path), shape) for l, layer in enumerate(model.model.layers)]
    return torch.stack(tensors).detach()


def write_layers(model: torch.nn.Module, arch: Arch, w: Weights) -> None:
    """The inverse of :func:`read_layers`: copy canonical tensors into every layer (under no_grad)."""
    H, K, D, Dh = arch.n_heads, arch.n_kv_heads, arch.d_model, arch.d_head
    for l, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        for key, proj, n in (("Q", attn.q_proj, H), ("K", attn.k_proj, K), ("V", attn.v_proj, K)):
            proj.weight.copy_(w[f"W_{key}"][l].transpose(1, 2).reshape(n * Dh, D))  # [n, D, Dh] -> [n*Dh, D]
            if getattr(arch, f"{key.lower()}_bias"):
                proj.bias.copy_(w[f"b_{key}"][l].reshape(n * Dh))
        attn.o_proj.weight.copy_(w.W_O[l].reshape(H * Dh, D).T)  # [H, Dh, D] -> [D, H*Dh]
        if arch.o_bias:
            attn.o_proj.bias.copy_(w.b_O[l])
        mlp.up_proj.weight.copy_(w.W_in[l].T)
        mlp.gate_proj.weight.copy_(w.W_gate[l].T)
        mlp.down_proj.weight.copy_(w.W_out[l].T)


def read_unembed(name: str, model: torch.nn.Module, arch: Arch) -> dict[str, torch.Tensor]:
    """W_E (and W_U = lm_head.weight.T when untied); a tied config must share the tensor."""
    embed, head = model.model.embed_tokens.weight, model.lm_head.weight
    out = {"W_E": check_shape(name, "model.embed_tokens.weight", embed, (arch.d_vocab, arch.d_model)).detach().clone()}
    if arch.tied:
        if head.data_ptr() != embed.data_ptr() and not torch.equal(head, embed):
            raise AdapterError(f"{name}: tie_word_embeddings=True but lm_head.weight differs from model.embed_tokens.weight")
    else:
        out["W_U"] = check_shape(name, "lm_head.weight", head, (arch.d_vocab, arch.d_model)).detach().T.clone()  # [V, D] -> [D, V]
    return out


def hook_layers(rec: Recorder, model: torch.nn.Module) -> None:
    """Hooks shared by Llama-like decoders: streams (not resid_mid), attention output and pattern, z, v, MLP, raw logits."""
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    rec.output(model.model.embed_tokens, "embed")
    for layer in model.model.layers:
        rec.input(layer, "resid_pre")
        rec.output(layer, "resid_post", first)
        rec.output(layer.self_attn, "attn_out", lambda out: out[0])
        rec.output(layer.self_attn, "pattern", lambda out: out[1])  # eager attention returns the weights [B, H, P, P]
        rec.output(layer.self_attn.v_proj, "v")
        rec.input(layer.self_attn.o_proj, "z")  # [B, P, H*Dh], the heads' values entering o_proj
        rec.output(layer.mlp.up_proj, "mlp_pre")
        rec.input(layer.mlp.down_proj, "mlp_post")
        rec.output(layer.mlp, "mlp_out")
    rec.output(model.lm_head, "logits_raw")


def norm_trace(rec: Recorder, slot: str) -> NormTrace:
    return NormTrace(input=rec.stack(f"{slot}.in"), scale=None, output=rec.stack(f"{slot}.out"))


def hook_norm(rec: Recorder, module: torch.nn.Module, slot: str) -> None:
    rec.input(module, f"{slot}.in")
    rec.output(module, f"{slot}.out")


def assemble(arch: Arch, w: Weights, tokens: torch.Tensor, rec: Recorder, logits: torch.Tensor, norms: dict[str, NormTrace]) -> Trace:
    """The Trace from what :func:`hook_layers` recorded (head outputs from the recorded z and W_O)."""
    v = rec.stack("v").unflatten(-1, (arch.n_kv_heads, arch.d_head))  # [L, B, P, K * Dh] -> [L, B, P, K, Dh]
    # q, k, scores: rotary is applied by a function inside the attention forward, not observable by hooks
    W_O = w.W_O.to(rec.last("z").dtype)
    return z_trace(arch, tokens, rec, logits, W_O, norms, rec.stack("resid_mid"), v=v, logits_raw=rec.last("logits_raw"))


def rope_theta(name: str, config: object) -> float:
    """The rotary base of a default-rope config (UnsupportedError naming rope_parameters otherwise)."""
    rope = dict(config.rope_parameters or {})
    kind = rope.get("rope_type", "default")
    require(kind == "default", f"{name}: rope_parameters['rope_type']={kind!r} is not expressible (only 'default' rotary)")
    require("rope_theta" in rope, f"{name}: rope_parameters has no 'rope_theta'")
    return float(rope["rope_theta"])


def read_act(name: str, field: str, value: str) -> str:
    require(value in ACTS, f"{name}: {field}={value!r} is not expressible; supported: {sorted(ACTS)}")
    return ACTS[value]


# ------------------------------------------------------------------ hook points
class LlamaLayout:
    """The hook points of a Llama-like causal LM (``model.model.embed_tokens``, ``.layers[l].self_attn.o_proj``,
    ``.layers[l].mlp``, ``.norm``), for :mod:`circuitproof.numeric.interventions`; mixed into an Adapter."""

    model: torch.nn.Module

    def embed_point(self) -> tuple[torch.nn.Module, str]:
        return self.model.model.embed_tokens, "output"

    def out_proj(self, layer: int) -> torch.nn.Module:
        return self.model.model.layers[layer].self_attn.o_proj

    def mlp_module(self, layer: int) -> torch.nn.Module:
        return self.model.model.layers[layer].mlp

    def final_norm_module(self) -> torch.nn.Module:
        return self.model.model.norm
