"""The reference under autograd: its trace holds ordinary tensors, and gradients flow through weights and edits.

The layers run in inference mode when nothing is differentiated (``run``'s docstring);
these tests hold the promise that a caller never sees the difference.
"""

from __future__ import annotations

import pytest
import torch

from circuitproof import Arch
from circuitproof.numeric import Weights, run

GRAD_ARCH = Arch(n_layers=2, n_heads=2, d_model=6, d_head=2, positional="rotary", norm="rmsnorm", final_norm=True, q_bias=True)


def test_a_trace_holds_ordinary_tensors_that_a_caller_may_differentiate_and_change():
    """The layers may run in inference mode; what the trace holds never is an inference tensor."""
    trace = run(GRAD_ARCH, Weights.random(GRAD_ARCH, 0), torch.tensor([[1, 2, 3]]))
    inference = [name for name, t in trace.tensors().items() if t.is_inference()]
    assert not inference, f"inference tensors in the trace: {inference}"
    x = trace.resid_pre[1].clone().requires_grad_()
    (x * trace.pattern[0, 0, 0, 0, 0]).sum().backward()  # usable in a graph
    trace.logits.add_(0.0)  # and changeable in place


def test_gradients_flow_through_weights_that_require_them():
    """With a weight requiring grad, the pass records the graph: d logits / d W_Q matches a finite difference."""
    w = Weights.random(GRAD_ARCH, 1)
    W_Q = w.W_Q.clone().requires_grad_()
    toks = torch.tensor([[0, 3, 1]])
    run(GRAD_ARCH, w.replace(W_Q=W_Q), toks).logits[0, -1, 2].backward()
    eps, where = 1e-6, (1, 0, 3, 1)
    bumped = W_Q.detach().clone()
    bumped[where] += eps
    plus = run(GRAD_ARCH, w.replace(W_Q=bumped), toks).logits[0, -1, 2]
    bumped[where] -= 2 * eps
    minus = run(GRAD_ARCH, w.replace(W_Q=bumped), toks).logits[0, -1, 2]
    assert W_Q.grad is not None and W_Q.grad.abs().sum() > 0
    assert float(W_Q.grad[where]) == pytest.approx(float(plus - minus) / (2 * eps), rel=1e-6, abs=1e-9)


def test_gradients_flow_through_an_edit():
    """An edit whose replacement requires grad is differentiated through the rest of the pass."""
    w = Weights.random(GRAD_ARCH, 2)
    delta = torch.zeros(1, 3, GRAD_ARCH.d_model, dtype=torch.float64, requires_grad=True)
    trace = run(GRAD_ARCH, w, torch.tensor([[0, 3, 1]]), edit=lambda name, layer, v: v + delta if name == "embed" else v)
    trace.logits[0, -1].sum().backward()
    assert delta.grad is not None and delta.grad[0, 0].abs().sum() > 0  # the first position reaches the last through attention
