"""The main job: by default the shipped induction model's head table and completion; ``--random`` a trace summary."""

from __future__ import annotations

import pytest

from circuitproof.__main__ import DEFAULT_ARCH, main


def test_main_loads_the_shipped_model_and_names_its_heads(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "the shipped induction model" in out and "2L x 2H" in out
    assert "repeated half: predicts the next token at 100.0%" in out
    for column in ("copying", "previous", "induction", "composition"):  # the head table's headers, one word a line
        assert column in out
    assert "previous-token head: L0H0" in out and "induction head: L1H" in out


def test_main_refuses_a_sequence_too_short_to_repeat(capsys):
    with pytest.raises(SystemExit):
        main(["--positions", "3"])
    assert "at least 4 positions" in capsys.readouterr().err


def test_main_random_prints_the_trace_summary(capsys):
    assert main(["--random", "--seed", "1", "--positions", "5"]) == 0
    out = capsys.readouterr().out
    assert "2L x 4H (2 kv)" in out
    assert "residual stream" in out and "heads (first sequence)" in out and "next-token prediction" in out
    assert out.count("│") >= 3 * DEFAULT_ARCH.n_layers * DEFAULT_ARCH.n_heads
