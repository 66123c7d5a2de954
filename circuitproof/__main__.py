"""The main job: ``python -m circuitproof``.

For now it builds a random model from a small default :class:`~circuitproof.Arch`,
runs the reference forward pass and prints a readable summary of its Trace.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="circuitproof", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and tokens")
    parser.add_argument("--positions", type=int, default=8, help="sequence length")
    args = parser.parse_args(argv)
    console = Console()
    arch = DEFAULT_ARCH
    weights = Weights.random(arch, args.seed)
    tokens = torch.randint(0, arch.d_vocab, (1, args.positions), generator=torch.Generator().manual_seed(args.seed))
    summarise(run(arch, weights, tokens), console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
