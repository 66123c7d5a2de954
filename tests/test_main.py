"""The main job prints a readable summary of a reference trace."""

from __future__ import annotations

from circuitproof.__main__ import DEFAULT_ARCH, main


def test_main_prints_the_trace_summary(capsys):
    assert main(["--seed", "1", "--positions", "5"]) == 0
    out = capsys.readouterr().out
    assert "2L x 4H (2 kv)" in out
    assert "residual stream" in out and "heads (first sequence)" in out and "next-token prediction" in out
    assert out.count("│") >= 3 * DEFAULT_ARCH.n_layers * DEFAULT_ARCH.n_heads
