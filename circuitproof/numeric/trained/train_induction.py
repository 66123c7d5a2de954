"""Train a two-layer attention-only transformer until it grows an induction head.

Run ``python -m circuitproof.numeric.trained.train_induction [--seed N] [--steps N]
[--out PATH] [--plot PATH] [--doc PATH]``; the shipped ``induction_2l.safetensors``
and its record ``induction_2l.json`` beside this file were made by::

    python -m circuitproof.numeric.trained.train_induction \\
        --out circuitproof/numeric/trained/induction_2l.safetensors \\
        --plot docs/induction-training.png --doc docs/trained-induction.md

**The data.** Each sequence of ``n_ctx = 2 T_max`` tokens draws a half-length
``T ~ U{T_min, ..., T_max}``, a start ``o ~ U{0, ..., n_ctx - 2T}``, ``T`` distinct tokens
``s_0 .. s_{T-1}`` (a prefix of a uniform random permutation of the ``V = d_vocab`` ids)
and reads::

    t_p = s_{(p - o) mod T}   for o <= p < o + 2T   (the segment, then the same segment again)
    t_p ~ U(noise tokens)     elsewhere              (noise, outside the loss)

The noise tokens are the ``V - T_max`` ids outside the segment, so that every segment
token's earlier occurrence is unique. Because ``T`` and ``o`` vary from sequence to
sequence, no fixed positional offset finds the earlier copy: the repeated half can only
be predicted by content, by an induction head (attend to the token after the earlier
occurrence of the current token, copy it).

**The loss.** Next-token cross-entropy over the query positions of the segment that
have a target in it, ``Q = {i : 0 <= i - o <= 2T - 2}``::

    loss = mean_{b, i in Q} -log softmax(logits[b, i])[t_{i+1}]

reported apart on the first half, ``0 <= i - o <= T - 1``, whose targets are fresh draws
(``log(V - (i - o) - 1)`` at best for ``i - o < T - 1``: about ``log V``), and on the
repeated half, ``T <= i - o <= 2T - 2``, whose targets are determined
(``t_{i+1} = t_{i+1-T}``): 0 at best.

**The initialisation.** ``Weights.random(arch, seed)`` (float32), with ``W_E`` scaled by
``embed_init`` and ``W_pos`` replaced by sinusoids (``W_pos[p, 2k] = sqrt 2 sin(p w_k)``,
``W_pos[p, 2k+1] = sqrt 2 cos(p w_k)``, ``w_k = pos_base^(-2k / d_model)``), then learned.
Both choose which of two two-layer solutions gradient descent finds (docs/trained-induction.md):
the K-composition circuit (a previous-token head, then an induction head reading its output
in the keys), rather than a duplicate-token head in layer 0 whose copied *position* the
layer-1 query shifts by one (Q-composition through positions).

**The diagnostics** (on a fixed evaluation batch, per layer and head, from the
pattern ``A [L, B, H, P, P]``): the previous-token score ``mean_{i in 1..2T-1} A[i, i-1]``,
the induction score ``mean_{i in T..2T-1} A[i, i-T+1]`` (the key just after the earlier
occurrence of ``t_i``), and the K-composition of each layer-0 head into each layer-1
head, ``|W_QK^{1,h'} (W_OV^{0,h})^T|_F / (|W_QK^{1,h'}|_F |W_OV^{0,h}|_F)`` (row
convention: a key ``y W_OV`` enters the scores as ``x W_QK W_OV^T y^T``).

Training is deterministic by seed: the initial weights are ``Weights.random(arch,
seed)``, the batches come from one ``torch.Generator`` seeded with ``seed``, and
training runs on one thread with deterministic algorithms (restored afterwards), so
that the result does not depend on the core count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ...arch import Arch
from .._weights import Weights
from ..reference import run

__all__ = ["Config", "Result", "diagnostics", "k_composition", "losses", "main", "sample_batch", "train"]

EVAL_SEED = 20_240_601  # the evaluation batch is the same for every training seed
REPRODUCE_STEPS = 20  # the record keeps the first steps' losses exactly, to check a rerun against


@dataclass(frozen=True)
class Config:
    """Hyperparameters of one run (the model is always two attention-only layers, no norm); see the module docstring."""

    seed: int = 0
    steps: int = 3000
    batch: int = 32
    lr: float = 1e-2  # Adam, cosine decay to 0 over the steps
    d_vocab: int = 64
    half_min: int = 2
    half_max: int = 16  # n_ctx = 2 half_max
    n_heads: int = 2
    d_model: int = 64
    d_head: int = 32
    embed_init: float = 0.3  # W_E = embed_init * Weights.random's standard normal
    pos_base: float = 100.0  # W_pos starts as sinusoids with frequencies pos_base^(-2k / d_model)
    eval_every: int = 25
    eval_batch: int = 128

    def arch(self) -> Arch:
        """Two attention-only layers, learned positions, untied unembedding, no norm, no biases."""
        return Arch(n_layers=2, n_heads=self.n_heads, d_model=self.d_model, d_head=self.d_head, d_vocab=self.d_vocab,
                    n_ctx=2 * self.half_max, attn_only=True, norm="none", positional="learned")


@dataclass
class Result:
    """What :func:`train` produced: the weights, the loss on each half per step, the diagnostics per evaluation."""

    config: Config
    weights: Weights
    steps: list[dict] = field(default_factory=list)  # {"step", "loss", "first", "repeated"} after each update's forward
    evals: list[dict] = field(default_factory=list)  # {"step", "first", "repeated", "accuracy", "prev_token", "induction"}
    wall_s: float = 0.0

    @property
    def formed_step(self) -> int | None:
        """The first evaluated step at which some layer-1 head has induction score >= 0.5 (None: never)."""
        return next((e["step"] for e in self.evals if max(e["induction"][1]) >= 0.5), None)

    def record(self) -> dict:
        """A JSON-ready account of the run: config, Arch, final numbers, curve (every 10 steps), exact first steps."""
        last = self.evals[-1]
        return {
            "config": asdict(self.config),
            "arch": repr(self.config.arch()),
            "n_parameters": sum(t.numel() for t in self.weights.values()),
            "wall_s": round(self.wall_s, 2),
            "threads": 1,
            "torch": torch.__version__,
            "formed_step": self.formed_step,
            "log_d_vocab": math.log(self.config.d_vocab),
            "final": {**last, "k_composition": k_composition(self.weights).tolist()},
            "curve": [{k: (round(v, 5) if k != "step" else v) for k, v in s.items()} for s in self.steps[9::10]],
            "first_steps": [s["loss"] for s in self.steps[:REPRODUCE_STEPS]],
            "evals": self.evals,
        }


# ----------------------------------------------------------------------- data
def sample_batch(cfg: Config, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tokens [batch, n_ctx], start [batch], half [batch])``: noise, a segment of ``half`` distinct tokens at ``start``, the same again, noise.

    The noise is drawn from the tokens outside the segment, so that the earlier
    occurrence of every segment token is unique.
    """
    V, P = cfg.d_vocab, 2 * cfg.half_max
    half = torch.randint(cfg.half_min, cfg.half_max + 1, (batch,), generator=gen)  # [B]
    start = (torch.rand(batch, generator=gen) * (P - 2 * half + 1)).long()  # [B]: o in [0, P - 2T]
    perm = torch.rand(batch, V, generator=gen).argsort(dim=-1)  # [B, V]: a random permutation per row
    segment, outside = perm[:, : cfg.half_max], perm[:, cfg.half_max :]  # distinct; the rest
    noise = outside.gather(1, torch.randint(V - cfg.half_max, (batch, P), generator=gen))  # [B, P]
    rel = torch.arange(P)[None, :] - start[:, None]  # [B, P]: position relative to the segment
    repeated = segment.gather(1, rel.clamp(min=0) % half[:, None])  # t_p = s_{(p - start) mod T}
    inside = (rel >= 0) & (rel < 2 * half[:, None])
    return torch.where(inside, repeated, noise), start, half


def _halves(start: torch.Tensor, half: torch.Tensor, n_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query masks ``[B, n_pos]``: the first half ``0 <= i - start < T`` and the repeated half ``T <= i - start <= 2T-2``."""
    rel = torch.arange(n_pos)[None, :] - start[:, None]
    T = half[:, None]
    return (rel >= 0) & (rel < T), (rel >= T) & (rel <= 2 * T - 2)


def losses(logits: torch.Tensor, tokens: torch.Tensor, start: torch.Tensor, half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, first, repeated)``: mean next-token cross-entropy over both halves, the first, the repeated.

    logits [B, P, V], tokens [B, P], start and half [B]; query ``i`` predicts ``t_{i+1}``.
    """
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")  # [B, P-1]
    first, rep = _halves(start, half, nll.shape[1])
    return nll[first | rep].mean(), nll[first].mean(), nll[rep].mean()


# ---------------------------------------------------------------- diagnostics
def attention_scores(pattern: torch.Tensor, start: torch.Tensor, half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prev_token, induction)``, each ``[L, H]``, from the pattern ``[L, B, H, P, P]`` of repeated sequences.

    prev_token: ``mean_{b, 1 <= i < P} A[i, i-1]`` (every position);
    induction: ``mean_{b, T <= i - start <= 2T-1} A[i, i-T+1]`` (the repeated half).
    """
    L, B, H, P, _ = pattern.shape
    prev = pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 3))  # A[i, i-1], i = 1..P-1
    i = torch.arange(P)[None, :]
    rel, T = i - start[:, None], half[:, None]
    key = (i - T + 1).clamp(min=0)  # [B, P]: the token after the earlier occurrence
    after = pattern.gather(-1, key[None, :, None, :, None].expand(L, B, H, P, 1))[..., 0]  # [L, B, H, P]
    mask = ((rel >= T) & (rel <= 2 * T - 1)).to(pattern.dtype)  # [B, P]
    induction = (after * mask[None, :, None]).sum(dim=(1, 3)) / mask.sum()
    return prev, induction


def k_composition(weights: Weights) -> torch.Tensor:
    """``[H_0, H_1]``: how much each layer-1 head's keys read what each layer-0 head writes (module docstring)."""
    W_OV = weights.W_V[0] @ weights.W_O[0]  # [H, D, D]
    W_QK = weights.W_Q[1] @ weights.W_K[1].transpose(-1, -2)  # [H, D, D]
    prod = W_QK[None] @ W_OV[:, None].transpose(-1, -2)  # [H_0, H_1, D, D]: W_QK^{1,h'} (W_OV^{0,h})^T
    norms = W_OV.flatten(1).norm(dim=-1)[:, None] * W_QK.flatten(1).norm(dim=-1)[None, :]
    return (prod.flatten(2).norm(dim=-1) / norms).detach()


@torch.no_grad()
def diagnostics(weights: Weights, tokens: torch.Tensor, start: torch.Tensor, half: torch.Tensor) -> dict:
    """Losses on each half, repeated-half accuracy and the attention scores per head, on one batch."""
    trace = run(weights.arch, weights, tokens, dtype=weights.dtype)
    _, first, rep = losses(trace.logits, tokens, start, half)
    _, rep_mask = _halves(start, half, tokens.shape[1] - 1)
    correct = trace.logits[:, :-1].argmax(-1) == tokens[:, 1:]
    prev, induction = attention_scores(trace.pattern, start, half)
    return {
        "first": round(float(first), 5),
        "repeated": round(float(rep), 5),
        "accuracy": round(float(correct[rep_mask].float().mean()), 5),
        "prev_token": [[round(float(v), 4) for v in row] for row in prev],
        "induction": [[round(float(v), 4) for v in row] for row in induction],
    }


# ------------------------------------------------------------------- training
def initial_weights(cfg: Config) -> Weights:
    """``Weights.random(arch, seed)`` in float32, ``W_E`` scaled by ``embed_init``, ``W_pos`` sinusoidal (module docstring)."""
    arch = cfg.arch()
    w = Weights.random(arch, seed=cfg.seed, dtype=torch.float32)
    freq = cfg.pos_base ** (-torch.arange(0, arch.d_model, 2, dtype=torch.float32) / arch.d_model)  # [D/2]
    angle = torch.arange(arch.n_ctx, dtype=torch.float32)[:, None] * freq[None, :]  # [P, D/2]
    W_pos = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1) * 2**0.5  # [P, D]: sin, cos interleaved
    return w.replace(W_E=cfg.embed_init * w.W_E, W_pos=W_pos)


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """One thread and deterministic algorithms for the duration, then the caller's settings again."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def _progress(enabled: bool):
    """A rich progress bar: steps done, elapsed time, the losses and the diagnostics (:func:`_stats`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (BarColumn(bar_width=12), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"))
    return Progress(*columns, disable=not enabled, transient=False)


def _stats(step: dict, ev: dict | None) -> str:
    """``loss <first half> / <repeated half> | prev L0 <per head> | ind L1 <per head>`` for the progress bar."""
    text = f"loss {step['first']:.2f} / {step['repeated']:.3f}"
    if ev is not None:
        text += " | prev L0 " + " ".join(f"{v:.2f}" for v in ev["prev_token"][0])
        text += " | ind L1 " + " ".join(f"{v:.2f}" for v in ev["induction"][1])
    return text


def train(cfg: Config = Config(), *, progress: bool = False, until: int | None = None) -> Result:
    """Train ``cfg.arch()`` with Adam on the repeated-sequence task (module docstring); deterministic by ``cfg.seed``.

    The weights are float32 and the forward pass is :func:`circuitproof.numeric.run`
    itself, differentiated by autograd. Diagnostics are evaluated every
    ``cfg.eval_every`` steps and after the last. ``until`` stops after that many steps
    of the same run (the learning-rate schedule is still that of ``cfg.steps``), so
    that a short run retraces the first steps of the full one.
    """
    arch = cfg.arch()
    last = cfg.steps if until is None else min(until, cfg.steps)
    with _deterministic():
        t0 = time.perf_counter()
        params = {n: t.clone().requires_grad_(True) for n, t in initial_weights(cfg).items()}
        opt = torch.optim.Adam(params.values(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
        gen = torch.Generator().manual_seed(cfg.seed)
        eval_batch = sample_batch(cfg, cfg.eval_batch, torch.Generator().manual_seed(EVAL_SEED))
        result = Result(cfg, Weights(arch, {n: t.detach().clone() for n, t in params.items()}))
        with _progress(progress) as bar:
            task = bar.add_task("train", total=last, stats="")
            ev = None
            for step in range(1, last + 1):
                tokens, start, half = sample_batch(cfg, cfg.batch, gen)
                logits = run(arch, Weights(arch, params), tokens, dtype=torch.float32).logits
                loss, first, rep = losses(logits, tokens, start, half)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                result.steps.append({"step": step, "loss": loss.item(), "first": first.item(), "repeated": rep.item()})
                if step % cfg.eval_every == 0 or step == last:
                    frozen = Weights(arch, {n: t.detach().clone() for n, t in params.items()})
                    ev = {"step": step, **diagnostics(frozen, *eval_batch)}
                    result.evals.append(ev)
                if step % 10 == 0 or step == last:
                    bar.update(task, completed=step, stats=_stats(result.steps[-1], ev))
        result.weights = Weights(arch, {n: t.detach().clone() for n, t in params.items()})
        result.wall_s = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m circuitproof.numeric.trained.train_induction", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--steps", type=int, default=Config.steps)
    parser.add_argument("--out", type=Path, default=Path("induction_2l.safetensors"),
                        help="weights (safetensors); the record goes beside it, with suffix .json")
    parser.add_argument("--plot", type=Path, help="write the training curve here (PNG; needs matplotlib)")
    parser.add_argument("--doc", type=Path, help="write a markdown account of the run here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    result = train(Config(seed=args.seed, steps=args.steps), progress=not args.quiet)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result.weights.save(args.out)
    args.out.chmod(0o644)  # safetensors writes 0600; the file ships in the package
    record = result.record()
    record["file"] = {"name": args.out.name, "bytes": args.out.stat().st_size, "sha256": _sha256(args.out)}
    args.out.with_suffix(".json").write_text(_dumps(record))
    from . import _report

    if args.plot is not None:
        _report.plot(result, args.plot)
    if args.doc is not None:
        args.doc.write_text(_report.markdown(record, plot=args.plot, doc=args.doc))
    print(_report.summary(record))
    return 0


def _dumps(record: dict) -> str:
    """JSON with one top-level key a line and each ``curve`` / ``evals`` entry on its own line."""
    def value(v: object) -> str:
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return "[\n  " + ",\n  ".join(json.dumps(e) for e in v) + "\n ]"
        return json.dumps(v)

    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in record.items()) + "\n}\n"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    raise SystemExit(main())
