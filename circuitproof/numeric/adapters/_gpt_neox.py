"""GPT-NeoX (``GPTNeoXForCausalLM``, Pythia) in circuitproof's terms.

The block, with ``n1 = input_layernorm`` and ``n2 = post_attention_layernorm``
(LayerNorms with biases)::

    use_parallel_residual=True   x = x + attn(n1(x)) + mlp(n2(x))     Arch(parallel=True)
    use_parallel_residual=False  x = x + attn(n1(x)); x = x + mlp(n2(x))   (pre-norm)
    logits = final_layer_norm(x_L) W_U                                  (lm_head, no bias)

Weight conventions (``nn.Linear`` stores ``[out, in]``; circuitproof's rows are
inputs, so every matrix is transposed):

- **Fused** ``query_key_value``: weight ``[3 * H * Dh, D]``, bias ``[3 * H * Dh]``.
  The forward views its output as ``[B, P, H, 3 * Dh]`` and chunks the last axis
  into q, k, v, so output row ``o = h * 3 * Dh + j * Dh + e`` is head ``h``,
  part ``j`` (0 = q, 1 = k, 2 = v), coordinate ``e``: heads outermost, each
  head's ``[q_h; k_h; v_h]`` together (not all queries, then all keys, then all
  values, as in GPT-2's ``c_attn``). Hence
  ``W_Q[l, h] = weight.view(H, 3, Dh, D)[h, 0].T`` (``[D, Dh]``), ``W_K`` with
  ``1``, ``W_V`` with ``2``; ``b_Q[l, h] = bias.view(H, 3, Dh)[h, 0]``, etc.
- ``dense`` (output projection): weight ``[D, H * Dh]``; its input is ``z`` with
  heads concatenated head-major, so ``W_O[l, h] = weight.T.view(H, Dh, D)[h]``;
  ``b_O = dense.bias``.
- No GQA: one key/value head per query head (``n_kv_heads == n_heads``);
  ``d_head = hidden_size // num_attention_heads`` (so ``d_model = n_heads * d_head``).
- ``attention_bias``: one switch for the qkv bias and the dense bias
  (``q_bias = k_bias = v_bias = o_bias``).
- MLP: ``W_in = dense_h_to_4h.weight.T`` ``[D, M]``, ``W_out = dense_4h_to_h.weight.T``
  ``[M, D]``, both with biases (``mlp_bias=True``), ``act`` from ``hidden_act``.
- Norms: gains are the LayerNorm weights as stored (``g = w``);
  ``input_layernorm -> ln_attn_in``, ``post_attention_layernorm -> ln_mlp_in``
  (in the sequential mode it reads ``resid_mid``), ``final_layer_norm -> ln_final``.
- Unembedding: ``W_U = lm_head.weight.T`` (``embed_out`` in old checkpoints),
  no bias; ``tie_word_embeddings`` gives ``tied``.
- Rotary, pairing ``"half"`` (``rotate_half``: coordinate ``k`` with ``k + r/2``)
  on the first ``r = int(d_head * partial_rotary_factor)`` coordinates of each
  head (legacy ``rotary_pct``), angle ``p * rope_theta ** (-2k / r)`` (legacy
  ``rotary_emb_base``). ``r = d_head`` reads as ``rotary_dim=None``; ``r = 0``
  (factor 0) rotates nothing and reads as ``positional="none"``. Building from
  ``rotary_dim=r`` writes the factor ``r / d_head`` (nudged up by ulps until
  ``int(d_head * factor) == r``).

Trace: ``q``, ``k`` and ``scores`` are None (rotary and the scores happen inside
the attention forward, with no module to hook); ``v`` comes from the qkv output,
``z`` from the input of ``dense``, norm ``scale`` is None.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from ...arch import Arch
from .._trace import NormTrace, Trace
from .._weights import Weights
from ._base import Adapter, Recorder, require
from ._hooked import reader, stack_layers, unembedding, writer, z_trace

__all__ = ["GPTNeoXAdapter"]

# hidden_act -> Arch.act (only exact forms of the four activations); Arch.act -> hidden_act for build
_ACTS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}
_HIDDEN_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def _rotary_factor(r: int, d_head: int) -> float:
    """The smallest float ``f >= r / d_head`` with ``int(d_head * f) == r`` (how GPT-NeoX reads it back)."""
    f = r / d_head
    while int(d_head * f) < r:
        f = math.nextafter(f, math.inf)
    return f


class GPTNeoXAdapter(Adapter):
    family = "gpt_neox"
    model_classes = ("GPTNeoXForCausalLM",)
    below_dtype_steps = (
        "rotary table in float32: inv_freq from torch.arange(..., dtype=torch.float) "
        "(models/gpt_neox/modeling_gpt_neox.py, GPTNeoXRotaryEmbedding.compute_default_rope_parameters), "
        "angles, cos and sin in float32 before the cast to the model dtype (GPTNeoXRotaryEmbedding.forward)",
        "softmax in float32: nn.functional.softmax(..., dtype=torch.float32) "
        "(models/gpt_neox/modeling_gpt_neox.py, eager_attention_forward)",
    )
    pinned = dict(
        _group=1,
        _sliding=False,
        causal=True,
        attn_scale=None,
        attn_softcap=None,
        qk_norm="none",
        positional=st.sampled_from(["rotary", "none"]),
        rotary_style="half",
        norm="layernorm",
        norm_placement="pre",
        embed_norm=False,
        final_norm=True,
        parallel_shared_norm=False,
        attn_only=False,
        gated=False,
        mlp_bias=True,
        unembed_bias=False,
        logit_softcap=None,
        embed_scale=1.0,
        unembed_transform=False,
    )

    @classmethod
    def project(cls, arch: Arch) -> Arch:
        """d_model = n_heads * d_head; one attention_bias for q, k, v, o; a full-head rotary_dim written None."""
        full = arch.rotary_dim is not None and arch.rotary_dim == arch.d_head
        return arch.replace(
            d_model=arch.n_heads * arch.d_head,
            k_bias=arch.q_bias,
            v_bias=arch.q_bias,
            o_bias=arch.q_bias,
            rotary_dim=None if full else arch.rotary_dim,
        )

    # ------------------------------------------------------------------ read
    @classmethod
    def read_arch(cls, model: torch.nn.Module) -> Arch:
        c = model.config
        H, D = c.num_attention_heads, c.hidden_size
        require(D % H == 0, f"hidden_size={D}: must be a multiple of num_attention_heads={H}")
        Dh = D // H
        require(getattr(c, "head_dim", None) in (None, Dh), f"head_dim={getattr(c, 'head_dim', None)}: GPT-NeoX heads are hidden_size // num_attention_heads = {Dh}")
        rope = c.rope_parameters or {}
        require(rope.get("rope_type", "default") == "default", f"rope_parameters.rope_type={rope.get('rope_type')!r}: only the 'default' rotary (no scaling)")
        factor = rope.get("partial_rotary_factor", 1.0)
        r = int(Dh * factor)
        require(0 <= r <= Dh and r % 2 == 0, f"rope_parameters.partial_rotary_factor={factor}: int(head_dim * factor) = {r} must be even and in [0, head_dim={Dh}]")
        require(c.hidden_act in _ACTS, f"hidden_act={c.hidden_act!r}: supported {sorted(_ACTS)}")
        require(r == 0 or "rope_theta" in rope, "rope_parameters.rope_theta: missing")
        if r == 0:
            positional = dict(positional="none")
        else:
            positional = dict(positional="rotary", rotary_dim=None if r == Dh else r, rotary_base=float(rope["rope_theta"]), rotary_style="half")
        bias = bool(c.attention_bias)
        return Arch(
            n_layers=c.num_hidden_layers,
            n_heads=H,
            d_model=D,
            d_head=Dh,
            d_mlp=c.intermediate_size,
            d_vocab=c.vocab_size,
            n_ctx=c.max_position_embeddings,
            q_bias=bias,
            k_bias=bias,
            v_bias=bias,
            o_bias=bias,
            norm="layernorm",
            norm_eps=float(c.layer_norm_eps),
            parallel=bool(c.use_parallel_residual),
            act=_ACTS[c.hidden_act],
            tied=bool(c.tie_word_embeddings),
            **positional,
        )

    @classmethod
    def read_weights(cls, model: torch.nn.Module, arch: Arch) -> Weights:
        H, D, Dh, M, V = arch.n_heads, arch.d_model, arch.d_head, arch.d_mlp, arch.d_vocab
        net, get, layers = model.gpt_neox, reader(type(model).__name__), []
        for l, layer in enumerate(net.layers):
            p = f"gpt_neox.layers.{l}"
            qkv = get(f"{p}.attention.query_key_value.weight", layer.attention.query_key_value.weight, (3 * H * Dh, D))
            qkv = qkv.view(H, 3, Dh, D).transpose(-1, -2)  # per head [q, k, v], each [D, Dh]
            t = {"W_Q": qkv[:, 0], "W_K": qkv[:, 1], "W_V": qkv[:, 2]}
            t["W_O"] = get(f"{p}.attention.dense.weight", layer.attention.dense.weight, (D, H * Dh)).T.reshape(H, Dh, D)
            if arch.q_bias:
                b = get(f"{p}.attention.query_key_value.bias", layer.attention.query_key_value.bias, (3 * H * Dh,)).view(H, 3, Dh)
                t.update(b_Q=b[:, 0], b_K=b[:, 1], b_V=b[:, 2])
                t["b_O"] = get(f"{p}.attention.dense.bias", layer.attention.dense.bias, (D,))
            for slot, ln in (("attn_in", layer.input_layernorm), ("mlp_in", layer.post_attention_layernorm)):
                t[f"ln_{slot}_w"] = get(f"{p}.{slot} norm weight", ln.weight, (D,))
                t[f"ln_{slot}_b"] = get(f"{p}.{slot} norm bias", ln.bias, (D,))
            t["W_in"] = get(f"{p}.mlp.dense_h_to_4h.weight", layer.mlp.dense_h_to_4h.weight, (M, D)).T
            t["b_in"] = get(f"{p}.mlp.dense_h_to_4h.bias", layer.mlp.dense_h_to_4h.bias, (M,))
            t["W_out"] = get(f"{p}.mlp.dense_4h_to_h.weight", layer.mlp.dense_4h_to_h.weight, (D, M)).T
            t["b_out"] = get(f"{p}.mlp.dense_4h_to_h.bias", layer.mlp.dense_4h_to_h.bias, (D,))
            layers.append(t)
        tensors = stack_layers(layers)
        tensors["W_E"] = get("gpt_neox.embed_in.weight", net.embed_in.weight, (V, D))
        tensors["ln_final_w"] = get("gpt_neox.final_layer_norm.weight", net.final_layer_norm.weight, (D,))
        tensors["ln_final_b"] = get("gpt_neox.final_layer_norm.bias", net.final_layer_norm.bias, (D,))
        tensors.update(unembedding(get, model, arch, net.embed_in.weight, "gpt_neox.embed_in.weight"))
        return Weights(arch, tensors)

    # ---------------------------------------------------------- hook points
    def embed_point(self) -> tuple[torch.nn.Module, str]:
        return self.model.gpt_neox.embed_in, "output"

    def out_proj(self, layer: int) -> torch.nn.Module:
        return self.model.gpt_neox.layers[layer].attention.dense

    def mlp_module(self, layer: int) -> torch.nn.Module:
        return self.model.gpt_neox.layers[layer].mlp

    def final_norm_module(self) -> torch.nn.Module:
        return self.model.gpt_neox.final_layer_norm

    # ----------------------------------------------------------------- trace
    def _trace(self, tokens: torch.Tensor, rec: Recorder) -> Trace:
        arch, net = self.arch, self.model.gpt_neox
        H, Dh = arch.n_heads, arch.d_head
        rec.output(net.embed_in, "embed")
        for layer in net.layers:
            rec.input(layer, "resid_pre")
            rec.output(layer, "resid_post")
            for slot, ln in (("attn_in", layer.input_layernorm), ("mlp_in", layer.post_attention_layernorm)):
                rec.input(ln, f"{slot}.input")
                rec.output(ln, f"{slot}.output")
            rec.output(layer.attention, "attn_out", lambda out: out[0])
            rec.output(layer.attention, "pattern", lambda out: out[1])  # eager: the softmax weights [B, H, P, P]
            rec.output(layer.attention.query_key_value, "v", lambda out: out.unflatten(-1, (H, 3, Dh))[..., 2, :])
            rec.input(layer.attention.dense, "z")  # [B, P, H * Dh], heads concatenated
            rec.output(layer.mlp.dense_h_to_4h, "mlp_pre")
            rec.input(layer.mlp.dense_4h_to_h, "mlp_post")
            rec.output(layer.mlp, "mlp_out")
        rec.input(net.final_layer_norm, "final.input")
        rec.output(net.final_layer_norm, "final.output")
        logits = self.model(input_ids=tokens, use_cache=False).logits

        W_O = torch.stack([layer.attention.dense.weight.T.reshape(H, Dh, arch.d_model) for layer in net.layers])  # [L, H, Dh, D]
        norms = {slot: NormTrace(rec.stack(f"{slot}.input"), None, rec.stack(f"{slot}.output")) for slot in ("attn_in", "mlp_in")}
        norms["final"] = NormTrace(rec.last("final.input"), None, rec.last("final.output"))
        resid_mid = None if arch.parallel else norms["mlp_in"].input  # sequential: n2 reads x + attn
        return z_trace(arch, tokens, rec, logits, W_O, norms, resid_mid)

    # ----------------------------------------------------------------- build
    @classmethod
    def cannot_express(cls, arch: Arch) -> str | None:
        one_bias = arch.q_bias == arch.k_bias == arch.v_bias == arch.o_bias
        checks = (
            (arch.n_kv_heads != arch.n_heads, f"n_kv_heads={arch.n_kv_heads} (grouped keys/values; GPT-NeoX has n_kv_heads == n_heads)"),
            (arch.d_model != arch.n_heads * arch.d_head, f"d_model={arch.d_model} != n_heads * d_head = {arch.n_heads * arch.d_head}"),
            (not arch.causal, "causal=False"),
            (arch.attn_scale is not None, f"attn_scale={arch.attn_scale} (GPT-NeoX scales by d_head ** -0.5)"),
            (arch.attn_softcap is not None, f"attn_softcap={arch.attn_softcap}"),
            (arch.sliding_window is not None, f"sliding_window={arch.sliding_window}"),
            (arch.qk_norm != "none", f"qk_norm={arch.qk_norm!r}"),
            (arch.positional == "learned", "positional='learned'"),
            (arch.rotary_style != "half", f"rotary_style={arch.rotary_style!r}"),
            (arch.norm != "layernorm", f"norm={arch.norm!r}"),
            (arch.norm_placement != "pre", f"norm_placement={arch.norm_placement!r}"),
            (arch.embed_norm, "embed_norm=True"),
            (not arch.final_norm, "final_norm=False"),
            (arch.parallel_shared_norm, "parallel_shared_norm=True (GPT-NeoX's parallel block has two norms)"),
            (arch.attn_only, "attn_only=True"),
            (arch.gated, "gated=True"),
            (not arch.mlp_bias, "mlp_bias=False"),
            (not one_bias, f"q_bias={arch.q_bias}, k_bias={arch.k_bias}, v_bias={arch.v_bias}, o_bias={arch.o_bias} (one attention_bias switch for all four)"),
            (arch.unembed_bias, "unembed_bias=True"),
            (arch.logit_softcap is not None, f"logit_softcap={arch.logit_softcap}"),
            (arch.embed_scale != 1.0, f"embed_scale={arch.embed_scale}"),
            (arch.unembed_transform, "unembed_transform=True"),
        )
        return next((why for bad, why in checks if bad), None)

    @classmethod
    def _build(cls, arch: Arch, weights: Weights) -> torch.nn.Module:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        config = GPTNeoXConfig(
            vocab_size=arch.d_vocab,
            hidden_size=arch.d_model,
            num_hidden_layers=arch.n_layers,
            num_attention_heads=arch.n_heads,
            intermediate_size=arch.d_mlp,
            hidden_act=_HIDDEN_ACT[arch.act],
            max_position_embeddings=arch.n_ctx,
            layer_norm_eps=float(arch.norm_eps),
            use_parallel_residual=arch.parallel,
            attention_bias=arch.q_bias,
            tie_word_embeddings=arch.tied,
            rope_parameters={"rope_type": "default", "rope_theta": float(arch.rotary_base), "partial_rotary_factor": _rotary_factor(arch.rotary_dims, arch.d_head)},
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            attn_implementation="eager",
        )
        model = GPTNeoXForCausalLM(config).to(weights.dtype)  # cast first: copying into float32 would round
        _load(model, arch, weights)
        return model


def _load(model: torch.nn.Module, arch: Arch, w: Weights) -> None:
    """Copy ``w`` into ``model``: the inverse of ``read_weights`` (every rewrite named)."""
    H, D, Dh = arch.n_heads, arch.d_model, arch.d_head
    net, put = model.gpt_neox, writer()
    with torch.no_grad():
        put(net.embed_in.weight, w.W_E, "W_E")
        for l, layer in enumerate(net.layers):
            attn = layer.attention
            qkv = torch.stack([w.W_Q[l], w.W_K[l], w.W_V[l]], dim=1)  # [H, 3, D, Dh]: per head [q, k, v]
            put(attn.query_key_value.weight, qkv.transpose(-1, -2).reshape(3 * H * Dh, D), "W_Q/W_K/W_V fused")
            put(attn.dense.weight, w.W_O[l].reshape(H * Dh, D).T, "W_O")
            if arch.q_bias:
                put(attn.query_key_value.bias, torch.stack([w.b_Q[l], w.b_K[l], w.b_V[l]], dim=1).reshape(3 * H * Dh), "b_Q/b_K/b_V fused")
                put(attn.dense.bias, w.b_O[l], "b_O")
            for slot, ln in (("attn_in", layer.input_layernorm), ("mlp_in", layer.post_attention_layernorm)):
                put(ln.weight, w[f"ln_{slot}_w"][l], f"ln_{slot}_w")
                put(ln.bias, w[f"ln_{slot}_b"][l], f"ln_{slot}_b")
            put(layer.mlp.dense_h_to_4h.weight, w.W_in[l].T, "W_in")
            put(layer.mlp.dense_h_to_4h.bias, w.b_in[l], "b_in")
            put(layer.mlp.dense_4h_to_h.weight, w.W_out[l].T, "W_out")
            put(layer.mlp.dense_4h_to_h.bias, w.b_out[l], "b_out")
        put(net.final_layer_norm.weight, w.ln_final_w, "ln_final_w")
        put(net.final_layer_norm.bias, w.ln_final_b, "ln_final_b")
        if not arch.tied:
            put(model.lm_head.weight, w.W_U.T, "W_U")
