"""The training run's account: the figure (matplotlib, imported only here) and the markdown page.

:func:`plot` draws the loss on each half against the step, with the step at which the
induction head forms marked, above the attention diagnostics; :func:`markdown` renders
docs/trained-induction.md from the run's record (the JSON written beside the weights), so
the page's numbers are the record's; :func:`summary` is the one-paragraph console report.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["markdown", "plot", "summary"]


def _smooth(values: list[float], width: int = 10) -> list[float]:
    """Trailing mean over ``width`` steps (the per-step batch losses are noisy)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def plot(result, path: str | Path) -> None:
    """Write the training curve of ``result`` (a :class:`~.train_induction.Result`) to ``path`` (PNG)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result.config
    steps = [s["step"] for s in result.steps]
    ev_steps = [e["step"] for e in result.evals]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.2), sharex=True, height_ratios=[3, 2])
    top.plot(steps, _smooth([s["first"] for s in result.steps]), color="tab:blue", lw=1.4, label="first half (fresh tokens)")
    top.plot(steps, _smooth([s["repeated"] for s in result.steps]), color="tab:red", lw=1.4, label="repeated half")
    top.axhline(math.log(cfg.d_vocab), color="grey", ls=":", lw=1, label=f"log d_vocab = {math.log(cfg.d_vocab):.2f}")
    top.set_ylabel("next-token loss (nats, batch, 10-step mean)")
    top.set_ylim(bottom=0)
    bottom.plot(ev_steps, [max(e["prev_token"][0]) for e in result.evals], color="tab:green", lw=1.4,
                label="previous-token score, best layer-0 head")
    bottom.plot(ev_steps, [max(e["induction"][1]) for e in result.evals], color="tab:purple", lw=1.4,
                label="induction score, best layer-1 head")
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("mean attention (eval batch)")
    bottom.set_xlabel("step")
    formed = result.formed_step
    if formed is not None:
        for ax in (top, bottom):
            ax.axvline(formed, color="black", ls="--", lw=1)
        top.annotate(f"induction head forms (step {formed})", xy=(formed, top.get_ylim()[1] * 0.55), xytext=(8, 0),
                     textcoords="offset points", fontsize=9)
    top.legend(loc="upper right", fontsize=8)
    bottom.legend(loc="lower right", fontsize=8)
    top.set_title(f"two-layer attention-only transformer on repeated random sequences (seed {cfg.seed})", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _heads_table(record: dict) -> list[str]:
    final = record["final"]
    rows = ["| layer | head | previous-token score | induction score |", "| --- | --- | --- | --- |"]
    for layer, (prev, ind) in enumerate(zip(final["prev_token"], final["induction"])):
        for head, (p, i) in enumerate(zip(prev, ind)):
            rows.append(f"| {layer} | {head} | {p:.3f} | {i:.3f} |")
    return rows


def _kcomp_table(record: dict) -> list[str]:
    kc = record["final"]["k_composition"]
    rows = ["| layer-0 head \\ layer-1 head | " + " | ".join(str(h) for h in range(len(kc[0]))) + " |",
            "| --- " * (len(kc[0]) + 1) + "|"]
    rows += [f"| {h0} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for h0, row in enumerate(kc)]
    return rows


def markdown(record: dict, *, plot: str | Path | None = None, doc: str | Path | None = None) -> str:
    """docs/trained-induction.md from the run's record (``plot`` linked relative to ``doc``)."""
    cfg, final, f = record["config"], record["final"], record.get("file", {})
    figure = ""
    if plot is not None:
        rel = os.path.relpath(plot, Path(doc).parent) if doc is not None else str(plot)
        figure = f"![training curve]({Path(rel).as_posix()})\n"
    hp = " ".join(f"`{k}={v}`" for k, v in cfg.items())
    lines = [
        "# The trained induction model",
        "",
        "`circuitproof.numeric.trained.load_induction()` returns a two-layer attention-only transformer",
        "trained on repeated random sequences, in which a previous-token head (layer 0) and an induction",
        "head (layer 1) formed by gradient descent: the ground truth the head signatures are tested against.",
        "This page is written by the training script from its record (`induction_2l.json`, beside the weights).",
        "",
        "Reproduce (one CPU thread, deterministic by seed):",
        "",
        "```",
        "python -m circuitproof.numeric.trained.train_induction \\",
        "    --out circuitproof/numeric/trained/induction_2l.safetensors \\",
        "    --plot docs/induction-training.png --doc docs/trained-induction.md",
        "```",
        "",
        f"Architecture: `{record['arch']}` ({record['n_parameters']:,} parameters, float32).",
        "",
        f"Hyperparameters: {hp}.",
        "",
        "## Result",
        "",
        "| quantity | value |",
        "| --- | --- |",
        f"| steps | {cfg['steps']} |",
        f"| wall time (1 thread) | {record['wall_s']:.1f} s |",
        f"| induction head forms (first eval with a layer-1 induction score >= 0.5) | step {record['formed_step']} |",
        f"| loss, first half (eval batch) | {final['first']:.4f} nats (log d_vocab = {record['log_d_vocab']:.4f}) |",
        f"| loss, repeated half (eval batch) | {final['repeated']:.4f} nats |",
        f"| top-1 accuracy, repeated half | {final['accuracy']:.4f} |",
        f"| weights file | `{f.get('name', '?')}`, {f.get('bytes', 0):,} bytes, sha256 `{f.get('sha256', '?')[:16]}...` |",
        f"| torch | {record['torch']} |",
        "",
        figure,
        "Attention diagnostics on the evaluation batch (128 sequences of the training distribution, fixed seed):",
        "the previous-token score is the mean attention from `i` to `i-1` over all positions, the induction",
        "score the mean attention from `i` in the repeated half to `i-T+1`, the token after the earlier",
        "occurrence of `t_i`.",
        "",
        *_heads_table(record),
        "",
        "K-composition of each layer-0 head into each layer-1 head,",
        "`|W_QK^{1,h'} (W_OV^{0,h})^T|_F / (|W_QK^{1,h'}|_F |W_OV^{0,h}|_F)` (row convention):",
        "",
        *_kcomp_table(record),
        "",
        "## Why the data and the initialisation are as they are",
        "",
        "- **Varying length and offset.** With a fixed half-length `T`, one head attending to `i - T + 1`",
        "  solves the task by position alone; `T ~ U{2..16}` at a random start leaves only content.",
        "- **Noise outside the segment** is drawn from the tokens not in it, so that every earlier",
        "  occurrence is unique and the repeated half is fully determined (loss 0 at best).",
        "- **Two circuits solve the task.** Besides the K-composition circuit above, a layer-0",
        "  *duplicate-token* head can copy the earlier occurrence's position and the layer-1 query shift it",
        "  by one (Q-composition through the learned positions). With `Weights.random`'s initialisation",
        "  (standard normal `W_E`) gradient descent found that circuit for every seed we tried; a smaller `W_E`",
        "  (`embed_init`) tips it towards the previous-token head, and sinusoidal initial positions",
        "  (`pos_base`) make that head a clean `i -> i-1` map at every position it is trained on.",
        "- **The last two positions.** A key at position `j` serves an induction match only for a query",
        f"  at `j + T - 1 <= n_ctx - 2`, so the layer-0 attention of the last `T_min = {cfg['half_min']}` positions is never",
        "  shaped by the loss; the previous-token score above averages over them too.",
        "",
    ]
    return "\n".join(lines)


def summary(record: dict) -> str:
    """A few lines for the console."""
    final = record["final"]
    return (f"{record['arch']}\n"
            f"wall {record['wall_s']:.1f} s; induction head formed at step {record['formed_step']}\n"
            f"loss first half {final['first']:.4f} (log V = {record['log_d_vocab']:.4f}), repeated half {final['repeated']:.4f}, "
            f"accuracy {final['accuracy']:.4f}\n"
            f"prev-token {final['prev_token']}\ninduction {final['induction']}\nK-composition {final['k_composition']}")
