"""The gauge matrices: invertible, well conditioned, one per layer and key/value head, and commuting with rotary where they must."""

from __future__ import annotations

import pytest
import torch

from circuitproof import Arch
from circuitproof.numeric.reference import rotary
from circuitproof.properties._transforms import gauge_matrices

ARCHS = [
    Arch(n_layers=2, n_heads=4, n_kv_heads=2, d_head=3),
    Arch(n_layers=3, n_heads=2, d_head=6, positional="rotary", rotary_dim=4),
    Arch(n_heads=3, n_kv_heads=1, d_head=4, positional="rotary", rotary_style="interleaved"),
    Arch(n_heads=2, d_head=4, positional="rotary", norm="rmsnorm", qk_norm="per_head"),
]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.describe()[:50])
@pytest.mark.parametrize("general_qk", [False, True])
def test_gauge_matrices_are_well_conditioned_per_layer_and_key_value_head(arch, general_qk):
    M, N, note = gauge_matrices(arch, general_qk=general_qk)
    shape = (arch.n_layers, arch.n_kv_heads, arch.d_head, arch.d_head)
    assert M.shape == shape and N.shape == shape and M.dtype == N.dtype == torch.float64
    assert float(torch.linalg.cond(N).max()) <= 12 and float(torch.linalg.cond(M).max()) <= 12
    assert not torch.equal(N[0, 0], N[-1, -1]) or arch.n_layers * arch.n_kv_heads == 1
    M2, N2, _ = gauge_matrices(arch, general_qk=general_qk)
    assert torch.equal(M, M2) and torch.equal(N, N2)  # seeded: the same matrices every call
    if general_qk or (arch.positional != "rotary" and arch.qk_norm == "none"):
        assert note == "M general"
    elif arch.qk_norm != "none":
        assert torch.equal(M, torch.eye(arch.d_head, dtype=torch.float64).expand(shape))
    else:
        # M commutes with the rotation of every position: rotating x M is rotating x, then M
        x = torch.randn(1, 5, 1, arch.d_head, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for l in range(arch.n_layers):
            for k in range(arch.n_kv_heads):
                torch.testing.assert_close(rotary(arch, x @ M[l, k], torch.arange(5)), rotary(arch, x, torch.arange(5)) @ M[l, k],
                                           rtol=1e-13, atol=1e-13)
