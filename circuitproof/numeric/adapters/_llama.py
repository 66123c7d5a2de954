"""Llama (``LlamaForCausalLM``): reading, tracing and building; the base of the Qwen2 adapter.

The family, in Arch terms: pre-norm RMSNorm blocks (``input_layernorm`` before
attention, ``post_attention_layernorm`` before the MLP, ``model.norm`` before the
unembedding, gain ``g = w``), a gated MLP ``down(act(gate(x)) * up(x))``, full
rotary with the "half" pairing, attention scale ``d_head ** -0.5``, no positional
table, no embedding scale, no logit bias or softcap. Attention is causal, or
bidirectional where the config carries ``is_causal=False``: not a declared
LlamaConfig field, but ``masking_utils.create_causal_mask`` reads it and builds a
bidirectional mask (eager and sdpa alike); ``Arch.causal`` is that attribute.

Weight conventions (transformers -> circuitproof rows, per layer ``l``):

- ``nn.Linear`` stores ``weight [out, in]`` and computes ``x weight^T``; every
  canonical matrix is that weight transposed, so that ``y = x W``.
- Query heads: ``q_proj.weight [H*Dh, D]`` is ``H`` blocks of ``Dh`` rows, head
  ``h`` owning rows ``h*Dh .. (h+1)*Dh``: ``W_Q[l] = weight.view(H, Dh, D).transpose(1, 2)``
  ``[H, D, Dh]``; ``q_proj.bias [H*Dh] -> b_Q[l] = bias.view(H, Dh)``. Keys and
  values likewise with ``K = num_key_value_heads`` blocks.
- GQA: query head ``h`` reads key/value head ``h // (H // K)`` (``repeat_kv``
  repeats each kv head for consecutive query heads), the Arch convention.
- Output: ``o_proj.weight [D, H*Dh]`` reads the heads' concatenated ``z``
  (head ``h`` in columns ``h*Dh .. (h+1)*Dh``): ``W_O[l] = weight.T.reshape(H, Dh, D)``;
  ``o_proj.bias [D] = b_O[l]``.
- MLP: ``up_proj -> W_in``, ``gate_proj -> W_gate`` (both ``weight.T [D, M]``),
  ``down_proj -> W_out`` (``weight.T [M, D]``); their biases as they are.
- Norms: ``input_layernorm.weight -> ln_attn_in_w``, ``post_attention_layernorm.weight
  -> ln_mlp_in_w``, ``model.norm.weight -> ln_final_w`` (gain ``w``, no bias).
- Embedding: ``embed_tokens.weight [V, D] = W_E``; ``lm_head.weight [V, D] = W_U^T``,
  absent when ``tie_word_embeddings`` (then ``lm_head.weight`` is ``embed_tokens.weight``).
- Rotary: ``rotate_half`` pairs coordinate ``k`` with ``k + Dh/2`` and
  ``cos/sin`` repeat the ``Dh/2`` frequencies ``base^(-2k/Dh)`` over both halves:
  the Arch's ``"half"`` style on the whole head, ``rotary_base = rope_theta``.
  Llama's default rope ignores ``partial_rotary_factor`` (always the full head)
  and has no attention-scale setting, so neither is expressible.
- Biases: one ``attention_bias`` flag switches the q, k, v *and* o biases;
  ``mlp_bias`` switches the three MLP biases.
- Activations: ``hidden_act`` ``silu``/``swish`` -> ``silu``, ``gelu`` -> ``gelu``,
  ``gelu_pytorch_tanh``/``gelu_new`` -> ``gelu_tanh``, ``relu`` -> ``relu``.

Trace: every field from hooks on the model's own modules except ``q``, ``k``
(rotary is applied by a function, not a module: not observable) and ``scores``
(the eager kernel returns only the softmaxed pattern); those are None.
``v`` is the ``v_proj`` output, ``z`` the input of ``o_proj``, ``mlp_pre`` the
``up_proj`` output, ``mlp_post`` the input of ``down_proj``. Norm scales are None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ...arch import Arch
from .._trace import NormTrace, Trace
from .._weights import Weights, weight_shapes
from ._base import Adapter, AdapterError, Recorder, check_shape, require
from ._decoder import LlamaLayout

__all__ = ["LlamaAdapter"]

# hidden_act -> Arch.act, and back (the first name of each Arch act is the one build writes)
ACT_READ = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "relu": "relu"}
ACT_WRITE = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


class Rewrite(NamedTuple):
    """One per-layer tensor: canonical name, parameter path under a decoder layer, its
    transformers shape, and the two named conversions (one layer at a time)."""

    canonical: str
    param: str
    hf_shape: tuple[int, ...]
    read: Callable[[torch.Tensor], torch.Tensor]  # transformers -> canonical
    write: Callable[[torch.Tensor], torch.Tensor]  # canonical -> transformers


def layer_rewrites(arch: Arch) -> list[Rewrite]:
    """The per-layer tensors of ``arch`` (only those it has), with their conversions."""
    H, K, D, Dh, M = arch.n_heads, arch.n_kv_heads, arch.d_model, arch.d_head, arch.d_mlp

    def heads_in(n: int) -> tuple[Callable, Callable]:
        # [n*Dh, D] --view--> [n, Dh, D] --transpose--> [n, D, Dh], and back
        return (lambda w: w.view(n, Dh, D).transpose(1, 2)), (lambda W: W.transpose(1, 2).reshape(n * Dh, D))

    def head_bias(n: int) -> tuple[Callable, Callable]:
        # [n*Dh] --view--> [n, Dh], and back
        return (lambda b: b.view(n, Dh)), (lambda b: b.reshape(n * Dh))

    transpose = (lambda w: w.T, lambda W: W.T)  # [out, in] <-> [in, out]
    same = (lambda t: t, lambda t: t)
    # o_proj.weight [D, H*Dh] --T--> [H*Dh, D] --reshape--> [H, Dh, D], and back
    heads_out = (lambda w: w.T.reshape(H, Dh, D), lambda W: W.reshape(H * Dh, D).T)
    table = [
        Rewrite("ln_attn_in_w", "input_layernorm.weight", (D,), *same),
        Rewrite("W_Q", "self_attn.q_proj.weight", (H * Dh, D), *heads_in(H)),
        Rewrite("W_K", "self_attn.k_proj.weight", (K * Dh, D), *heads_in(K)),
        Rewrite("W_V", "self_attn.v_proj.weight", (K * Dh, D), *heads_in(K)),
        Rewrite("W_O", "self_attn.o_proj.weight", (D, H * Dh), *heads_out),
        Rewrite("b_Q", "self_attn.q_proj.bias", (H * Dh,), *head_bias(H)),
        Rewrite("b_K", "self_attn.k_proj.bias", (K * Dh,), *head_bias(K)),
        Rewrite("b_V", "self_attn.v_proj.bias", (K * Dh,), *head_bias(K)),
        Rewrite("b_O", "self_attn.o_proj.bias", (D,), *same),
        Rewrite("ln_mlp_in_w", "post_attention_layernorm.weight", (D,), *same),
        Rewrite("W_in", "mlp.up_proj.weight", (M, D), *transpose),
        Rewrite("W_gate", "mlp.gate_proj.weight", (M, D), *transpose),
        Rewrite("W_out", "mlp.down_proj.weight", (D, M), *transpose),
        Rewrite("b_in", "mlp.up_proj.bias", (M,), *same),
        Rewrite("b_gate", "mlp.gate_proj.bias", (M,), *same),
        Rewrite("b_out", "mlp.down_proj.bias", (D,), *same),
    ]
    have = weight_shapes(arch)
    return [r for r in table if r.canonical in have]


def _param(model_name: str, module: torch.nn.Module, path: str, where: str) -> torch.Tensor:
    """``module.<path>``, or AdapterError naming it when the model lacks it (e.g. a bias the config promises)."""
    try:
        p = module.get_parameter(path)
    except AttributeError:
        p = None
    if p is None:
        raise AdapterError(f"{model_name}: {where}.{path} is missing; the config says the model has it")
    return p


class LlamaAdapter(LlamaLayout, Adapter):
    """Reads, traces and builds ``LlamaForCausalLM`` (conventions in the module docstring)."""

    family = "llama"
    model_classes = ("LlamaForCausalLM",)
    config_class: ClassVar[type] = LlamaConfig
    model_class: ClassVar[type] = LlamaForCausalLM
    below_dtype_steps = (
        "RMSNorm statistics and normalisation in float32: LlamaRMSNorm.forward casts hidden_states "
        "to torch.float32 (transformers/models/llama/modeling_llama.py)",
        "rotary tables in float32: LlamaRotaryEmbedding.compute_default_rope_parameters builds inv_freq "
        "with dtype=torch.float and LlamaRotaryEmbedding.forward computes freqs, cos and sin in float32 "
        "before casting them to the model's dtype (modeling_llama.py)",
        "softmax in float32: eager_attention_forward calls softmax(..., dtype=torch.float32) (modeling_llama.py)",
    )
    # Arch fields the family fixes (cannot_express names the first that differs)
    fixed: ClassVar[dict[str, object]] = dict(
        attn_scale=None,
        attn_softcap=None,
        sliding_window=None,
        qk_norm="none",
        positional="rotary",
        rotary_dim=None,
        rotary_style="half",
        norm="rmsnorm",
        norm_gain="w",
        norm_placement="pre",
        final_norm=True,
        embed_norm=False,
        parallel=False,
        attn_only=False,
        gated=True,
        unembed_bias=False,
        logit_softcap=None,
        embed_scale=1.0,
        unembed_transform=False,
    )
    pinned = {**fixed, "_sliding": False}

    # ------------------------------------------------------------ Arch side
    @classmethod
    def project(cls, arch: Arch) -> Arch:
        """One ``attention_bias`` flag: k, v and o biases follow q; ``hidden_size`` a multiple of the heads."""
        d_model = -(-arch.d_model // arch.n_heads) * arch.n_heads  # round up to a multiple of n_heads
        return arch.replace(k_bias=arch.q_bias, v_bias=arch.q_bias, o_bias=arch.q_bias, d_model=d_model)

    @classmethod
    def cannot_express(cls, arch: Arch) -> str | None:
        for name, value in cls.fixed.items():
            if getattr(arch, name) != value:
                return f"{name}={getattr(arch, name)!r} ({cls.family} has {name}={value!r})"
        return cls._cannot_express_more(arch)

    @classmethod
    def _cannot_express_more(cls, arch: Arch) -> str | None:
        biases = (arch.q_bias, arch.k_bias, arch.v_bias, arch.o_bias)
        if len(set(biases)) > 1:
            return "q_bias, k_bias, v_bias, o_bias={} (one attention_bias flag switches all four)".format(biases)
        if arch.d_model % arch.n_heads:
            return (
                f"d_model={arch.d_model} with n_heads={arch.n_heads} "
                "(LlamaConfig requires hidden_size to be a multiple of num_attention_heads)"
            )
        return None

    # ----------------------------------------------------------- read side
    @classmethod
    def read_arch(cls, model: torch.nn.Module) -> Arch:
        c = model.config
        rope = dict(c.rope_parameters or {})
        rope_type = rope.get("rope_type", "default")
        require(rope_type == "default", f"rope_parameters['rope_type']={rope_type!r}: only 'default' rotary is expressible")
        factor = rope.get("partial_rotary_factor", getattr(c, "partial_rotary_factor", None))
        require(factor in (None, 1.0), f"partial_rotary_factor={factor!r}: {cls.family}'s default rope rotates the whole head")
        require(c.hidden_act in ACT_READ, f"hidden_act={c.hidden_act!r}: expressible are {sorted(ACT_READ)}")
        layers = model.model.layers
        require(len(layers) == c.num_hidden_layers, f"num_hidden_layers={c.num_hidden_layers} but the model holds {len(layers)} layers")
        return Arch(
            n_layers=c.num_hidden_layers,
            n_heads=c.num_attention_heads,
            n_kv_heads=c.num_key_value_heads,
            d_model=c.hidden_size,
            d_head=layers[0].self_attn.head_dim,
            d_mlp=c.intermediate_size,
            d_vocab=c.vocab_size,
            n_ctx=c.max_position_embeddings,
            rotary_base=float(rope.get("rope_theta", c.default_theta)),
            norm_eps=c.rms_norm_eps,
            act=ACT_READ[c.hidden_act],
            causal=bool(getattr(c, "is_causal", True)),
            tied=bool(c.tie_word_embeddings),
            **{**cls.fixed, **cls._read_switches(c)},  # the fixed fields, then the config's switches
        )

    @classmethod
    def _read_switches(cls, config: object) -> dict[str, object]:
        """The config's switches beyond the fixed fields: Llama's bias flags."""
        b = bool(config.attention_bias)
        return dict(q_bias=b, k_bias=b, v_bias=b, o_bias=b, mlp_bias=bool(config.mlp_bias))

    @classmethod
    def read_weights(cls, model: torch.nn.Module, arch: Arch) -> Weights:
        name = type(model).__name__
        D, V = arch.d_model, arch.d_vocab
        base = model.model
        tensors: dict[str, torch.Tensor] = {}
        for r in layer_rewrites(arch):
            per_layer = []
            for l, layer in enumerate(base.layers):
                p = check_shape(name, f"model.layers.{l}.{r.param}", _param(name, layer, r.param, f"model.layers.{l}"), r.hf_shape)
                per_layer.append(r.read(p.detach()))
            tensors[r.canonical] = torch.stack(per_layer)  # [L, ...], a fresh copy
        tensors["W_E"] = check_shape(name, "model.embed_tokens.weight", base.embed_tokens.weight, (V, D)).detach().clone()
        tensors["ln_final_w"] = check_shape(name, "model.norm.weight", base.norm.weight, (D,)).detach().clone()
        lm_head = check_shape(name, "lm_head.weight", model.lm_head.weight, (V, D))
        if arch.tied:
            if not torch.equal(lm_head, base.embed_tokens.weight):
                raise AdapterError(f"{name}: tie_word_embeddings=True but lm_head.weight differs from model.embed_tokens.weight")
        else:
            tensors["W_U"] = lm_head.detach().T.clone()  # [V, D] --T--> [D, V]
        if model.lm_head.bias is not None:
            raise AdapterError(f"{name}: lm_head has a bias, which {cls.family} never has")
        return Weights(arch, tensors)

    # ---------------------------------------------------------- build side
    @classmethod
    def _config_kwargs(cls, arch: Arch) -> dict[str, object]:
        """The config of ``arch`` (tiny, eager attention, no special tokens)."""
        return dict(
            vocab_size=arch.d_vocab,
            hidden_size=arch.d_model,
            intermediate_size=arch.d_mlp,
            num_hidden_layers=arch.n_layers,
            num_attention_heads=arch.n_heads,
            num_key_value_heads=arch.n_kv_heads,
            head_dim=arch.d_head,
            hidden_act=ACT_WRITE[arch.act],
            max_position_embeddings=arch.n_ctx,
            rms_norm_eps=arch.norm_eps,
            tie_word_embeddings=arch.tied,
            rope_parameters={"rope_type": "default", "rope_theta": arch.rotary_base},
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            attn_implementation="eager",
            is_causal=arch.causal,
            **cls._write_switches(arch),
        )

    @classmethod
    def _write_switches(cls, arch: Arch) -> dict[str, object]:
        return dict(attention_bias=arch.q_bias, mlp_bias=arch.mlp_bias)

    @classmethod
    def _build(cls, arch: Arch, weights: Weights) -> torch.nn.Module:
        model = cls.model_class(cls.config_class(**cls._config_kwargs(arch))).to(weights.dtype).eval()
        base = model.model
        with torch.no_grad():
            for r in layer_rewrites(arch):
                for l, layer in enumerate(base.layers):
                    target = _param(cls.__name__, layer, r.param, f"model.layers.{l}")
                    target.copy_(check_shape(cls.__name__, f"{r.canonical}[{l}] rewritten", r.write(weights[r.canonical][l]), r.hf_shape))
            base.embed_tokens.weight.copy_(weights.W_E)
            base.norm.weight.copy_(weights.ln_final_w)
            if not arch.tied:
                model.lm_head.weight.copy_(weights.W_U.T)  # [D, V] --T--> [V, D]
        if arch.tied and model.lm_head.weight is not base.embed_tokens.weight:
            raise AdapterError(f"{cls.__name__}: tie_word_embeddings=True did not tie lm_head.weight to embed_tokens.weight")
        return model

    # ---------------------------------------------------------- trace side
    def _trace(self, tokens: torch.Tensor, rec: Recorder) -> Trace:
        arch, model = self.arch, self.model
        name = type(model).__name__
        B, P = tokens.shape
        L, H, K, D, Dh, M, V = arch.n_layers, arch.n_heads, arch.n_kv_heads, arch.d_model, arch.d_head, arch.d_mlp, arch.d_vocab
        base = model.model
        rec.output(base.embed_tokens, "embed")
        for layer in base.layers:
            attn, mlp = layer.self_attn, layer.mlp
            rec.input(layer, "resid_pre")
            rec.output(layer, "resid_post", _first)
            rec.input(layer.input_layernorm, "norm.attn_in.input")
            rec.output(layer.input_layernorm, "norm.attn_in.output")
            rec.output(attn.v_proj, "v")
            rec.output(attn, "pattern", lambda out: out[1])  # eager attention returns its weights
            rec.input(attn.o_proj, "z")  # the heads' concatenated values entering o_proj
            rec.output(attn, "attn_out", _first)
            rec.input(layer.post_attention_layernorm, "resid_mid")  # residual + attention
            rec.output(layer.post_attention_layernorm, "norm.mlp_in.output")
            rec.output(mlp.up_proj, "mlp_pre")
            rec.input(mlp.down_proj, "mlp_post")
            rec.output(mlp, "mlp_out")
        rec.input(base.norm, "norm.final.input")
        rec.output(base.norm, "norm.final.output")
        logits = model(input_ids=tokens, use_cache=False).logits

        def stacked(key: str, shape: tuple[int, ...]) -> torch.Tensor:
            return check_shape(name, f"trace {key}", rec.stack(key), shape)

        z = stacked("z", (L, B, P, H * Dh)).view(L, B, P, H, Dh)
        W_O = torch.stack([layer.self_attn.o_proj.weight.T.reshape(H, Dh, D) for layer in base.layers])  # [L, H, Dh, D]
        resid_mid = stacked("resid_mid", (L, B, P, D))
        norms = {
            "attn_in": NormTrace(stacked("norm.attn_in.input", (L, B, P, D)), None, stacked("norm.attn_in.output", (L, B, P, D))),
            "mlp_in": NormTrace(resid_mid, None, stacked("norm.mlp_in.output", (L, B, P, D))),
            "final": NormTrace(
                check_shape(name, "trace norm.final.input", rec.last("norm.final.input"), (B, P, D)),
                None,
                check_shape(name, "trace norm.final.output", rec.last("norm.final.output"), (B, P, D)),
            ),
        }
        logits = check_shape(name, "logits", logits, (B, P, V))
        return Trace(
            arch=arch,
            tokens=tokens,
            embed=check_shape(name, "trace embed", rec.last("embed"), (B, P, D)),
            resid_pre=stacked("resid_pre", (L, B, P, D)),
            resid_mid=resid_mid,
            resid_post=stacked("resid_post", (L, B, P, D)),
            q=None,
            k=None,
            v=stacked("v", (L, B, P, K * Dh)).view(L, B, P, K, Dh),
            scores=None,
            pattern=stacked("pattern", (L, B, H, P, P)),
            z=z,
            head_out=torch.einsum("lbphe,lhed->lbphd", z, W_O),  # head_h = z_h W_O[l, h]
            attn_out=stacked("attn_out", (L, B, P, D)),
            mlp_pre=stacked("mlp_pre", (L, B, P, M)),
            mlp_post=stacked("mlp_post", (L, B, P, M)),
            mlp_out=stacked("mlp_out", (L, B, P, D)),
            logits_raw=logits,
            logits=logits,
            norms=norms,
        )


def _first(out: object) -> torch.Tensor:
    """A module's main output: the tensor itself, or the first element of a tuple."""
    return out[0] if isinstance(out, tuple) else out
