"""Gemma 2 (``Gemma2ForCausalLM``): sandwich RMSNorms with ``1 + w`` gains, softcaps, sliding layers.

The block, in the row convention of DESIGN.md (``n`` an RMSNorm with gain ``1 + w``)::

    x_0 = m W_E[t]                                        m: the embed_tokens.embed_scale buffer
    x = x + n_attn_out(attn(n_attn_in(x)))                 post_attention_layernorm(self_attn(input_layernorm(x)))
    x = x + n_mlp_out(mlp(n_mlp_in(x)))                    post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
    logits = c tanh((n_final(x_L) W_U) / c)               c = final_logit_softcapping

Weight conversions (transformers stores ``nn.Linear`` weights as ``[out, in]``;
canonical weights are ``[in, out]`` rows, DESIGN.md):

- ``q_proj.weight`` ``[H*Dh, D]``: rows are head-major (row ``h*Dh + e`` is
  coordinate ``e`` of head ``h``), so ``W_Q[l] = weight.view(H, Dh, D).transpose(1, 2)``
  ``[H, D, Dh]``; ``k_proj``/``v_proj`` likewise with ``K`` key/value heads.
  Biases ``[H*Dh]`` become ``b_Q[l] = bias.view(H, Dh)``.
- ``o_proj.weight`` ``[D, H*Dh]``: ``W_O[l] = weight.T.reshape(H, Dh, D)``; ``b_O = o_proj.bias``.
- GQA: ``repeat_kv`` serves query head ``h`` from key/value head ``h // (H // K)``,
  the canonical mapping; no weight is repeated.
- Gated MLP: ``down(act(gate(x)) * up(x))``: ``W_gate = gate_proj.weight.T``,
  ``W_in = up_proj.weight.T``, ``W_out = down_proj.weight.T``; no MLP biases.
  ``hidden_activation``: ``gelu_pytorch_tanh`` (Gemma 2's) is ``act="gelu_tanh"``.
- Norm gains: ``Gemma2RMSNorm`` multiplies by ``1 + weight``; the stored
  ``weight`` is the canonical ``ln_<slot>_w`` as is (``norm_gain="one_plus_w"``
  stores ``w``). Slots: ``attn_in`` = ``input_layernorm``, ``attn_out`` =
  ``post_attention_layernorm``, ``mlp_in`` = ``pre_feedforward_layernorm``,
  ``mlp_out`` = ``post_feedforward_layernorm``, ``final`` = ``model.norm``.
- Rotary: ``rotate_half`` pairs coordinate ``k`` with ``k + Dh/2`` over the whole
  head (``rotary_style="half"``, ``rotary_dim=None``), base ``rope_parameters["rope_theta"]``.
- Attention scale: ``query_pre_attn_scalar ** -0.5`` (an integer in the config);
  read as ``attn_scale=None`` when ``query_pre_attn_scalar == head_dim``.
- Softcaps: ``attn_logit_softcapping`` on the scores before the mask
  (``attn_softcap``), ``final_logit_softcapping`` on the logits (``logit_softcap``).
- Causal: the masks are causal unless the config carries ``is_causal=False``
  (not a declared Gemma2Config field, but ``masking_utils.create_causal_mask``
  reads it; as in :mod:`._llama`), ``Arch.causal``; ``build`` also sets
  ``use_bidirectional_attention``, which only the attention kernels read.
- Sliding window: layers whose ``layer_types`` entry is ``"sliding_attention"``
  see key ``j`` from query ``i`` iff ``i - window < j <= i`` (``masking_utils.sliding_window_overlay``),
  the reference's ``i - j < sliding_window``. Bidirectional, transformers' window is
  inclusive, ``|i - j| <= window`` (``sliding_window_bidirectional_overlay``): there
  ``config.sliding_window = Arch.sliding_window - 1``. With no sliding layer the
  config still needs a window (``Gemma2Model`` always makes the sliding mask): ``n_ctx``.
- Embedding multiplier: ``Gemma2TextScaledWordEmbedding`` multiplies by its
  ``embed_scale`` buffer, made from ``hidden_size ** 0.5`` by ``torch.tensor``
  (float32 under the default dtype) and cast with the model, so the value used
  is ``sqrt(d_model)`` rounded to float32 (or to bfloat16/float16 for a model
  cast down, float64 if built under a float64 default dtype). ``embed_scale``
  is read from that buffer, exactly; ``build`` writes it back.
- Unembedding: ``lm_head.weight`` ``[V, D]``: ``W_U = weight.T``; tied (the
  default) when it is ``embed_tokens.weight``.

Trace: hooks on the model's own modules; ``q``, ``k`` and ``scores`` are None
(rotary and the scores live inside the attention function, not in a module), norm
scales are None; ``v`` is the ``v_proj`` output, ``z`` the ``o_proj`` input,
``mlp_pre`` the ``up_proj`` output, ``mlp_post`` the ``down_proj`` input,
``logits_raw`` the ``lm_head`` output. The Llama-like conversions live in :mod:`._decoder`, shared with :mod:`._olmo2`.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ... import UnsupportedError
from ...arch import Arch
from .._trace import NormTrace, Trace
from .._weights import Weights
from ._base import Adapter, Recorder, check_shape, require
from ._decoder import (
    ACT_NAMES,
    LlamaLayout,
    assemble,
    hook_layers,
    hook_norm,
    norm_trace,
    read_act,
    read_layers,
    read_unembed,
    rope_theta,
    stack_layers,
    write_layers,
)

__all__ = ["Gemma2Adapter"]

_SLOTS = {  # norm slot -> module of each decoder layer
    "attn_in": "input_layernorm",
    "attn_out": "post_attention_layernorm",
    "mlp_in": "pre_feedforward_layernorm",
    "mlp_out": "post_feedforward_layernorm",
}


def embed_scales(d_model: int) -> tuple[float, ...]:
    """The multipliers a Gemma 2 embedding can hold: ``sqrt(d_model)`` rounded to float32 (first), float64, bfloat16, float16."""
    in_float32 = torch.tensor(d_model**0.5, dtype=torch.float32)  # the buffer as made under the default dtype
    scales = [float(in_float32), d_model**0.5, float(in_float32.to(torch.bfloat16)), float(in_float32.to(torch.float16))]
    return tuple(dict.fromkeys(scales))


# ------------------------------------------------------------------------------------ the adapter
class Gemma2Adapter(LlamaLayout, Adapter):
    """Reads, traces and builds ``Gemma2ForCausalLM`` (conventions in the module docstring)."""

    family: ClassVar[str] = "gemma2"
    model_classes: ClassVar[tuple[str, ...]] = ("Gemma2ForCausalLM",)
    below_dtype_steps: ClassVar[tuple[str, ...]] = (
        "RMSNorm in float32, gain (1 + w) in float32: "
        "Gemma2RMSNorm.forward (self._norm(x.float()) * (1.0 + self.weight.float()))",
        "rotary tables in float32: inv_freq from torch.arange(..., dtype=torch.float) "
        "in Gemma2RotaryEmbedding.compute_default_rope_parameters; "
        "angles, cos and sin in float32 in Gemma2RotaryEmbedding.forward (position_ids.float() * inv_freq.float())",
        "softmax in float32: eager_attention_forward (nn.functional.softmax(..., dtype=torch.float32))",
    )
    pinned: ClassVar[dict[str, object]] = dict(
        positional="rotary",
        rotary_dim=None,
        rotary_style="half",
        norm="rmsnorm",
        norm_gain="one_plus_w",
        norm_placement="sandwich",
        final_norm=True,
        embed_norm=False,
        qk_norm="none",
        parallel=False,
        attn_only=False,
        gated=True,
        mlp_bias=False,
        unembed_bias=False,
        unembed_transform=False,
    )

    @classmethod
    def project(cls, arch: Arch) -> Arch:
        """One ``attention_bias`` for q, k, v, o (q_bias's value); d_model a multiple of n_heads
        (rounded up); the embedding multiplier sqrt(d_model) in float32; attn_scale None when d_head ** -0.5."""
        d_model = -(-arch.d_model // arch.n_heads) * arch.n_heads
        scale = None if arch.attn_scale == arch.d_head**-0.5 else arch.attn_scale
        b = arch.q_bias
        biases = dict(q_bias=b, k_bias=b, v_bias=b, o_bias=b)
        return arch.replace(d_model=d_model, embed_scale=embed_scales(d_model)[0], attn_scale=scale, **biases)

    @classmethod
    def cannot_express(cls, arch: Arch) -> str | None:
        fixed = {k: v for k, v in cls.pinned.items() if k != "rotary_dim"}
        for field, value in fixed.items():
            if getattr(arch, field) != value:
                return f"{field}={getattr(arch, field)!r} (Gemma 2 has {field}={value!r})"
        if arch.rotary_dims != arch.d_head:
            return f"rotary_dim={arch.rotary_dim!r} (Gemma 2 rotates the whole head, d_head={arch.d_head})"
        if len({arch.q_bias, arch.k_bias, arch.v_bias, arch.o_bias}) > 1:
            biases = f"q_bias={arch.q_bias}, k_bias={arch.k_bias}, v_bias={arch.v_bias}, o_bias={arch.o_bias}"
            return f"{biases} (one attention_bias switches all four)"
        if not arch.causal and arch.sliding_window == 1:
            return "sliding_window=1 with causal=False (config.sliding_window would be 0, on which Gemma 2's mask fails)"
        if arch.d_model % arch.n_heads:
            return f"d_model={arch.d_model} with n_heads={arch.n_heads} (Gemma2Config: hidden_size divisible by num_attention_heads)"
        if arch.embed_scale not in embed_scales(arch.d_model):
            held = embed_scales(arch.d_model)
            return f"embed_scale={arch.embed_scale!r} (Gemma 2 multiplies by sqrt(d_model) in the model's dtype: one of {held})"
        if arch.attn_scale is not None:
            qpas = round(arch.attn_scale**-2)
            if qpas < 1 or qpas**-0.5 != arch.attn_scale:
                return f"attn_scale={arch.attn_scale!r} (Gemma 2 scales by query_pre_attn_scalar ** -0.5, an integer scalar)"
        return None

    # ------------------------------------------------------------------ read
    @classmethod
    def read_arch(cls, model: torch.nn.Module) -> Arch:
        c, name = model.config, type(model).__name__
        require(name in cls.model_classes, f"{name}: the gemma2 adapter reads {cls.model_classes}")
        causal = bool(getattr(c, "is_causal", True))  # what the masks read (masking_utils.create_causal_mask)
        one_way = causal and getattr(c, "use_bidirectional_attention", False)
        require(not one_way, f"{name}: use_bidirectional_attention=True with causal masks (is_causal unset) is not expressible")
        layer_types = list(c.layer_types)[: c.num_hidden_layers]
        unknown = set(layer_types) - {"full_attention", "sliding_attention"}
        require(not unknown, f"{name}: layer_types {sorted(unknown)} are not expressible (full_attention, sliding_attention are)")
        sliding = tuple(l for l, t in enumerate(layer_types) if t == "sliding_attention")
        require(not sliding or c.sliding_window is not None, f"{name}: sliding_window=None with sliding layers {sliding}")
        window = c.sliding_window + (not causal) if sliding else None  # bidirectional windows are inclusive (docstring)
        scalar = c.query_pre_attn_scalar
        embed = model.model.embed_tokens
        return Arch(
            n_layers=c.num_hidden_layers,
            n_heads=c.num_attention_heads,
            n_kv_heads=c.num_key_value_heads,
            d_model=c.hidden_size,
            d_head=c.head_dim,
            d_mlp=c.intermediate_size,
            d_vocab=c.vocab_size,
            n_ctx=c.max_position_embeddings,
            q_bias=c.attention_bias,
            k_bias=c.attention_bias,
            v_bias=c.attention_bias,
            o_bias=c.attention_bias,
            attn_scale=None if scalar == c.head_dim else scalar**-0.5,
            attn_softcap=c.attn_logit_softcapping,
            causal=causal,
            sliding_window=window,
            sliding_layers=sliding,
            positional="rotary",
            rotary_base=rope_theta(name, c),
            norm="rmsnorm",
            norm_eps=c.rms_norm_eps,
            norm_gain="one_plus_w",
            norm_placement="sandwich",
            final_norm=True,
            gated=True,
            act=read_act(name, "hidden_activation", c.hidden_activation),
            mlp_bias=False,
            tied=bool(c.tie_word_embeddings),
            logit_softcap=c.final_logit_softcapping,
            embed_scale=float(embed.embed_scale.to(embed.weight.dtype)),  # the multiplier the forward uses
        )

    @classmethod
    def read_weights(cls, model: torch.nn.Module, arch: Arch) -> Weights:
        name, D = type(model).__name__, arch.d_model
        tensors = {**read_unembed(name, model, arch), **read_layers(name, model, arch)}
        for slot, module in _SLOTS.items():
            tensors[f"ln_{slot}_w"] = stack_layers(name, model, f"{module}.weight", (D,))  # [L, D]: the w of the gain 1 + w
        tensors["ln_final_w"] = check_shape(name, "model.norm.weight", model.model.norm.weight, (D,)).detach().clone()
        return Weights(arch, tensors)

    # ----------------------------------------------------------------- trace
    def _trace(self, tokens: torch.Tensor, rec: Recorder) -> Trace:
        model = self.model
        hook_layers(rec, model)
        for layer in model.model.layers:
            rec.input(layer.pre_feedforward_layernorm, "resid_mid")
            for slot, module in _SLOTS.items():
                hook_norm(rec, getattr(layer, module), slot)
        hook_norm(rec, model.model.norm, "final")
        logits = model(input_ids=tokens, use_cache=False).logits
        norms = {slot: norm_trace(rec, slot) for slot in _SLOTS}
        norms["final"] = NormTrace(rec.last("final.in"), None, rec.last("final.out"))
        return assemble(self.arch, self.weights, tokens, rec, logits, norms)

    # ----------------------------------------------------------------- build
    @classmethod
    def _build(cls, arch: Arch, weights: Weights) -> torch.nn.Module:
        from transformers import Gemma2Config, Gemma2ForCausalLM

        window = arch.n_ctx if arch.sliding_window is None else arch.sliding_window - (not arch.causal)  # docstring
        config = Gemma2Config(
            vocab_size=arch.d_vocab,
            hidden_size=arch.d_model,
            intermediate_size=arch.d_mlp,
            num_hidden_layers=arch.n_layers,
            num_attention_heads=arch.n_heads,
            num_key_value_heads=arch.n_kv_heads,
            head_dim=arch.d_head,
            hidden_activation=ACT_NAMES[arch.act],
            max_position_embeddings=arch.n_ctx,
            rms_norm_eps=arch.norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": arch.rotary_base},
            attention_bias=arch.q_bias,
            query_pre_attn_scalar=arch.d_head if arch.attn_scale is None else round(arch.attn_scale**-2),
            sliding_window=window,
            is_causal=arch.causal,  # read by the masks
            use_bidirectional_attention=None if arch.causal else True,  # read by the attention kernels
            layer_types=["sliding_attention" if arch.is_sliding(l) else "full_attention" for l in range(arch.n_layers)],
            attn_logit_softcapping=arch.attn_softcap,
            final_logit_softcapping=arch.logit_softcap,
            tie_word_embeddings=arch.tied,
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            attn_implementation="eager",
        )
        held = float(torch.tensor(arch.embed_scale, dtype=weights.dtype))
        if held != arch.embed_scale:
            why = f"a Gemma 2 in {weights.dtype} multiplies by {held!r}"
            raise UnsupportedError(f"build: embed_scale={arch.embed_scale!r} is not representable in {weights.dtype}; {why}")
        model = Gemma2ForCausalLM(config).to(weights.dtype)
        with torch.no_grad():
            embed = model.model.embed_tokens
            embed.weight.copy_(weights.W_E)
            embed.embed_scale.fill_(arch.embed_scale)  # the buffer the forward multiplies by (docstring)
            embed.scalar_embed_scale = arch.embed_scale
            if not arch.tied:
                model.lm_head.weight.copy_(weights.W_U.T)
            write_layers(model, arch, weights)
            for l, layer in enumerate(model.model.layers):
                for slot, module in _SLOTS.items():
                    layer.get_parameter(f"{module}.weight").copy_(weights[f"ln_{slot}_w"][l])
            model.model.norm.weight.copy_(weights.ln_final_w)
        return model

