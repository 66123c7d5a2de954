"""The shipped induction model: what docs/trained-induction.md says it is, and what the training script makes.

Measured on fresh repeated random sequences (``repeated_sequence``: 16 distinct tokens, then
the same 16 again, filling the context; seeds unrelated to training), in float64:

- repeated-half loss < 0.1 nats. The shipped run measures ~0.03; the floor is 0 (every target
  is determined) and chance is log 64 = 4.16, so 0.1 is "near zero" with room for the sample.
- first-half loss within 0.3 of log d_vocab. Its targets are fresh uniform draws among the
  unseen tokens: no predictor beats about log(64 - 16) = 3.87 and an uninformed one gets 4.16;
  the shipped run measures ~4.25 (it spreads a little mass on seen tokens).
- a layer-0 head with mean attention to ``i - 1`` > 0.9 over every position (measured 0.93; the
  last two positions are never keys of an induction match in training, so their attention is
  untrained, see the docs) and > 0.97 over the positions the loss shapes (measured 0.99).
- a layer-1 head with mean attention > 0.9 from the repeated half to the token after the earlier
  occurrence (measured 0.98).

Training is checked for determinism on 30-step runs (seconds), never in full; the first steps of
the shipped run are retraced to a relative 1e-3 (float32 reductions may round differently on
another CPU or BLAS; a different seed moves the losses by far more, checked below).
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from circuitproof import Arch
from circuitproof.numeric import Weights, run
from circuitproof.numeric.circuits import repeated_sequence
from circuitproof.numeric.trained import INDUCTION_WEIGHTS, induction_record, load_induction
from circuitproof.numeric.trained.train_induction import Config, diagnostics, k_composition, main, sample_batch, train

DOCUMENTED_ARCH = Arch(n_layers=2, n_heads=2, d_model=64, d_head=32, d_vocab=64, n_ctx=32, norm="none", attn_only=True)
HALF = 16
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def model() -> tuple[Arch, Weights]:
    return load_induction()


@pytest.fixture(scope="module")
def repeated(model):
    arch, weights = model
    tokens = repeated_sequence(arch.d_vocab, HALF, seed=1234, batch=64)  # [64, 32]
    return tokens, run(arch, weights, tokens)  # float64


def _shipped_bytes() -> bytes:
    return (resources.files("circuitproof.numeric.trained") / INDUCTION_WEIGHTS).read_bytes()


# ------------------------------------------------------------------ the file
def test_the_shipped_weights_load_with_the_documented_arch(model):
    arch, weights = model
    assert arch == DOCUMENTED_ARCH == Config().arch()
    assert weights.arch == arch and weights.dtype == torch.float32
    assert repr(arch) == induction_record()["arch"]


def test_the_shipped_file_is_under_one_megabyte_and_is_the_recorded_one():
    data = _shipped_bytes()
    assert len(data) < 1_000_000
    recorded = induction_record()["file"]
    assert recorded["bytes"] == len(data)
    assert recorded["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_docs_page_is_the_record_of_the_shipped_run():
    record = induction_record()
    page = (DOCS / "trained-induction.md").read_text()
    assert record["file"]["sha256"][:16] in page
    assert f"{record['final']['repeated']:.4f}" in page
    assert (DOCS / "induction-training.png").stat().st_size > 0


# ------------------------------------------------------------- the behaviour
def test_the_repeated_half_is_predicted_and_the_first_half_is_at_chance(repeated):
    tokens, trace = repeated
    nll = F.cross_entropy(trace.logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")  # [B, P-1]: query i predicts t_{i+1}
    first, rep = nll[:, :HALF].mean().item(), nll[:, HALF:].mean().item()
    assert rep < 0.1, f"repeated-half loss {rep:.4f}"
    assert abs(first - math.log(64)) < 0.3, f"first-half loss {first:.4f}, log V = {math.log(64):.4f}"
    accuracy = (trace.logits[:, HALF:-1].argmax(-1) == tokens[:, HALF + 1 :]).double().mean().item()
    assert accuracy > 0.99


def test_layer_0_has_a_previous_token_head(repeated):
    _, trace = repeated
    to_previous = trace.pattern[0].diagonal(offset=-1, dim1=-2, dim2=-1)  # [B, H, P-1]: A[i, i-1], i = 1..P-1
    trained = 2 * HALF - 1 - Config().half_min  # queries 1..P-1-T_min: the keys an induction match can use
    assert to_previous.mean(dim=(0, 2)).max() > 0.9
    assert to_previous[..., :trained].mean(dim=(0, 2)).max() > 0.97


def test_layer_1_has_an_induction_head(repeated):
    _, trace = repeated
    # query i = HALF + r attends to key r + 1, the token after the earlier occurrence of t_i = t_r
    after = trace.pattern[1][..., HALF:, :].diagonal(offset=1, dim1=-2, dim2=-1)  # [B, H, HALF]
    assert after.mean(dim=(0, 2)).max() > 0.9


def test_the_strongest_k_composition_is_from_the_previous_token_head_into_an_induction_head(repeated, model):
    _, weights = model
    _, trace = repeated
    prev_head = int(trace.pattern[0].diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2)).argmax())
    induction = trace.pattern[1][..., HALF:, :].diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=(0, 2))  # [H]
    kc = k_composition(weights)  # [H_0, H_1]
    h0, h1 = divmod(int(kc.argmax()), kc.shape[1])
    assert h0 == prev_head and induction[h1] > 0.9, (kc, induction)


def test_the_recorded_diagnostics_hold_on_a_fresh_batch_of_the_training_distribution(model):
    _, weights = model
    cfg = Config()
    fresh = diagnostics(weights.to(torch.float64), *sample_batch(cfg, 256, torch.Generator().manual_seed(7)))
    assert fresh["repeated"] < 0.1
    assert max(fresh["prev_token"][0]) > 0.9 and max(fresh["induction"][1]) > 0.9


# --------------------------------------------------------------- the training
@pytest.fixture(scope="module")
def short_runs() -> dict[str, object]:
    return {"a": train(Config(seed=0), until=30), "b": train(Config(seed=0), until=30), "other": train(Config(seed=1), until=30)}


def test_training_is_deterministic_by_seed(short_runs):
    a, b, other = short_runs["a"], short_runs["b"], short_runs["other"]
    assert a.weights.equal(b.weights)
    assert [s["loss"] for s in a.steps] == [s["loss"] for s in b.steps]
    assert not a.weights.equal(other.weights)


def test_training_restores_the_callers_thread_count_and_determinism_flag():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train(Config(seed=0), until=1)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_the_script_retraces_the_first_steps_of_the_shipped_run(short_runs):
    recorded = induction_record()["first_steps"]
    ours = [s["loss"] for s in short_runs["a"].steps[: len(recorded)]]
    assert ours == pytest.approx(recorded, rel=1e-3)
    other = [s["loss"] for s in short_runs["other"].steps[: len(recorded)]]
    assert other != pytest.approx(recorded, rel=1e-3)  # the tolerance tells seeds apart


def test_the_command_line_writes_weights_record_plot_and_page(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "w.safetensors"
    assert main(["--steps", "3", "--quiet", "--out", str(out), "--plot", str(tmp_path / "c.png"), "--doc", str(tmp_path / "p.md")]) == 0
    weights = Weights.load(out)
    assert weights.arch == DOCUMENTED_ARCH
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["config"]["steps"] == 3 and len(record["first_steps"]) == 3
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "c.png" in (tmp_path / "p.md").read_text()


def test_the_signatures_find_the_circuit_in_the_shipped_model():
    """circuitproof.numeric.signatures.head_table on the shipped weights: the top previous-token head is in layer 0, the
    top induction head in layer 1, and the largest K-composition runs from that previous-token head into that
    induction head (on the model's own probe sequences, repeated random tokens)."""
    import torch

    from circuitproof.numeric.signatures import head_table
    from circuitproof.numeric.trained import load_induction

    arch, w = load_induction()
    table = head_table(arch, w)
    (prev,) = table.top("previous_token", 1)
    (ind,) = table.top("induction", 1)
    assert prev.layer == 0 and prev.value > 0.9, table.to_markdown()
    assert ind.layer == 1 and ind.value > 0.9, table.to_markdown()
    k = torch.nan_to_num(table.composition["k"], nan=-1.0)  # [L1, H1, L2, H2]; NaN where h1 is not earlier than h2
    top = tuple(int(i) for i in torch.unravel_index(k.argmax(), k.shape))
    assert top == (prev.layer, prev.head, ind.layer, ind.head), (top, table.to_markdown())
    assert k.max() > 1.5 * k[0, 1 - prev.head].max(), "the previous-token head composes clearly more than the other layer-0 head"
