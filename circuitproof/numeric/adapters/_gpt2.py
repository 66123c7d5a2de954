"""GPT-2 (``GPT2LMHeadModel``, ``GPT2Model``): pre-LayerNorm, learned positions, fused Conv1D QKV.

Weight conversions (transformers -> canonical, row convention):

- ``Conv1D`` stores its weight as ``[in, out]`` and computes ``x @ W + b``: it is
  already in the row convention, so no transpose (unlike ``nn.Linear``).
- ``attn.c_attn.weight [D, 3D]`` is ``[W_q | W_k | W_v]`` along the output axis;
  each ``[D, H*Dh]`` block is split into heads as ``view(D, H, Dh)`` then
  ``permute(1, 0, 2)`` -> ``W_Q[l] [H, D, Dh]``. ``c_attn.bias [3D]`` splits the
  same way into ``b_Q, b_K, b_V [H, Dh]``.
- ``attn.c_proj.weight [H*Dh, D]`` -> ``W_O[l] = view(H, Dh, D)``; its bias is ``b_O``.
- ``mlp.c_fc.weight [D, M]`` is ``W_in``; ``mlp.c_proj.weight [M, D]`` is ``W_out``.
- ``ln_1``/``ln_2`` are the ``attn_in``/``mlp_in`` norm slots, ``ln_f`` the final norm.
- ``lm_head.weight [V, D]`` -> ``W_U = lm_head.weight.T``; tied to ``wte`` by default.

GPT-2 has no GQA (``n_kv_heads = n_heads``) and ``d_head = d_model / n_heads``.
It computes in the model's dtype throughout (its eager softmax keeps the dtype).
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from ...arch import Arch
from .._trace import NormTrace, Trace
from .._weights import Weights
from ._base import Adapter, Recorder, check_shape, require

__all__ = ["GPT2Adapter"]

# transformers activation name -> Arch.act (first one is used when building)
_ACTS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}
_BUILD_ACT = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def _norm_trace(rec: Recorder, key: str, stacked: bool = True) -> NormTrace:
    get = rec.stack if stacked else rec.last
    return NormTrace(input=get(f"{key}.in"), scale=None, output=get(f"{key}.out"))


class GPT2Adapter(Adapter):
    family = "gpt2"
    model_classes = ("GPT2LMHeadModel", "GPT2Model")
    below_dtype_steps = ()
    fixed = dict(
        positional="learned", norm="layernorm", norm_placement="pre", final_norm=True, embed_norm=False, qk_norm="none",
        parallel=False, attn_only=False, gated=False, mlp_bias=True, q_bias=True, k_bias=True, v_bias=True, o_bias=True,
        causal=True, attn_softcap=None, logit_softcap=None, embed_scale=1.0, unembed_bias=False, unembed_transform=False,
        sliding_window=None,
    )
    pinned = {**fixed, "_sliding": False, "attn_scale": st.sampled_from([None, 1.0])}

    @classmethod
    def project(cls, arch: Arch) -> Arch:
        """d_head = d_model / n_heads in GPT-2: pick d_model to match; one kv head per query head."""
        return arch.replace(d_model=arch.n_heads * arch.d_head, n_kv_heads=arch.n_heads)

    @classmethod
    def cannot_express(cls, arch: Arch) -> str | None:
        for name, value in cls.fixed.items():
            if getattr(arch, name) != value:
                return f"{name}={getattr(arch, name)!r} (GPT-2 has {name}={value!r})"
        if arch.n_kv_heads != arch.n_heads:
            return f"n_kv_heads={arch.n_kv_heads} (no GQA)"
        if arch.d_head * arch.n_heads != arch.d_model:
            return f"d_head={arch.d_head} with n_heads={arch.n_heads}, d_model={arch.d_model} (GPT-2 has d_head = d_model / n_heads)"
        if arch.attn_scale not in (None, 1.0):
            return f"attn_scale={arch.attn_scale} (GPT-2 scales by d_head**-0.5, or 1 with scale_attn_weights=False)"
        return None

    # -------------------------------------------------------------- reading
    @classmethod
    def read_arch(cls, model: torch.nn.Module) -> Arch:
        c = model.config
        require(not c.scale_attn_by_inverse_layer_idx, "GPT-2 config scale_attn_by_inverse_layer_idx=True: a per-layer score scale is not in Arch")
        require(not c.reorder_and_upcast_attn, "GPT-2 config reorder_and_upcast_attn=True is not supported; set it False")
        require(not getattr(c, "add_cross_attention", False), "GPT-2 config add_cross_attention=True: cross-attention is not in Arch")
        require(c.activation_function in _ACTS, f"GPT-2 config activation_function={c.activation_function!r}; supported: {sorted(_ACTS)}")
        has_head = type(model).__name__ == "GPT2LMHeadModel"
        return Arch(
            n_layers=c.n_layer, n_heads=c.n_head, d_model=c.n_embd, d_head=c.n_embd // c.n_head,
            d_mlp=c.n_inner if c.n_inner is not None else 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions,
            q_bias=True, k_bias=True, v_bias=True, o_bias=True, attn_scale=None if c.scale_attn_weights else 1.0,
            positional="learned", norm="layernorm", norm_eps=c.layer_norm_epsilon, act=_ACTS[c.activation_function],
            tied=bool(c.tie_word_embeddings) or not has_head,
        )

    @classmethod
    def read_weights(cls, model: torch.nn.Module, arch: Arch) -> Weights:
        name = type(model).__name__
        tf = model.transformer if hasattr(model, "transformer") else model
        D, H, Dh, M = arch.d_model, arch.n_heads, arch.d_head, arch.d_mlp
        t: dict[str, list[torch.Tensor]] = {}

        def put(key: str, value: torch.Tensor) -> None:
            t.setdefault(key, []).append(value.detach())

        for l, block in enumerate(tf.h):
            qkv_w = check_shape(name, f"h.{l}.attn.c_attn.weight", block.attn.c_attn.weight, (D, 3 * D))  # Conv1D [in, out]
            qkv_b = check_shape(name, f"h.{l}.attn.c_attn.bias", block.attn.c_attn.bias, (3 * D,))
            w_q, w_k, w_v = qkv_w.split(D, dim=1)  # each [D, H*Dh]
            b_q, b_k, b_v = qkv_b.split(D)  # each [H*Dh]
            for key, w in (("W_Q", w_q), ("W_K", w_k), ("W_V", w_v)):
                put(key, w.reshape(D, H, Dh).permute(1, 0, 2))  # [H, D, Dh]
            for key, b in (("b_Q", b_q), ("b_K", b_k), ("b_V", b_v)):
                put(key, b.reshape(H, Dh))
            put("W_O", check_shape(name, f"h.{l}.attn.c_proj.weight", block.attn.c_proj.weight, (D, D)).reshape(H, Dh, D))
            put("b_O", block.attn.c_proj.bias)
            put("W_in", check_shape(name, f"h.{l}.mlp.c_fc.weight", block.mlp.c_fc.weight, (D, M)))
            put("b_in", block.mlp.c_fc.bias)
            put("W_out", check_shape(name, f"h.{l}.mlp.c_proj.weight", block.mlp.c_proj.weight, (M, D)))
            put("b_out", block.mlp.c_proj.bias)
            put("ln_attn_in_w", block.ln_1.weight)
            put("ln_attn_in_b", block.ln_1.bias)
            put("ln_mlp_in_w", block.ln_2.weight)
            put("ln_mlp_in_b", block.ln_2.bias)
        tensors = {k: torch.stack(v) for k, v in t.items()}
        tensors["W_E"] = tf.wte.weight.detach()
        tensors["W_pos"] = tf.wpe.weight.detach()
        tensors["ln_final_w"], tensors["ln_final_b"] = tf.ln_f.weight.detach(), tf.ln_f.bias.detach()
        if not arch.tied:
            tensors["W_U"] = check_shape(name, "lm_head.weight", model.lm_head.weight, (arch.d_vocab, D)).detach().T  # [D, V]
        return Weights(arch, tensors)

    # ---------------------------------------------------------- hook points
    def _tf(self) -> torch.nn.Module:
        return self.model.transformer if hasattr(self.model, "transformer") else self.model

    def embed_point(self) -> tuple[torch.nn.Module, str]:
        return self._tf().drop, "input"  # wte(t) + wpe(p) enters the embedding dropout

    def out_proj(self, layer: int) -> torch.nn.Module:
        return self._tf().h[layer].attn.c_proj

    def mlp_module(self, layer: int) -> torch.nn.Module:
        return self._tf().h[layer].mlp

    def final_norm_module(self) -> torch.nn.Module:
        return self._tf().ln_f

    # -------------------------------------------------------------- tracing
    def _trace(self, tokens: torch.Tensor, rec: Recorder) -> Trace:
        model, arch = self.model, self.arch
        tf = model.transformer if hasattr(model, "transformer") else model
        rec.input(tf.drop, "embed")  # wte(t) + wpe(p) enters the embedding dropout
        for block in tf.h:
            rec.input(block, "resid_pre")
            rec.output(block, "resid_post", lambda o: o[0] if isinstance(o, tuple) else o)
            rec.input(block.ln_2, "resid_mid")
            rec.output(block.attn, "attn_out", lambda o: o[0])
            rec.output(block.attn, "pattern", lambda o: o[1])
            rec.output(block.attn.c_attn, "qkv")
            rec.input(block.attn.c_proj, "z")
            rec.output(block.mlp, "mlp_out")
            rec.output(block.mlp.c_fc, "mlp_pre")
            rec.input(block.mlp.c_proj, "mlp_post")
            for slot, ln in (("attn_in", block.ln_1), ("mlp_in", block.ln_2)):
                rec.input(ln, f"{slot}.in")
                rec.output(ln, f"{slot}.out")
        rec.input(tf.ln_f, "final.in")
        rec.output(tf.ln_f, "final.out")
        out = model(input_ids=tokens, use_cache=False)

        L, (B, P), H, Dh = arch.n_layers, tokens.shape, arch.n_heads, arch.d_head
        q, k, v = rec.stack("qkv").split(arch.d_model, dim=-1)  # each [L, B, P, H*Dh]
        z = rec.stack("z").reshape(L, B, P, H, Dh)
        head_out = torch.einsum("lbphe,lhed->lbphd", z, self.weights.W_O)  # head_h = z_h W_O[h]
        logits = out.logits if hasattr(out, "logits") else None
        return Trace(
            arch=arch, tokens=tokens, embed=rec.last("embed"),
            resid_pre=rec.stack("resid_pre"), resid_mid=rec.stack("resid_mid"), resid_post=rec.stack("resid_post"),
            q=q.reshape(L, B, P, H, Dh), k=k.reshape(L, B, P, H, Dh), v=v.reshape(L, B, P, H, Dh), scores=None,
            pattern=rec.stack("pattern"), z=z, head_out=head_out, attn_out=rec.stack("attn_out"),
            mlp_pre=rec.stack("mlp_pre"), mlp_post=rec.stack("mlp_post"), mlp_out=rec.stack("mlp_out"),
            logits_raw=logits, logits=logits,
            norms={"attn_in": _norm_trace(rec, "attn_in"), "mlp_in": _norm_trace(rec, "mlp_in"),
                   "final": _norm_trace(rec, "final", stacked=False)},
        )

    # ------------------------------------------------------------- building
    @classmethod
    def _build(cls, arch: Arch, weights: Weights) -> torch.nn.Module:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=arch.d_vocab, n_positions=arch.n_ctx, n_embd=arch.d_model, n_layer=arch.n_layers, n_head=arch.n_heads,
            n_inner=arch.d_mlp, activation_function=_BUILD_ACT[arch.act], layer_norm_epsilon=arch.norm_eps,
            scale_attn_weights=arch.attn_scale is None, tie_word_embeddings=arch.tied,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager", bos_token_id=None, eos_token_id=None,
        )
        model = GPT2LMHeadModel(config).to(weights.dtype)
        w, tf = weights, model.transformer
        D = arch.d_model
        with torch.no_grad():
            tf.wte.weight.copy_(w.W_E)
            tf.wpe.weight.copy_(w.W_pos)
            for l, block in enumerate(tf.h):
                heads_to_cols = lambda m: m.permute(1, 0, 2).reshape(D, D)  # noqa: E731  [H, D, Dh] -> [D, H*Dh]
                block.attn.c_attn.weight.copy_(torch.cat([heads_to_cols(w.W_Q[l]), heads_to_cols(w.W_K[l]), heads_to_cols(w.W_V[l])], dim=1))
                block.attn.c_attn.bias.copy_(torch.cat([w.b_Q[l].reshape(-1), w.b_K[l].reshape(-1), w.b_V[l].reshape(-1)]))
                block.attn.c_proj.weight.copy_(w.W_O[l].reshape(D, D))  # [H, Dh, D] -> [H*Dh, D]
                block.attn.c_proj.bias.copy_(w.b_O[l])
                block.mlp.c_fc.weight.copy_(w.W_in[l])
                block.mlp.c_fc.bias.copy_(w.b_in[l])
                block.mlp.c_proj.weight.copy_(w.W_out[l])
                block.mlp.c_proj.bias.copy_(w.b_out[l])
                block.ln_1.weight.copy_(w.ln_attn_in_w[l])
                block.ln_1.bias.copy_(w.ln_attn_in_b[l])
                block.ln_2.weight.copy_(w.ln_mlp_in_w[l])
                block.ln_2.bias.copy_(w.ln_mlp_in_b[l])
            tf.ln_f.weight.copy_(w.ln_final_w)
            tf.ln_f.bias.copy_(w.ln_final_b)
            if not arch.tied:
                model.lm_head.weight.copy_(w.W_U.T)
        return model
