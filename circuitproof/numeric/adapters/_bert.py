"""BERT (``BertForMaskedLM``, ``BertModel``): post-LayerNorm, bidirectional, embedding norm, masked-LM head.

Weight conversions (transformers -> canonical, row convention):

- ``nn.Linear`` stores ``[out, in]`` and computes ``x @ W.T + b``: every weight is
  transposed. ``attention.self.query.weight [H*Dh, D]`` -> ``.T`` ``[D, H*Dh]`` ->
  ``view(D, H, Dh).permute(1, 0, 2)`` -> ``W_Q[l] [H, D, Dh]``; likewise key and
  value; their biases ``view(H, Dh)``.
- ``attention.output.dense.weight [D, H*Dh]`` -> ``.T.view(H, Dh, D)`` = ``W_O[l]``.
- ``intermediate.dense.weight [M, D]`` -> ``W_in = .T``; ``output.dense.weight
  [D, M]`` -> ``W_out = .T``.
- Post-norm: ``attention.output.LayerNorm`` (after the attention add) is the
  ``attn_out`` slot, ``output.LayerNorm`` (after the MLP add) the ``mlp_out``
  slot; ``embeddings.LayerNorm`` is the embedding norm. No final norm.
- Token types: with ``token_type_ids`` left at zero (what circuitproof feeds),
  every position adds ``token_type_embeddings[0]``; it is folded into
  ``W_pos = position_embeddings + token_type_embeddings[0]``. ``build`` writes
  ``W_pos`` to ``position_embeddings`` and zeros to ``token_type_embeddings``.
- Masked-LM head: ``cls.predictions.transform.dense`` -> ``W_T = .T``, ``b_T``;
  its LayerNorm is the ``transform`` norm; the decoder is tied to the word
  embeddings (``W_U = W_E^T``) unless ``tie_word_embeddings=False``
  (``W_U = decoder.weight.T``); ``cls.predictions.bias`` is ``b_U``.
- ``BertModel`` has no head: its Arch is tied, without transform or ``b_U``,
  and its trace has no logits.

BERT computes in the model's dtype throughout.
"""

from __future__ import annotations

import torch

from ...arch import Arch
from .._trace import NormTrace, Trace
from .._weights import Weights
from ._base import Adapter, Recorder, check_shape, require

__all__ = ["BertAdapter"]

_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}
_BUILD_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu"}


def _heads_from_linear(weight: torch.Tensor, H: int, Dh: int) -> torch.Tensor:
    """``nn.Linear`` weight ``[H*Dh, D]`` -> ``[H, D, Dh]`` (transpose, split heads)."""
    return weight.T.reshape(weight.shape[1], H, Dh).permute(1, 0, 2)


def _linear_from_heads(w: torch.Tensor) -> torch.Tensor:
    """``[H, D, Dh]`` -> ``nn.Linear`` weight ``[H*Dh, D]`` (inverse of :func:`_heads_from_linear`)."""
    H, D, Dh = w.shape
    return w.permute(1, 0, 2).reshape(D, H * Dh).T


class BertAdapter(Adapter):
    family = "bert"
    model_classes = ("BertForMaskedLM", "BertModel")
    below_dtype_steps = ()
    fixed = dict(
        causal=False, positional="learned", norm="layernorm", norm_placement="post", final_norm=False, embed_norm=True,
        qk_norm="none", parallel=False, attn_only=False, gated=False, mlp_bias=True, q_bias=True, k_bias=True, v_bias=True,
        o_bias=True, attn_scale=None, attn_softcap=None, logit_softcap=None, embed_scale=1.0, unembed_bias=True,
        unembed_transform=True, sliding_window=None,
    )
    pinned = {**fixed, "_sliding": False}

    @classmethod
    def project(cls, arch: Arch) -> Arch:
        """d_head = d_model / n_heads in BERT; one kv head per query head."""
        return arch.replace(d_model=arch.n_heads * arch.d_head, n_kv_heads=arch.n_heads)

    @classmethod
    def cannot_express(cls, arch: Arch) -> str | None:
        for name, value in cls.fixed.items():
            if getattr(arch, name) != value:
                return f"{name}={getattr(arch, name)!r} (BertForMaskedLM has {name}={value!r})"
        if arch.n_kv_heads != arch.n_heads:
            return f"n_kv_heads={arch.n_kv_heads} (no GQA)"
        if arch.d_head * arch.n_heads != arch.d_model:
            return f"d_head={arch.d_head} with n_heads={arch.n_heads}, d_model={arch.d_model} (BERT has d_head = d_model / n_heads)"
        return None

    # -------------------------------------------------------------- reading
    @classmethod
    def read_arch(cls, model: torch.nn.Module) -> Arch:
        c = model.config
        positions = getattr(c, "position_embedding_type", "absolute")
        require(positions == "absolute", f"BERT config position_embedding_type={positions!r}; only 'absolute' is in Arch")
        require(not c.is_decoder, "BERT config is_decoder=True: causal BERT is not supported; use is_decoder=False")
        require(c.hidden_act in _ACTS, f"BERT config hidden_act={c.hidden_act!r}; supported: {sorted(_ACTS)}")
        require(c.hidden_size % c.num_attention_heads == 0, "BERT config hidden_size must be divisible by num_attention_heads")
        has_head = type(model).__name__ == "BertForMaskedLM"
        return Arch(
            n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads, d_model=c.hidden_size,
            d_head=c.hidden_size // c.num_attention_heads, d_mlp=c.intermediate_size, d_vocab=c.vocab_size,
            n_ctx=c.max_position_embeddings, causal=False, q_bias=True, k_bias=True, v_bias=True, o_bias=True,
            positional="learned", norm="layernorm", norm_eps=c.layer_norm_eps, norm_placement="post", embed_norm=True,
            act=_ACTS[c.hidden_act], tied=bool(c.tie_word_embeddings) or not has_head,
            unembed_bias=has_head, unembed_transform=has_head,
        )

    @classmethod
    def read_weights(cls, model: torch.nn.Module, arch: Arch) -> Weights:
        name = type(model).__name__
        bert = model.bert if hasattr(model, "bert") else model
        D, H, Dh, M = arch.d_model, arch.n_heads, arch.d_head, arch.d_mlp
        t: dict[str, list[torch.Tensor]] = {}

        def put(key: str, value: torch.Tensor) -> None:
            t.setdefault(key, []).append(value.detach())

        for l, layer in enumerate(bert.encoder.layer):
            sa, so = layer.attention.self, layer.attention.output
            for key, part in (("Q", "query"), ("K", "key"), ("V", "value")):
                lin = getattr(sa, part)
                weight = check_shape(name, f"encoder.layer.{l}.attention.self.{part}.weight", lin.weight, (H * Dh, D))
                put(f"W_{key}", _heads_from_linear(weight, H, Dh))
                put(f"b_{key}", lin.bias.reshape(H, Dh))
            dense = check_shape(name, f"encoder.layer.{l}.attention.output.dense.weight", so.dense.weight, (D, H * Dh))
            put("W_O", dense.T.reshape(H, Dh, D))
            put("b_O", so.dense.bias)
            put("ln_attn_out_w", so.LayerNorm.weight)
            put("ln_attn_out_b", so.LayerNorm.bias)
            put("W_in", check_shape(name, f"encoder.layer.{l}.intermediate.dense.weight", layer.intermediate.dense.weight, (M, D)).T)
            put("b_in", layer.intermediate.dense.bias)
            put("W_out", check_shape(name, f"encoder.layer.{l}.output.dense.weight", layer.output.dense.weight, (D, M)).T)
            put("b_out", layer.output.dense.bias)
            put("ln_mlp_out_w", layer.output.LayerNorm.weight)
            put("ln_mlp_out_b", layer.output.LayerNorm.bias)
        tensors = {k: torch.stack(v) for k, v in t.items()}
        emb = bert.embeddings
        tensors["W_E"] = emb.word_embeddings.weight.detach()
        # token type 0 is added at every position: fold it into the positions
        tensors["W_pos"] = (emb.position_embeddings.weight + emb.token_type_embeddings.weight[0]).detach()
        tensors["ln_embed_w"], tensors["ln_embed_b"] = emb.LayerNorm.weight.detach(), emb.LayerNorm.bias.detach()
        if arch.unembed_transform:
            pred = model.cls.predictions
            tensors["W_T"] = check_shape(name, "cls.predictions.transform.dense.weight", pred.transform.dense.weight, (D, D)).detach().T
            tensors["b_T"] = pred.transform.dense.bias.detach()
            tensors["ln_transform_w"] = pred.transform.LayerNorm.weight.detach()
            tensors["ln_transform_b"] = pred.transform.LayerNorm.bias.detach()
            tensors["b_U"] = pred.decoder.bias.detach()
            if not arch.tied:
                tensors["W_U"] = check_shape(name, "cls.predictions.decoder.weight", pred.decoder.weight, (arch.d_vocab, D)).detach().T
        return Weights(arch, tensors)

    # ---------------------------------------------------------- hook points
    def _bert(self) -> torch.nn.Module:
        return self.model.bert if hasattr(self.model, "bert") else self.model

    def embed_point(self) -> tuple[torch.nn.Module, str]:
        return self._bert().embeddings.LayerNorm, "input"  # word + token type + position, before the embedding norm

    def out_proj(self, layer: int) -> torch.nn.Module:
        return self._bert().encoder.layer[layer].attention.output.dense

    def mlp_module(self, layer: int) -> torch.nn.Module:
        return self._bert().encoder.layer[layer].output.dense  # W_out, before the add and the post-norm

    # -------------------------------------------------------------- tracing
    def _trace(self, tokens: torch.Tensor, rec: Recorder) -> Trace:
        model, arch = self.model, self.arch
        bert = model.bert if hasattr(model, "bert") else model
        emb = bert.embeddings
        rec.input(emb.LayerNorm, "embed.in")  # word + token type + position, before the embedding norm
        rec.output(emb.LayerNorm, "embed.out")
        for layer in bert.encoder.layer:
            sa, so = layer.attention.self, layer.attention.output
            rec.input(layer, "resid_pre")
            rec.output(layer, "resid_post", lambda o: o[0] if isinstance(o, tuple) else o)
            rec.output(sa, "pattern", lambda o: o[1])
            rec.output(sa.query, "q")
            rec.output(sa.key, "k")
            rec.output(sa.value, "v")
            rec.input(so.dense, "z")
            rec.output(so.dense, "attn_out")  # sum of heads + b_O, before the add and the post-norm
            rec.input(so.LayerNorm, "attn_out.in")
            rec.output(so.LayerNorm, "attn_out.out")  # the stream between attention and MLP
            rec.output(layer.intermediate.dense, "mlp_pre")
            rec.input(layer.output.dense, "mlp_post")
            rec.output(layer.output.dense, "mlp_out")
            rec.input(layer.output.LayerNorm, "mlp_out.in")
            rec.output(layer.output.LayerNorm, "mlp_out.out")
        if arch.unembed_transform:
            ln = model.cls.predictions.transform.LayerNorm
            rec.input(ln, "transform.in")
            rec.output(ln, "transform.out")
        out = model(input_ids=tokens)

        L, (B, P), H, Dh = arch.n_layers, tokens.shape, arch.n_heads, arch.d_head
        z = rec.stack("z").reshape(L, B, P, H, Dh)
        heads = lambda key: rec.stack(key).reshape(L, B, P, H, Dh)  # noqa: E731
        norms = {slot: NormTrace(input=rec.stack(f"{slot}.in"), scale=None, output=rec.stack(f"{slot}.out")) for slot in ("attn_out", "mlp_out")}
        norms["embed"] = NormTrace(input=rec.last("embed.in"), scale=None, output=rec.last("embed.out"))
        logits = None
        if arch.unembed_transform:
            norms["transform"] = NormTrace(input=rec.last("transform.in"), scale=None, output=rec.last("transform.out"))
            logits = out.logits
        return Trace(
            arch=arch, tokens=tokens, embed=rec.last("embed.in"),
            resid_pre=rec.stack("resid_pre"), resid_mid=rec.stack("attn_out.out"), resid_post=rec.stack("resid_post"),
            q=heads("q"), k=heads("k"), v=heads("v"), scores=None, pattern=rec.stack("pattern"), z=z,
            head_out=torch.einsum("lbphe,lhed->lbphd", z, self.weights.W_O), attn_out=rec.stack("attn_out"),
            mlp_pre=rec.stack("mlp_pre"), mlp_post=rec.stack("mlp_post"), mlp_out=rec.stack("mlp_out"),
            logits_raw=logits, logits=logits, norms=norms,
        )

    # ------------------------------------------------------------- building
    @classmethod
    def _build(cls, arch: Arch, weights: Weights) -> torch.nn.Module:
        from transformers import BertConfig, BertForMaskedLM

        config = BertConfig(
            vocab_size=arch.d_vocab, hidden_size=arch.d_model, num_hidden_layers=arch.n_layers,
            num_attention_heads=arch.n_heads, intermediate_size=arch.d_mlp, hidden_act=_BUILD_ACT[arch.act],
            max_position_embeddings=arch.n_ctx, layer_norm_eps=arch.norm_eps, tie_word_embeddings=arch.tied,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, type_vocab_size=2, pad_token_id=0,
            attn_implementation="eager",
        )
        model = BertForMaskedLM(config).to(weights.dtype)
        w, bert = weights, model.bert
        with torch.no_grad():
            bert.embeddings.word_embeddings.weight.copy_(w.W_E)
            bert.embeddings.position_embeddings.weight.copy_(w.W_pos)
            bert.embeddings.token_type_embeddings.weight.zero_()  # folded into W_pos (see the module docstring)
            bert.embeddings.LayerNorm.weight.copy_(w.ln_embed_w)
            bert.embeddings.LayerNorm.bias.copy_(w.ln_embed_b)
            for l, layer in enumerate(bert.encoder.layer):
                sa, so = layer.attention.self, layer.attention.output
                for key, lin in (("Q", sa.query), ("K", sa.key), ("V", sa.value)):
                    lin.weight.copy_(_linear_from_heads(w[f"W_{key}"][l]))
                    lin.bias.copy_(w[f"b_{key}"][l].reshape(-1))
                so.dense.weight.copy_(w.W_O[l].reshape(-1, arch.d_model).T)  # [H, Dh, D] -> [D, H*Dh]
                so.dense.bias.copy_(w.b_O[l])
                so.LayerNorm.weight.copy_(w.ln_attn_out_w[l])
                so.LayerNorm.bias.copy_(w.ln_attn_out_b[l])
                layer.intermediate.dense.weight.copy_(w.W_in[l].T)
                layer.intermediate.dense.bias.copy_(w.b_in[l])
                layer.output.dense.weight.copy_(w.W_out[l].T)
                layer.output.dense.bias.copy_(w.b_out[l])
                layer.output.LayerNorm.weight.copy_(w.ln_mlp_out_w[l])
                layer.output.LayerNorm.bias.copy_(w.ln_mlp_out_b[l])
            pred = model.cls.predictions
            pred.transform.dense.weight.copy_(w.W_T.T)
            pred.transform.dense.bias.copy_(w.b_T)
            pred.transform.LayerNorm.weight.copy_(w.ln_transform_w)
            pred.transform.LayerNorm.bias.copy_(w.ln_transform_b)
            pred.bias.copy_(w.b_U)
            pred.decoder.bias.copy_(w.b_U)
            if not arch.tied:
                pred.decoder.weight.copy_(w.W_U.T)
        return model
