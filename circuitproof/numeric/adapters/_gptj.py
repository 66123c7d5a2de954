"""GPT-J (``GPTJForCausalLM``) in circuitproof's terms.

The block, with one LayerNorm ``ln_1`` shared by both sublayers::

    h = ln_1(x);  x = x + attn(h) + mlp(h)        Arch(parallel=True, parallel_shared_norm=True)
    logits = ln_f(x_L) W_U + b_U                  (lm_head has a bias: unembed_bias=True)

Weight conventions (``nn.Linear`` stores ``[out, in]``; circuitproof's rows are
inputs, so every matrix is transposed):

- ``q_proj``, ``k_proj``, ``v_proj``: weight ``[H * Dh, D]``, no bias; output
  viewed as ``[B, P, H, Dh]`` (heads outermost), so
  ``W_Q[l, h] = q_proj.weight.view(H, Dh, D)[h].T`` (``[D, Dh]``), likewise
  ``W_K`` and ``W_V``. No GQA (``n_kv_heads == n_heads``);
  ``d_head = n_embd // n_head`` (so ``d_model = n_heads * d_head``).
- ``out_proj``: weight ``[D, H * Dh]``, no bias; ``W_O[l, h] = weight.T.view(H, Dh, D)[h]``.
- MLP: ``W_in = fc_in.weight.T`` ``[D, M]``, ``W_out = fc_out.weight.T`` ``[M, D]``,
  with biases; ``d_mlp = n_inner`` (``None`` means ``4 * n_embd``);
  ``act`` from ``activation_function``.
- Norms: gains as stored (``g = w``), with biases: ``ln_1 -> ln_attn_in`` (the
  only per-layer slot), ``ln_f -> ln_final``.
- Unembedding: ``W_U = lm_head.weight.T``, ``b_U = lm_head.bias``;
  ``tie_word_embeddings`` gives ``tied`` (the bias stays separate).
- Rotary, pairing ``"interleaved"``: ``rotate_every_two`` pairs coordinate
  ``2k`` with ``2k + 1`` and the sin/cos table (``create_sinusoidal_positions``,
  each entry repeated twice) gives pair ``k`` the angle
  ``p * 10000 ** (-2k / r)`` on the first ``r = rotary_dim`` coordinates of each
  head. The base is fixed at 10000 (``rotary_base=10000.0``); ``r = d_head``
  reads as ``rotary_dim=None`` and is built as ``rotary_dim=d_head``.
  ``rotary_dim=None`` in a config (the strict config refuses it; only a config
  bypassing validation has it) makes the table span ``n_embd`` rather than a
  head: that fits only with one head (``n_embd == d_head``, read as full-head
  rotary); with more heads GPT-J's forward fails, so it is unsupported.

Trace: ``q``, ``k`` and ``scores`` are None (rotary and the scores happen inside
the attention forward); ``v`` comes from ``v_proj``, ``z`` from the input of
``out_proj``; ``resid_mid`` is None (parallel block); norm ``scale`` is None.
"""

from __future__ import annotations

import torch

from ...arch import Arch
from .._trace import NormTrace, Trace
from .._weights import Weights
from ._base import Adapter, Recorder, require
from ._hooked import reader, stack_layers, unembedding, writer, z_trace

__all__ = ["GPTJAdapter"]

# activation_function -> Arch.act (only exact forms of the four activations); Arch.act -> activation_function
_ACTS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}
_ACTIVATION_FUNCTION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
_BASE = 10000.0  # create_sinusoidal_positions hard-codes it


class GPTJAdapter(Adapter):
    family = "gptj"
    model_classes = ("GPTJForCausalLM",)
    below_dtype_steps = (
        "rotary sin/cos table in float32: inv_freq, angles, sin and cos computed in float32 "
        "(models/gptj/modeling_gptj.py, create_sinusoidal_positions), kept as the buffer "
        "GPTJRotaryEmbedding.embed_positions, whose float32-rounded values a cast to the model dtype keeps",
        "queries and keys cast to float32 before q k^T: the scores are float32 "
        "(models/gptj/modeling_gptj.py, eager_attention_forward: query.to(torch.float32), key.to(torch.float32)); "
        "adding the mask promotes them back to the mask's dtype (the model's, when wider) before the softmax",
    )
    pinned = dict(
        _group=1,
        _sliding=False,
        causal=True,
        q_bias=False,
        k_bias=False,
        v_bias=False,
        o_bias=False,
        attn_scale=None,
        attn_softcap=None,
        qk_norm="none",
        positional="rotary",
        rotary_style="interleaved",
        rotary_base=_BASE,
        norm="layernorm",
        embed_norm=False,
        final_norm=True,
        parallel=True,
        parallel_shared_norm=True,
        attn_only=False,
        gated=False,
        mlp_bias=True,
        unembed_bias=True,
        logit_softcap=None,
        embed_scale=1.0,
        unembed_transform=False,
    )

    @classmethod
    def project(cls, arch: Arch) -> Arch:
        """d_model = n_heads * d_head; a full-head rotary_dim written None."""
        full = arch.rotary_dim is not None and arch.rotary_dim == arch.d_head
        return arch.replace(d_model=arch.n_heads * arch.d_head, rotary_dim=None if full else arch.rotary_dim)

    # ------------------------------------------------------------------ read
    @classmethod
    def read_arch(cls, model: torch.nn.Module) -> Arch:
        c = model.config
        H, D = c.n_head, c.n_embd
        require(D % H == 0, f"n_embd={D}: must be a multiple of n_head={H}")
        Dh = D // H
        r = c.rotary_dim
        if r is None:
            require(H == 1, f"rotary_dim=None with n_head={H}: GPT-J's sin/cos table then spans n_embd={D}, not a head of {Dh}")
            r = Dh
        require(isinstance(r, int) and 2 <= r <= Dh and r % 2 == 0, f"rotary_dim={r!r}: must be an even integer in [2, head_dim={Dh}]")
        require(c.activation_function in _ACTS, f"activation_function={c.activation_function!r}: supported {sorted(_ACTS)}")
        return Arch(
            n_layers=c.n_layer,
            n_heads=H,
            d_model=D,
            d_head=Dh,
            d_mlp=c.n_inner if c.n_inner is not None else 4 * D,
            d_vocab=c.vocab_size,
            n_ctx=c.n_positions,
            positional="rotary",
            rotary_dim=None if r == Dh else r,
            rotary_base=_BASE,
            rotary_style="interleaved",
            norm="layernorm",
            norm_eps=float(c.layer_norm_epsilon),
            parallel=True,
            parallel_shared_norm=True,
            act=_ACTS[c.activation_function],
            tied=bool(c.tie_word_embeddings),
            unembed_bias=True,
        )

    @classmethod
    def read_weights(cls, model: torch.nn.Module, arch: Arch) -> Weights:
        H, D, Dh, M, V = arch.n_heads, arch.d_model, arch.d_head, arch.d_mlp, arch.d_vocab
        net, get, layers = model.transformer, reader(type(model).__name__), []
        for l, block in enumerate(net.h):
            p = f"transformer.h.{l}"
            t = {}
            for key, proj in (("W_Q", "q_proj"), ("W_K", "k_proj"), ("W_V", "v_proj")):
                weight = get(f"{p}.attn.{proj}.weight", getattr(block.attn, proj).weight, (H * Dh, D))
                t[key] = weight.view(H, Dh, D).transpose(-1, -2)  # [H, D, Dh]
            t["W_O"] = get(f"{p}.attn.out_proj.weight", block.attn.out_proj.weight, (D, H * Dh)).T.reshape(H, Dh, D)
            t["ln_attn_in_w"] = get(f"{p}.ln_1.weight", block.ln_1.weight, (D,))
            t["ln_attn_in_b"] = get(f"{p}.ln_1.bias", block.ln_1.bias, (D,))
            t["W_in"] = get(f"{p}.mlp.fc_in.weight", block.mlp.fc_in.weight, (M, D)).T
            t["b_in"] = get(f"{p}.mlp.fc_in.bias", block.mlp.fc_in.bias, (M,))
            t["W_out"] = get(f"{p}.mlp.fc_out.weight", block.mlp.fc_out.weight, (D, M)).T
            t["b_out"] = get(f"{p}.mlp.fc_out.bias", block.mlp.fc_out.bias, (D,))
            layers.append(t)
        tensors = stack_layers(layers)
        tensors["W_E"] = get("transformer.wte.weight", net.wte.weight, (V, D))
        tensors["ln_final_w"] = get("transformer.ln_f.weight", net.ln_f.weight, (D,))
        tensors["ln_final_b"] = get("transformer.ln_f.bias", net.ln_f.bias, (D,))
        tensors.update(unembedding(get, model, arch, net.wte.weight, "transformer.wte.weight"))
        tensors["b_U"] = get("lm_head.bias", model.lm_head.bias, (V,))
        return Weights(arch, tensors)

    # ---------------------------------------------------------- hook points
    def embed_point(self) -> tuple[torch.nn.Module, str]:
        return self.model.transformer.wte, "output"

    def out_proj(self, layer: int) -> torch.nn.Module:
        return self.model.transformer.h[layer].attn.out_proj

    def mlp_module(self, layer: int) -> torch.nn.Module:
        return self.model.transformer.h[layer].mlp

    def final_norm_module(self) -> torch.nn.Module:
        return self.model.transformer.ln_f

    # ----------------------------------------------------------------- trace
    def _trace(self, tokens: torch.Tensor, rec: Recorder) -> Trace:
        arch, net = self.arch, self.model.transformer
        H, Dh = arch.n_heads, arch.d_head
        rec.output(net.wte, "embed")
        for block in net.h:
            rec.input(block, "resid_pre")
            rec.output(block, "resid_post")
            rec.input(block.ln_1, "attn_in.input")
            rec.output(block.ln_1, "attn_in.output")
            rec.output(block.attn, "attn_out", lambda out: out[0])
            rec.output(block.attn, "pattern", lambda out: out[1])  # eager: the softmax weights [B, H, P, P]
            rec.output(block.attn.v_proj, "v", lambda out: out.unflatten(-1, (H, Dh)))
            rec.input(block.attn.out_proj, "z")  # [B, P, H * Dh], heads concatenated
            rec.output(block.mlp.fc_in, "mlp_pre")
            rec.input(block.mlp.fc_out, "mlp_post")
            rec.output(block.mlp, "mlp_out")
        rec.input(net.ln_f, "final.input")
        rec.output(net.ln_f, "final.output")
        logits = self.model(input_ids=tokens, use_cache=False).logits

        W_O = torch.stack([block.attn.out_proj.weight.T.reshape(H, Dh, arch.d_model) for block in net.h])  # [L, H, Dh, D]
        norms = {"attn_in": NormTrace(rec.stack("attn_in.input"), None, rec.stack("attn_in.output")),
                 "final": NormTrace(rec.last("final.input"), None, rec.last("final.output"))}
        return z_trace(arch, tokens, rec, logits, W_O, norms, resid_mid=None)  # parallel block: no mid-layer stream

    # ----------------------------------------------------------------- build
    @classmethod
    def cannot_express(cls, arch: Arch) -> str | None:
        bias = next((f"{c}_bias" for c, on in zip("qkvo", (arch.q_bias, arch.k_bias, arch.v_bias, arch.o_bias)) if on), None)
        checks = (
            (arch.n_kv_heads != arch.n_heads, f"n_kv_heads={arch.n_kv_heads} (grouped keys/values; GPT-J has n_kv_heads == n_heads)"),
            (arch.d_model != arch.n_heads * arch.d_head, f"d_model={arch.d_model} != n_heads * d_head = {arch.n_heads * arch.d_head}"),
            (not arch.causal, "causal=False"),
            (bias is not None, f"{bias}=True (GPT-J's q, k, v and out projections have no bias)"),
            (arch.attn_scale is not None, f"attn_scale={arch.attn_scale} (GPT-J scales by d_head ** -0.5)"),
            (arch.attn_softcap is not None, f"attn_softcap={arch.attn_softcap}"),
            (arch.sliding_window is not None, f"sliding_window={arch.sliding_window}"),
            (arch.qk_norm != "none", f"qk_norm={arch.qk_norm!r}"),
            (arch.positional != "rotary", f"positional={arch.positional!r} (GPT-J always rotates)"),
            (arch.rotary_style != "interleaved", f"rotary_style={arch.rotary_style!r}"),
            (arch.rotary_base != _BASE, f"rotary_base={arch.rotary_base} (GPT-J's base is fixed at 10000)"),
            (arch.norm != "layernorm", f"norm={arch.norm!r}"),
            (arch.embed_norm, "embed_norm=True"),
            (not arch.final_norm, "final_norm=False"),
            (not arch.parallel, "parallel=False"),
            (not arch.parallel_shared_norm, "parallel_shared_norm=False (GPT-J's parallel block shares ln_1)"),
            (arch.gated, "gated=True"),
            (not arch.mlp_bias, "mlp_bias=False"),
            (not arch.unembed_bias, "unembed_bias=False (GPT-J's lm_head has a bias)"),
            (arch.logit_softcap is not None, f"logit_softcap={arch.logit_softcap}"),
            (arch.embed_scale != 1.0, f"embed_scale={arch.embed_scale}"),
            (arch.unembed_transform, "unembed_transform=True"),
        )
        return next((why for bad, why in checks if bad), None)

    @classmethod
    def _build(cls, arch: Arch, weights: Weights) -> torch.nn.Module:
        from transformers import GPTJConfig, GPTJForCausalLM

        config = GPTJConfig(
            vocab_size=arch.d_vocab,
            n_positions=arch.n_ctx,
            n_embd=arch.d_model,
            n_layer=arch.n_layers,
            n_head=arch.n_heads,
            rotary_dim=arch.rotary_dims,
            n_inner=arch.d_mlp,
            activation_function=_ACTIVATION_FUNCTION[arch.act],
            layer_norm_epsilon=float(arch.norm_eps),
            tie_word_embeddings=arch.tied,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            attn_implementation="eager",
        )
        model = GPTJForCausalLM(config).to(weights.dtype)  # cast first: copying into float32 would round
        _load(model, arch, weights)
        return model


def _load(model: torch.nn.Module, arch: Arch, w: Weights) -> None:
    """Copy ``w`` into ``model``: the inverse of ``read_weights`` (every rewrite named)."""
    H, D, Dh = arch.n_heads, arch.d_model, arch.d_head
    net, put = model.transformer, writer()
    with torch.no_grad():
        put(net.wte.weight, w.W_E, "W_E")
        for l, block in enumerate(net.h):
            for key, proj in (("W_Q", "q_proj"), ("W_K", "k_proj"), ("W_V", "v_proj")):
                put(getattr(block.attn, proj).weight, w[key][l].transpose(-1, -2).reshape(H * Dh, D), key)  # [H, Dh, D] rows
            put(block.attn.out_proj.weight, w.W_O[l].reshape(H * Dh, D).T, "W_O")
            put(block.ln_1.weight, w.ln_attn_in_w[l], "ln_attn_in_w")
            put(block.ln_1.bias, w.ln_attn_in_b[l], "ln_attn_in_b")
            put(block.mlp.fc_in.weight, w.W_in[l].T, "W_in")
            put(block.mlp.fc_in.bias, w.b_in[l], "b_in")
            put(block.mlp.fc_out.weight, w.W_out[l].T, "W_out")
            put(block.mlp.fc_out.bias, w.b_out[l], "b_out")
        put(net.ln_f.weight, w.ln_final_w, "ln_final_w")
        put(net.ln_f.bias, w.ln_final_b, "ln_final_b")
        if not arch.tied:
            put(model.lm_head.weight, w.W_U.T, "W_U")
        put(model.lm_head.bias, w.b_U, "b_U")
