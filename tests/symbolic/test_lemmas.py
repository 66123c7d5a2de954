"""Soundness of the named lemmas the derivations use, checked numerically in float64."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from circuitproof import Arch
from circuitproof.numeric.reference import rotary
from circuitproof.symbolic import attention


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@given(st.integers(1, 8), st.integers(0, 2**16))
def test_rows_of_a_softmax_sum_to_one(n, seed):
    """Lemma 'rows of A sum to one': A 1 = 1 for A = softmax(mask(S)) with at least one key visible per row."""
    scores = 5 * torch.randn(n, n, generator=_gen(seed), dtype=torch.float64)
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool))
    A = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    torch.testing.assert_close(A @ torch.ones(n, 1, dtype=torch.float64), torch.ones(n, 1, dtype=torch.float64), rtol=0, atol=1e-15)


@given(st.integers(1, 8), st.integers(0, 2**16))
def test_terms_constant_along_the_key_axis_cancel_in_softmax(n, seed):
    """What key_bias_invariance relies on: softmax_j(S_ij + u_i) = softmax_j(S_ij)."""
    g = _gen(seed)
    S, u = torch.randn(n, n, generator=g, dtype=torch.float64), torch.randn(n, 1, generator=g, dtype=torch.float64)
    ones_row = torch.ones(1, n, dtype=torch.float64)
    torch.testing.assert_close(torch.softmax(S + u @ ones_row, -1), torch.softmax(S, -1), rtol=1e-14, atol=1e-15)
    # and a term that varies along the key axis does not cancel
    assert not torch.allclose(torch.softmax(S + ones_row.T @ u.T, -1), torch.softmax(S, -1)) or n == 1


@given(st.sampled_from(["half", "interleaved"]), st.integers(0, 2**16), st.integers(0, 7), st.integers(0, 7))
def test_rotations_compose_as_the_rotary_lemma_says(style, seed, i, j):
    """Lemma 'rotations compose': R(i) R(j)^T = R(i - j), R(p) the reference's rotary map as a matrix (rows act on rows)."""
    arch = Arch(positional="rotary", d_head=6, rotary_dim=4, rotary_style=style)

    def R(p: int) -> torch.Tensor:  # the matrix of x -> rotary(x, position p) in the row convention: x R
        basis = torch.eye(6, dtype=torch.float64).reshape(6, 1, 1, 6)  # 6 sequences of one position, one head
        return rotary(arch, basis, torch.tensor([p]))[:, 0, 0, :]

    torch.testing.assert_close(R(i) @ R(j).T, R(i - j), rtol=1e-13, atol=1e-13)


def test_the_rotation_lemma_is_the_one_the_derivation_uses():
    assert attention.ROTATIONS_COMPOSE.kind == "lemma" and "R(i - j)" in attention.ROTATIONS_COMPOSE.doc
