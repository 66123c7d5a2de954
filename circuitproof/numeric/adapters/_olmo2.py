"""OLMo 2 (``Olmo2ForCausalLM``): RMSNorms on the sublayer outputs and QK-norm over all heads.

The block, in the row convention of DESIGN.md (``n`` an RMSNorm with gain ``w``)::

    x_0 = W_E[t]
    q = n_q(x W_Q + b_Q), k = n_k(x W_K + b_K)            q_norm, k_norm over all heads' concatenated projections
    x = x + n_attn_out(attn(x))                           post_attention_layernorm(self_attn(x))
    x = x + n_mlp_out(mlp(x))                             post_feedforward_layernorm(mlp(x))
    logits = n_final(x_L) W_U

Weight conversions (``nn.Linear`` weights are ``[out, in]``; canonical weights ``[in, out]``):

- ``q_proj``/``k_proj``/``v_proj``/``o_proj`` and the gated MLP convert as in
  Llama-like decoders (:mod:`._decoder`, shared with :mod:`._gemma2`): ``W_Q[l] = q_proj.weight.view(H, Dh, D).transpose(1, 2)``
  (rows head-major), ``W_O[l] = o_proj.weight.T.reshape(H, Dh, D)``,
  ``W_gate = gate_proj.weight.T``, ``W_in = up_proj.weight.T``, ``W_out = down_proj.weight.T``;
  query head ``h`` reads key/value head ``h // (H // K)`` (``repeat_kv``).
- ``attention_bias`` switches all four attention biases (q, k, v and o) together;
  ``b_Q[l] = q_proj.bias.view(H, Dh)``, ``b_O = o_proj.bias``. The MLP has no biases.
- QK-norm: ``q_norm`` normalises the whole ``[H*Dh]`` query projection (bias
  included) before it is split into heads, ``k_norm`` the ``[K*Dh]`` key
  projection: ``qk_norm="all_heads"``, ``ln_q_w[l] = q_norm.weight`` ``[H*Dh]``
  (head-major, like the rows of ``q_proj``), ``ln_k_w[l] = k_norm.weight`` ``[K*Dh]``.
  Values are not normalised.
- Norms: gain ``w`` as stored (``Olmo2RMSNorm`` multiplies by ``weight``). Slots:
  ``attn_out`` = ``post_attention_layernorm``, ``mlp_out`` = ``post_feedforward_layernorm``,
  ``final`` = ``model.norm`` (``norm_placement="output"``: no norm on the sublayer inputs).
- Causal: the mask is causal unless the config carries ``is_causal=False`` (not a
  declared Olmo2Config field, but ``masking_utils.create_causal_mask`` reads it and
  builds a bidirectional mask for eager and sdpa alike; as in :mod:`._llama`): ``Arch.causal``.
- Rotary: ``rotate_half`` over the whole head (``rotary_style="half"``), after the QK-norm.
- ``head_dim``: read as the modeling code does, ``config.head_dim`` if the config
  has one, else ``hidden_size // num_attention_heads``; ``build`` always writes it.
- Unembedding: ``W_U = lm_head.weight.T`` ``[D, V]``; tied when ``tie_word_embeddings``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

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

__all__ = ["Olmo2Adapter"]

_SLOTS = {"attn_out": "post_attention_layernorm", "mlp_out": "post_feedforward_layernorm"}


class Olmo2Adapter(LlamaLayout, Adapter):
    """Reads, traces and builds ``Olmo2ForCausalLM`` (conventions in the module docstring)."""

    family: ClassVar[str] = "olmo2"
    model_classes: ClassVar[tuple[str, ...]] = ("Olmo2ForCausalLM",)
    below_dtype_steps: ClassVar[tuple[str, ...]] = (
        "RMSNorm statistics and normalisation in float32 (gain applied after): "
        "Olmo2RMSNorm.forward (hidden_states.to(torch.float32)); this covers post_attention_layernorm, "
        "post_feedforward_layernorm, the final norm and q_norm/k_norm",
        "rotary tables in float32: inv_freq from torch.arange(..., dtype=torch.float) "
        "in Olmo2RotaryEmbedding.compute_default_rope_parameters; angles, cos and sin in float32 "
        "in Olmo2RotaryEmbedding.forward (returned uncast, promoted in apply_rotary_pos_emb)",
        "softmax in float32: eager_attention_forward (nn.functional.softmax(..., dtype=torch.float32))",
    )
    pinned: ClassVar[dict[str, object]] = dict(
        attn_scale=None,
        attn_softcap=None,
        qk_norm="all_heads",
        _sliding=False,
        positional="rotary",
        rotary_dim=None,
        rotary_style="half",
        norm="rmsnorm",
        norm_gain="w",
        norm_placement="output",
        final_norm=True,
        embed_norm=False,
        parallel=False,
        attn_only=False,
        gated=True,
        mlp_bias=False,
        unembed_bias=False,
        unembed_transform=False,
        logit_softcap=None,
        embed_scale=1.0,
    )

    @classmethod
    def project(cls, arch: Arch) -> Arch:
        """One ``attention_bias`` for q, k, v and o (q_bias's value)."""
        b = arch.q_bias
        return arch.replace(q_bias=b, k_bias=b, v_bias=b, o_bias=b)

    @classmethod
    def cannot_express(cls, arch: Arch) -> str | None:
        fixed = {k: v for k, v in cls.pinned.items() if k not in ("_sliding", "rotary_dim", "attn_scale")}
        for field, value in fixed.items():
            if getattr(arch, field) != value:
                return f"{field}={getattr(arch, field)!r} (OLMo 2 has {field}={value!r})"
        if arch.sliding_window is not None:
            return f"sliding_window={arch.sliding_window!r} (OLMo 2 has no sliding window)"
        if arch.rotary_dims != arch.d_head:
            return f"rotary_dim={arch.rotary_dim!r} (OLMo 2 rotates the whole head, d_head={arch.d_head})"
        if arch.scale != arch.d_head**-0.5:
            return f"attn_scale={arch.attn_scale!r} (OLMo 2 scales by head_dim ** -0.5)"
        if len({arch.q_bias, arch.k_bias, arch.v_bias, arch.o_bias}) > 1:
            biases = f"q_bias={arch.q_bias}, k_bias={arch.k_bias}, v_bias={arch.v_bias}, o_bias={arch.o_bias}"
            return f"{biases} (one attention_bias switches all four)"
        return None

    # ------------------------------------------------------------------ read
    @classmethod
    def read_arch(cls, model: torch.nn.Module) -> Arch:
        c, name = model.config, type(model).__name__
        require(name in cls.model_classes, f"{name}: the olmo2 adapter reads {cls.model_classes}")
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads  # as Olmo2Attention reads it
        return Arch(
            n_layers=c.num_hidden_layers,
            n_heads=c.num_attention_heads,
            n_kv_heads=c.num_key_value_heads,
            d_model=c.hidden_size,
            d_head=head_dim,
            d_mlp=c.intermediate_size,
            d_vocab=c.vocab_size,
            n_ctx=c.max_position_embeddings,
            causal=bool(getattr(c, "is_causal", True)),  # what the masks read (docstring)
            q_bias=c.attention_bias,
            k_bias=c.attention_bias,
            v_bias=c.attention_bias,
            o_bias=c.attention_bias,
            qk_norm="all_heads",
            positional="rotary",
            rotary_base=rope_theta(name, c),
            norm="rmsnorm",
            norm_eps=c.rms_norm_eps,
            norm_placement="output",
            final_norm=True,
            gated=True,
            act=read_act(name, "hidden_act", c.hidden_act),
            mlp_bias=False,
            tied=bool(c.tie_word_embeddings),
        )

    @classmethod
    def read_weights(cls, model: torch.nn.Module, arch: Arch) -> Weights:
        name, D = type(model).__name__, arch.d_model
        widths = {"q": arch.n_heads * arch.d_head, "k": arch.n_kv_heads * arch.d_head}
        tensors = {**read_unembed(name, model, arch), **read_layers(name, model, arch)}
        for slot, module in _SLOTS.items():
            tensors[f"ln_{slot}_w"] = stack_layers(name, model, f"{module}.weight", (D,))  # [L, D]
        for part, width in widths.items():  # [L, H*Dh] and [L, K*Dh], head-major like the q_proj/k_proj rows
            tensors[f"ln_{part}_w"] = stack_layers(name, model, f"self_attn.{part}_norm.weight", (width,))
        tensors["ln_final_w"] = check_shape(name, "model.norm.weight", model.model.norm.weight, (D,)).detach().clone()
        return Weights(arch, tensors)

    # ----------------------------------------------------------------- trace
    def _trace(self, tokens: torch.Tensor, rec: Recorder) -> Trace:
        model = self.model
        hook_layers(rec, model)
        for layer in model.model.layers:
            rec.input(layer.mlp, "resid_mid")  # no norm before the MLP: it reads the stream itself
            for slot, module in _SLOTS.items():
                hook_norm(rec, getattr(layer, module), slot)
            hook_norm(rec, layer.self_attn.q_norm, "q")  # [B, P, H*Dh]
            hook_norm(rec, layer.self_attn.k_norm, "k")  # [B, P, K*Dh]
        hook_norm(rec, model.model.norm, "final")
        logits = model(input_ids=tokens, use_cache=False).logits
        norms = {slot: norm_trace(rec, slot) for slot in (*_SLOTS, "q", "k")}
        norms["final"] = NormTrace(rec.last("final.in"), None, rec.last("final.out"))
        return assemble(self.arch, self.weights, tokens, rec, logits, norms)

    # ----------------------------------------------------------------- build
    @classmethod
    def _build(cls, arch: Arch, weights: Weights) -> torch.nn.Module:
        from transformers import Olmo2Config, Olmo2ForCausalLM

        config = Olmo2Config(
            vocab_size=arch.d_vocab,
            hidden_size=arch.d_model,
            intermediate_size=arch.d_mlp,
            num_hidden_layers=arch.n_layers,
            num_attention_heads=arch.n_heads,
            num_key_value_heads=arch.n_kv_heads,
            head_dim=arch.d_head,  # read by Olmo2Attention and Olmo2RotaryEmbedding
            hidden_act=ACT_NAMES[arch.act],
            max_position_embeddings=arch.n_ctx,
            rms_norm_eps=arch.norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": arch.rotary_base},
            attention_bias=arch.q_bias,
            tie_word_embeddings=arch.tied,
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            attn_implementation="eager",
            is_causal=arch.causal,
        )
        model = Olmo2ForCausalLM(config).to(weights.dtype)
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(weights.W_E)
            if not arch.tied:
                model.lm_head.weight.copy_(weights.W_U.T)
            write_layers(model, arch, weights)
            for l, layer in enumerate(model.model.layers):
                for slot, module in _SLOTS.items():
                    layer.get_parameter(f"{module}.weight").copy_(weights[f"ln_{slot}_w"][l])
                layer.self_attn.q_norm.weight.copy_(weights.ln_q_w[l])
                layer.self_attn.k_norm.weight.copy_(weights.ln_k_w[l])
            model.model.norm.weight.copy_(weights.ln_final_w)
        return model
