"""The speed benchmark runs and reports what the README says it reports (a few examples: nothing here is timed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "claims_per_second.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("claims_per_second", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_figures_say_whether_the_target_is_met_and_each_claims_share(benchmark, capsys):
    from circuitproof.properties.claims import CLAIMS

    rate = benchmark.reference(4, 1, by_claim=True)
    out, err = capsys.readouterr()
    assert rate > 0
    for row in ("draw (Hypothesis)", "full: + every claim", "full, no gc.freeze", "forward alone (the floor)", "passes of the full check"):
        assert row in out
    target = next(line for line in out.splitlines() if "target 200 archs/s" in line)
    assert ("best pass met" in target) == (rate >= benchmark.TARGET) and "of 1 passes at or above it" in target
    table = out.split("by claim, without Hypothesis")[1]
    assert "weights + forward (Model.trace)" in table
    for claim_id in CLAIMS:  # every claim has its row, with its share of the time
        assert claim_id in table
    assert "FAIL or INCONCLUSIVE" not in err  # every claim passes or does not apply on the reference


def test_a_saved_workload_is_checked_by_the_code_it_is_given(benchmark, tmp_path, capsys):
    path = tmp_path / "workload.json"
    benchmark.save_workload(str(path), 3)
    drawn = benchmark._read_workload(str(path), __import__("circuitproof"))
    assert len(drawn) == 3 and all(tokens.dim() == 2 for _, _, tokens in drawn)
    benchmark.fixed_workload(str(path), 1)
    assert "weights + forward + every claim" in capsys.readouterr().out


def test_counting_torch_calls_gives_each_claims_count_the_same_twice_and_restores_the_forward_pass(benchmark, tmp_path, capsys):
    from circuitproof.numeric import reference
    from circuitproof.properties.claims import CLAIMS

    path = tmp_path / "workload.json"
    benchmark.save_workload(str(path), 3)
    capsys.readouterr()
    forward = reference._forward
    benchmark.count_calls(str(path))
    first = capsys.readouterr().out
    benchmark.count_calls(str(path))
    second = capsys.readouterr().out
    assert reference._forward is forward  # the wrapper that counts the passes is taken off
    assert first == second  # a count, not a timing: the same code and examples give the same figures
    total = next(line for line in first.splitlines() if "torch calls an architecture in all" in line)
    calls, passes = float(total.split()[0]), float(total.split(";")[1].split()[0])
    assert calls > 0 and passes >= 1  # at least the trace's own forward pass, an example
    table = first.split("calls/arch")[1].splitlines()[1:]
    rows = {line.split()[0]: float(line.split()[-2]) for line in table if line.strip()}
    assert set(CLAIMS) <= set(rows) and rows["weights"] > 0  # every claim has its row; the trace's calls are counted
