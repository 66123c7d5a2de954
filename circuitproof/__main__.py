"""The main job: ``python -m circuitproof``.

By default it loads the shipped two-layer induction model
(:func:`circuitproof.numeric.trained.load_induction`), runs the reference forward pass on
repeated random tokens, prints its head table (:func:`circuitproof.numeric.signatures.head_table`:
copying, previous-token, duplicate-token and induction scores, Q/K/V composition,
positional QK), names the previous-token and induction heads, and shows how well it
completes the repeated half. ``--random`` instead builds a random model from a small
default :class:`~circuitproof.Arch` and prints a summary of its Trace.
"""

from __future__ import annotations

import argparse
import sys

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import Arch
from .numeric import Trace, Weights, run

DEFAULT_ARCH = Arch(n_layers=2, n_heads=4, n_kv_heads=2, d_model=16, d_head=4, d_mlp=32, d_vocab=32, n_ctx=16,
                    positional="rotary", norm="rmsnorm", gated=True, act="silu", mlp_bias=False)


def summarise(trace: Trace, console: Console) -> None:
    """Print the trace's streams, heads and logits as tables."""
    arch = trace.arch
    console.print(f"[bold]Arch[/bold]  {escape(repr(arch))}")
    console.print(f"      {escape(arch.describe())}")
    console.print(f"[bold]tokens[/bold] {trace.tokens.tolist()}  ({trace.logits.dtype})")

    streams = Table(title="residual stream (norm of x_l, mean over positions)")
    for col in ("layer", "|x_l|", "|attn_l|", "|mlp_l|", "|x_l+1|"):
        streams.add_column(col, justify="right")
    for l in range(arch.n_layers):
        mlp = f"{trace.mlp_out[l].norm(dim=-1).mean():.3f}" if trace.mlp_out is not None else "-"
        streams.add_row(
            str(l),
            f"{trace.resid_pre[l].norm(dim=-1).mean():.3f}",
            f"{trace.attn_out[l].norm(dim=-1).mean():.3f}",
            mlp,
            f"{trace.resid_post[l].norm(dim=-1).mean():.3f}",
        )
    console.print(streams)

    heads = Table(title="heads (first sequence)")
    for col in ("layer", "head", "kv head", "attends most (last query)", "pattern entropy", "|head out|"):
        heads.add_column(col, justify="right")
    for l in range(arch.n_layers):
        for h in range(arch.n_heads):
            row = trace.pattern[l, 0, h, -1]
            entropy = -(row.clamp_min(1e-300).log() * row).sum()
            heads.add_row(str(l), str(h), str(h // arch.group_size), f"pos {int(row.argmax())} ({row.max():.2f})",
                          f"{entropy:.3f}", f"{trace.head_out[l, 0, :, h].norm(dim=-1).mean():.3f}")
    console.print(heads)

    probs = trace.logits[0, -1].softmax(-1)
    top = probs.topk(min(5, arch.d_vocab))
    console.print("[bold]next-token prediction[/bold] (last position): "
                  + ", ".join(f"{int(i)}: {p:.3f}" for p, i in zip(top.values, top.indices)))
    console.print(f"norms traced: {sorted(trace.norms) or 'none'}")


def induction_report(seed: int, half: int, console: Console) -> None:
    """The shipped induction model: its head table, the heads it names, and its completion of a repeated sequence.

    Accuracy on the repeated half: the fraction of positions ``i`` of the second copy
    (``half <= i < 2 half - 1``) where ``argmax logits[i] = t[i + 1]``, the token that
    followed the earlier occurrence of ``t[i]``.
    """
    from .numeric.circuits import repeated_sequence
    from .numeric.signatures import head_table
    from .numeric.trained import induction_record, load_induction

    arch, weights = load_induction()
    record = induction_record()
    console.print(f"[bold]the shipped induction model[/bold]  {escape(repr(arch))}")
    console.print(f"      {escape(arch.describe())}; trained by `python -m circuitproof.numeric.trained.train_induction` "
                  f"(seed {record['config']['seed']}, {record['config']['steps']} steps)")
    tokens = repeated_sequence(arch.d_vocab, half, seed=seed)  # [1, 2 half]
    trace = run(arch, weights, tokens)
    predicted = trace.logits[0, half:-1].argmax(-1)
    accuracy = float((predicted == tokens[0, half + 1:]).double().mean())
    console.print(f"[bold]tokens[/bold] {tokens[0].tolist()}")
    console.print(f"repeated half: predicts the next token at {accuracy:.1%} of {half - 1} positions "
                  f"(first half: {float((trace.logits[0, :half - 1].argmax(-1) == tokens[0, 1:half]).double().mean()):.1%}, chance "
                  f"{1 / arch.d_vocab:.1%})")
    table = head_table(arch, weights)
    console.print(table)
    (prev,), (ind,) = table.top("previous_token", 1), table.top("induction", 1)
    console.print(f"previous-token head: L{prev.layer}H{prev.head} ({prev.value:.3f}); induction head: L{ind.layer}H{ind.head} "
                  f"({ind.value:.3f}); K-composition L{prev.layer}H{prev.head} -> L{ind.layer}H{ind.head}: "
                  f"{float(table.composition['k'][prev.layer, prev.head, ind.layer, ind.head]):.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="circuitproof", description=__doc__.splitlines()[0])
    parser.add_argument("--random", action="store_true", help="a random model of a small default Arch instead of the shipped one")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tokens (and, with --random, of the weights)")
    parser.add_argument("--positions", type=int, default=None,
                        help="sequence length (default: 8 with --random; the shipped model reads 2 x 12 repeated tokens)")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)  # a pipe or CI log: wide enough for the head table
    if not args.random:
        half = (args.positions or 24) // 2
        if half < 2:
            parser.error(f"--positions {args.positions}: the shipped model needs at least 4 positions (two copies of two tokens)")
        induction_report(args.seed, half, console)
        return 0
    arch = DEFAULT_ARCH
    weights = Weights.random(arch, args.seed)
    tokens = torch.randint(0, arch.d_vocab, (1, args.positions or 8), generator=torch.Generator().manual_seed(args.seed))
    summarise(run(arch, weights, tokens), console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
