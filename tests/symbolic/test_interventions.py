"""The patching identity and its live-final-norm refutation: checked derivations, their numeric meaning, their place in the catalogue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from circuitproof.symbolic import catalogue, compile_expr, is_zero
from circuitproof.symbolic import interventions as iv
from circuitproof.symbolic.logits import Readout

B, P, D, V, EPS = 2, 3, 5, 7, 1e-5


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("final_norm", ["none", "layernorm", "rmsnorm"])
def test_the_patching_identity_is_a_checked_derivation_for_every_final_norm(final_norm):
    identity = iv.patching_direct_effect(final_norm=final_norm)
    assert len(identity.steps) == 2 and identity.steps[0].rule.kind == "definition"
    assert iv.FINAL_NORM_FROZEN in identity.assumptions
    assert identity.frozen == (() if final_norm == "none" else ("S_f",))
    assert "h'" in identity.render("text") and "distributivity" in identity.render("text")


def test_zero_ablation_is_patching_with_a_zero_write():
    """``h' = 0`` turns the patching identity into ablation.direct_effect's ``-h W_U``."""
    import sympy as sp

    identity = iv.patching_direct_effect(1, 0)
    h_new = next(s for s in identity.rhs.atoms(sp.MatrixSymbol) if s.name.startswith("h'"))
    h = next(s for s in identity.rhs.atoms(sp.MatrixSymbol) if s.name.startswith("h_"))
    W_U = next(s for s in identity.rhs.atoms(sp.MatrixSymbol) if s.name == "W_U")
    assert is_zero(identity.rhs.xreplace({h_new: sp.ZeroMatrix(*h_new.shape)}) + h * W_U)


def test_the_refutation_leaves_the_scale_change_and_vanishes_when_frozen():
    ref = iv.live_final_norm_patching_refutation()
    assert ref.claim == "patching.direct_effect (live final norm)" and not is_zero(ref.remainder)
    S_new = next(s for s in ref.remainder.free_symbols if getattr(s, "name", "") == "S'_{f}^{-1}")
    assert is_zero(ref.remainder.xreplace({S_new: Readout("layernorm").left}))


@pytest.mark.parametrize("seed", range(3))
def test_live_remainder_is_the_true_change_minus_the_frozen_effect(seed):
    """With torch's LayerNorm recomputed on x_L - h + h', true change = S^{-1} (h' - h) C G W_U + the remainder."""
    g = torch.Generator().manual_seed(seed)
    x, h, h_new = 2 * _rand(g, B, P, D), _rand(g, B, P, D), _rand(g, B, P, D)
    gain, bias, W_U = _rand(g, D), _rand(g, D), _rand(g, D, V)
    patched = x - h + h_new
    env = {"x_{L}": x, "h_{L - 1,h}": h, "h'_{L - 1,h}": h_new, "C": torch.eye(D, dtype=torch.float64) - 1.0 / D,
           "G_{f}": torch.diag(gain), "W_U": W_U, "S_{f}^{-1}": torch.diag_embed((x.var(-1, unbiased=False) + EPS).rsqrt()),
           "S'_{f}^{-1}": torch.diag_embed((patched.var(-1, unbiased=False) + EPS).rsqrt())}
    true_change = (F.layer_norm(patched, (D,), gain, bias, EPS) - F.layer_norm(x, (D,), gain, bias, EPS)) @ W_U
    ref = iv.live_final_norm_patching_refutation()
    frozen, remainder = compile_expr(ref.failing.expr)(env), compile_expr(ref.remainder)(env)
    torch.testing.assert_close(frozen + remainder, true_change, rtol=1e-12, atol=1e-12)
    assert (remainder.abs().max() / true_change.abs().max()) > 1e-3


def test_the_catalogue_holds_the_identities_and_the_refutation():
    ids = {i.id for i in catalogue.general()}
    assert {"patching.direct_effect[l=L - 1,h=h]", "patching.direct_effect[l=L - 1,h=h,layernorm frozen]"} <= ids
    assert "patching.direct_effect (live final norm)" in [r.claim for r in catalogue.refutations()]
    with pytest.raises(ValueError, match="final_norm='batchnorm'"):
        iv.patching_direct_effect(final_norm="batchnorm")
