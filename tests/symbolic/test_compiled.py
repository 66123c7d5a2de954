"""The proved expressions, compiled, hold on real forward passes: reference and transformers traces, float64, 1e-10.

For each architecture kind (GPT-2-like, Llama-like with rotary, RMSNorm and GQA,
GPT-J-like parallel, attention-only), every concrete identity that applies
(``catalogue.instances``) is compiled and evaluated on the trace's own tensors.
The tolerance 1e-10 is relative to the compared quantity's scale: float64
rounding through these few products is ~1e-15, so 1e-10 leaves room only for
rounding, never for a missing term (a dropped bias or head moves it by O(1)).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from circuitproof import Arch
from circuitproof.numeric import Weights, run
from circuitproof.numeric.bind import Unbindable, bind
from circuitproof.symbolic import catalogue

RTOL = 1e-10

ARCHS = {
    "gpt2": Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, q_bias=True, k_bias=True, v_bias=True, o_bias=True, act="gelu_tanh", tied=True),
    "llama": Arch(n_layers=2, n_heads=4, n_kv_heads=2, d_model=16, d_head=4, d_mlp=24, positional="rotary", norm="rmsnorm",
                  norm_eps=1e-6, gated=True, act="silu", mlp_bias=False),
    "gptj": Arch(n_layers=2, n_heads=2, d_model=8, d_head=4, positional="rotary", rotary_dim=2, rotary_style="interleaved",
                 parallel=True, parallel_shared_norm=True, act="gelu_tanh", unembed_bias=True),
    "attn_only": Arch(n_layers=3, n_heads=2, d_model=8, d_head=4, attn_only=True, norm="none", positional="none"),
}


def evaluate(arch: Arch, weights: Weights, trace) -> tuple[dict[str, float], list[str]]:
    """Relative error of every applicable identity on ``trace``, and the ids that could not be bound."""
    errors, unbound = {}, []
    for number, identity in enumerate(catalogue.instances(arch)):
        compiled = identity.compile()
        try:
            env = bind(compiled.atoms, arch, weights, trace)
        except Unbindable:
            unbound.append(identity.id)
            continue
        lhs, rhs = compiled.lhs(env), compiled.rhs(env)
        scale = max(float(torch.as_tensor(rhs).abs().max()), 1e-300)
        errors[f"{identity.id}#{number}"] = float((lhs - rhs).abs().max()) / scale
    return errors, unbound


def _assert_all_hold(errors: dict[str, float]) -> None:
    assert errors, "no identity was evaluated"
    worst = max(errors, key=errors.get)
    assert errors[worst] <= RTOL, f"{worst}: relative error {errors[worst]:.3e} > {RTOL}"


@pytest.mark.parametrize("kind", list(ARCHS))
@given(seed=st.integers(0, 2**16))
def test_identities_hold_on_the_reference(kind, seed):
    arch = ARCHS[kind]
    w = Weights.random(arch, seed)
    trace = run(arch, w, torch.randint(0, arch.d_vocab, (2, 7), generator=torch.Generator().manual_seed(seed)))
    errors, unbound = evaluate(arch, w, trace)
    assert not unbound
    _assert_all_hold(errors)


def test_a_wrong_expression_is_caught_numerically():
    """Evaluating a head sum that drops one head fails by O(1): the check can fail."""
    from circuitproof.symbolic import _atoms as at
    from circuitproof.symbolic._compile import compile_expr

    arch = ARCHS["gpt2"]
    w = Weights.random(arch, 0)
    trace = run(arch, w, torch.tensor([[1, 2, 3, 4]]))
    env = bind({"o_{0}": ("attn_raw", (0,)), "h_{0,0}": ("head", (0, 0)), "1": ("ones", ()), "b_O^{0}": ("b_O", (0,))}, arch, w, trace)
    wrong = compile_expr(at.head(0, 0) + at.ones() * at.bias("b_O", 0))(env)
    assert float((env["o_{0}"] - wrong).abs().max()) > 0.1


transformers = pytest.importorskip("transformers")


def _hf_trace(family: str, arch: Arch, w: Weights, toks: torch.Tensor):
    from circuitproof.numeric.adapters import adapt, build

    return adapt(build(arch, w, family)).trace(toks)


@pytest.mark.parametrize("family", ["gpt2", "gptj"])
def test_identities_hold_on_transformers_traces(family):
    arch = ARCHS[family]
    w = Weights.random(arch, 3)
    toks = torch.randint(0, arch.d_vocab, (2, 7), generator=torch.Generator().manual_seed(3))
    errors, unbound = evaluate(arch, w, _hf_trace(family, arch, w, toks))
    _assert_all_hold(errors)
    # the only identities left unevaluated need pre-softmax scores, which transformers does not expose
    assert all(i == "attention.qk_circuit" for i in unbound)


def test_identities_hold_on_llama_with_its_float32_steps_kept_in_float64():
    """Llama computes RMSNorm, softmax and rotary tables in float32; kept in float64 (patched here only), 1e-10 holds."""
    from transformers.models.llama import modeling_llama

    from tests.numeric.adapters.test_llama import float32_steps_in_float64

    arch = ARCHS["llama"]
    w = Weights.random(arch, 5)
    toks = torch.randint(0, arch.d_vocab, (2, 7), generator=torch.Generator().manual_seed(5))
    with float32_steps_in_float64(modeling_llama.LlamaRMSNorm, modeling_llama.LlamaRotaryEmbedding):
        trace = _hf_trace("llama", arch, w, toks)
    errors, unbound = evaluate(arch, w, trace)
    _assert_all_hold(errors)
    assert not unbound
