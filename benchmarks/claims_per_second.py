"""How many random architectures a second get the whole claims catalogue checked, on one core.

Run: python benchmarks/claims_per_second.py [--examples 400] [--family-examples 12] [--repeat 3] [--by-claim]
     python benchmarks/claims_per_second.py --save-workload FILE     (draw the examples once)
     PYTHONPATH=CHECKOUT python benchmarks/claims_per_second.py --workload FILE   (time a version of the code on them)
     python benchmarks/claims_per_second.py --workload FILE --compare-with CHECKOUT   (this code against CHECKOUT's, interleaved)
     python benchmarks/claims_per_second.py --workload FILE --count-calls   (torch calls an architecture, claim by claim)

One process, one torch thread, Hypothesis with the ci profile's settings
(derandomized, no database, no deadline): the same examples every run. For the
reference, four figures side by side, each over the same drawn examples:

=============== ===============================================================================
draw            ``models("reference")`` and ``tokens(arch)`` drawn by Hypothesis, nothing else
draw+forward    and ``Weights.random`` and the reference forward pass (``Model.trace``)
full            and every claim of ``CLAIMS`` checked (``Model.check_all``: every applicable
                claim, every instance, the reruns of the claims that run the model twice)
forward alone   the floor: the bare ``run(arch, weights, tokens)`` of the same examples, no Hypothesis
=============== ===============================================================================

For real transformers models (``models(family)`` per family), the full check on
the family's own forward pass (building the model, its trace, every claim, the
reruns built as models of the family), beside the peer step: the bare transformers
forward pass ``model(input_ids)`` of the same built models.

A ``target`` line says whether the best and the median pass of the full check reach
200 archs/s, the target for the reference in the ci profile, and how many passes do.
``--by-claim`` adds each claim's share of the full check: the same examples without
Hypothesis, a fresh ``Model`` each, its weights and trace timed, then each claim's
``Model.check``, per architecture and per architecture where the claim applies.

Each figure is the best of ``--repeat`` timed passes (the machine may be shared:
the best pass is the least disturbed one), wall clock and, beside it, the process'
CPU time. The reference's four steps are timed in rounds, one pass of each step a
round, so that every step sees the machine in the same states; the line ``passes``
gives the full check's archs/s over its passes (best, median, worst) and, round by
round, its time over the floor's: how far the full check drifted against the bare
forward pass (the machine's speed moves by up to 2x from one minute to the next,
and the full check's the most). The workload line gives the mean size of the drawn
examples: how much work an architecture is depends on what the strategies draw. A warm-up pass over the same examples comes first, untimed: it compiles
the symbolic identities the examples meet (sympy, once per process) and imports.

Garbage collection: after the warm-up, the objects alive (torch's, sympy's,
Hypothesis' and ours, about 300,000) are frozen (``gc.freeze``), as
``tests/conftest.py`` does once the test modules are imported, so that Python's full
collections, about one per 400 examples, do not traverse them (200-300 ms each).
Each round also times the full check with them unfrozen (``full, no gc.freeze``):
what a process that does not freeze them pays. The fixed-workload modes freeze after
their warm-up too (a full collection falling in one version's turn would bias the ratio).
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import statistics
import sys
import time

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st


def _settings(n: int) -> settings:
    """The ci profile's settings (tests/conftest.py), at ``n`` examples."""
    return settings(max_examples=n, derandomize=True, database=None, deadline=None, print_blob=False,
                    phases=(Phase.explicit, Phase.reuse, Phase.generate), suppress_health_check=list(HealthCheck))


def _check_all(model, claims, toks):
    if hasattr(model, "check_all"):
        return model.check_all(claims, toks)
    return [model.check(c, toks) for c in claims]  # the library before Model.check_all


def _given(strategy, body, n: int) -> tuple[float, float, int]:
    """Wall and CPU seconds of a Hypothesis test of ``n`` examples (drawing included), and how many examples ran."""
    from circuitproof.properties.strategies import tokens

    count = [0]

    @_settings(n)
    @given(data=st.data())
    def test(data):
        model = data.draw(strategy, label="model")
        toks = data.draw(tokens(model.arch), label="tokens")
        body(model, toks)
        count[0] += 1

    t0, c0 = time.perf_counter(), time.process_time()
    test()
    return time.perf_counter() - t0, time.process_time() - c0, count[0]


def _best(passes: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return min(passes)


def _loop(items, body) -> tuple[float, float, int]:
    t0, c0 = time.perf_counter(), time.process_time()
    for item in items:
        body(*item)
    return time.perf_counter() - t0, time.process_time() - c0, len(items)


def _row(name: str, timing: tuple[float, float, int], floor: float | None, floor_name: str = "") -> str:
    wall, cpu, k = timing
    ratio = f"{wall / floor:>10.1f}" if floor else f"{'':>10}"
    return f"  {name:<30}{1e3 * wall / k:>9.2f}{k / wall:>10.1f}{k / cpu:>10.1f}{ratio}"


def _workload(drawn) -> str:
    """The mean size of the drawn examples: a speed is only comparable on a like workload (the strategies decide it)."""
    def mean(f) -> float:
        return sum(f(a, t) for a, _, t in drawn) / len(drawn)

    return (f"n_layers {mean(lambda a, t: a.n_layers):.2f}, n_heads {mean(lambda a, t: a.n_heads):.2f}, "
            f"d_model {mean(lambda a, t: a.d_model):.1f}, d_head {mean(lambda a, t: a.d_head):.2f}, "
            f"batch {mean(lambda a, t: t.shape[0]):.2f}, positions {mean(lambda a, t: t.shape[1]):.2f}, "
            f"attention-only {mean(lambda a, t: a.attn_only):.2f}")


TARGET = 200.0  # archs/s for the reference in the ci profile (issue 5, point 6)


def reference(n: int, repeat: int, by_claim: bool = False) -> float:
    """Print the reference's figures (and, with ``by_claim``, each claim's share); return archs/s of the full check (wall)."""
    from circuitproof.numeric import run
    from circuitproof.properties.claims import CLAIMS
    from circuitproof.properties.strategies import models

    claims = list(CLAIMS.values())
    strategy = models("reference")
    verdicts: dict[str, int] = {}

    def full(model, toks):
        for e in _check_all(model, claims, toks):
            verdicts[e.verdict] = verdicts.get(e.verdict, 0) + 1

    _given(strategy, full, n)  # warm-up: every identity these examples meet compiled once
    models_drawn = []
    _given(strategy, lambda m, t: models_drawn.append((m, t)), n)
    drawn = [(m.arch, m.weights, t) for m, t in models_drawn]
    gc.freeze()  # as tests/conftest.py does once the test modules are imported (module docstring)
    verdicts.clear()
    passes: dict[str, list] = {"draw": [], "forward": [], "full": [], "unfrozen": [], "floor": []}
    for _ in range(repeat):  # a round: one pass of each step, so that each sees the machine as the others do
        passes["draw"].append(_given(strategy, lambda m, t: None, n))
        passes["forward"].append(_given(strategy, lambda m, t: m.trace(t), n))
        passes["full"].append(_given(strategy, full, n))
        gc.unfreeze()  # the same pass with every object in the collector's reach
        passes["unfrozen"].append(_given(strategy, full, n))
        gc.freeze()
        passes["floor"].append(_loop(drawn, lambda a, w, t: run(a, w, t)))
    t_draw, t_fwd, t_full, t_unfrozen, t_floor = (_best(passes[step]) for step in ("draw", "forward", "full", "unfrozen", "floor"))
    k = t_full[2]
    counts = ", ".join(f"{c // (2 * repeat)} {v}" for v, c in sorted(verdicts.items()))
    print(f"\nreference: {k} examples, {len(claims)} claims each ({counts})")
    print("  workload (means over the examples): " + _workload(drawn))
    print(f"  {'step':<30}{'ms/arch':>9}{'archs/s':>10}{'(CPU)':>10}{'x forward':>10}")
    for name, timing in (("draw (Hypothesis)", t_draw), ("draw + weights + forward", t_fwd), ("full: + every claim", t_full),
                         ("full, no gc.freeze", t_unfrozen), ("forward alone (the floor)", t_floor)):
        print(_row(name, timing, t_floor[0] / t_floor[2] * timing[2]))
    rates = sorted(p[2] / p[0] for p in passes["full"])
    ratios = [(f[0] / f[2]) / (g[0] / g[2]) for f, g in zip(passes["full"], passes["floor"])]  # round by round
    print(f"  passes of the full check, archs/s: best {rates[-1]:.1f}, median {statistics.median(rates):.1f}, worst {rates[0]:.1f}; "
          f"full / floor, round by round: {', '.join(f'{r:.1f}' for r in ratios)}")
    unfrozen = sorted(p[2] / p[0] for p in passes["unfrozen"])
    print(f"  passes without gc.freeze, archs/s: best {unfrozen[-1]:.1f}, median {statistics.median(unfrozen):.1f}, worst {unfrozen[0]:.1f}")
    at_target = sum(r >= TARGET for r in rates)
    print(f"  target {TARGET:.0f} archs/s: best pass {'met' if rates[-1] >= TARGET else 'MISSED'}, median pass "
          f"{'met' if statistics.median(rates) >= TARGET else 'MISSED'}; {at_target} of {len(rates)} passes at or above it")
    if by_claim:
        _by_claim([(m.arch, m.seed, t) for m, t in models_drawn], claims, repeat)
    bad = sum(c for v, c in verdicts.items() if v in ("FAIL", "INCONCLUSIVE"))
    if bad:
        print(f"  WARNING: {bad // (2 * repeat)} FAIL or INCONCLUSIVE verdicts", file=sys.stderr)
    return k / t_full[0]


_TRACE_STEP = "weights + forward (Model.trace)"


def _steps(examples, claims):
    """``(step, run)`` of the full check, example by example: a fresh ``Model``'s weights and trace (:data:`_TRACE_STEP`),
    then each claim's ``Model.check`` in catalogue order (what ``check_all`` does); ``run()`` does the step and returns
    its result."""
    from circuitproof.properties.strategies import Model

    for arch, seed, toks in examples:
        model = Model(arch, seed)
        yield _TRACE_STEP, functools.partial(model.trace, toks)
        for claim in claims:
            yield claim.id, functools.partial(model.check, claim, toks)


def _by_claim(examples, claims, repeat: int) -> None:
    """Each claim's share of the full check, on the same examples without Hypothesis (:func:`_steps`), the figures of the
    least disturbed of ``repeat`` passes."""
    clock, best, ids = time.perf_counter, None, [c.id for c in claims]
    for _ in range(repeat):
        spent, applies = dict.fromkeys([_TRACE_STEP, *ids], 0.0), dict.fromkeys([_TRACE_STEP, *ids], 0)
        for step, run in _steps(examples, claims):
            t0 = clock()
            result = run()
            spent[step] += clock() - t0
            applies[step] += step == _TRACE_STEP or result.verdict != "NOT_APPLICABLE"
        total = sum(spent.values())
        if best is None or total < best[0]:
            best = (total, spent, applies)
    total, spent, applies = best
    k = len(examples)
    print(f"\n  by claim, without Hypothesis ({k} examples, {1e3 * total / k:.2f} ms/arch in all, the least disturbed of {repeat} passes):")
    print(f"  {'':<34}{'us/arch':>9}{'share':>7}{'applies':>9}{'us where it applies':>21}")
    for step in [_TRACE_STEP] + sorted(ids, key=spent.get, reverse=True):  # the trace first, then the claims, the dearest first
        where = f"{1e6 * spent[step] / applies[step]:>21.0f}" if applies[step] else f"{'':>21}"
        print(f"  {step:<34}{1e6 * spent[step] / k:>9.0f}{spent[step] / total:>7.0%}{applies[step]:>9}{where}")


def families(names: list[str], n: int, repeat: int) -> None:
    from circuitproof.properties.claims import CLAIMS
    from circuitproof.properties.strategies import models

    claims = list(CLAIMS.values())
    print(f"\ntransformers: {n} examples a family; full = draw + build + the family's own trace + every claim (reruns built in the family)")
    print(f"  {'family':<30}{'ms/arch':>9}{'archs/s':>10}{'(CPU)':>10}{'x HF fwd':>10}{'HF fwd ms':>11}")
    total_wall = total_cpu = total_k = 0
    for family in names:
        strategy, built = models(family), []

        def full(model, toks, built=built):
            _check_all(model, claims, toks)
            built.append((model._adapter.model, toks))

        _given(strategy, full, n)  # warm-up: the family's module, the identities its examples meet
        t_full = _best([_given(strategy, full, n) for _ in range(repeat)])
        same = built[-t_full[2]:]

        def forward(hf, toks):
            with torch.no_grad():
                hf(input_ids=toks)

        t_hf = _best([_loop(same, forward) for _ in range(repeat)])
        total_wall, total_cpu, total_k = total_wall + t_full[0], total_cpu + t_full[1], total_k + t_full[2]
        print(_row(family, t_full, t_hf[0] / t_hf[2] * t_full[2]) + f"{1e3 * t_hf[0] / t_hf[2]:>11.2f}")
    print(_row("all families", (total_wall, total_cpu, total_k), None))


# ------------------------------------------------------------------ a fixed workload
def save_workload(path: str, n: int) -> None:
    """Draw ``n`` reference examples as the ci profile does and write them to ``path`` (JSON: Arch fields, seed, tokens)."""
    import dataclasses
    import json

    from circuitproof.properties.strategies import models

    drawn = []
    _given(models("reference"), lambda m, t: drawn.append((m.arch, m.seed, t)), n)
    rows = [{"arch": dataclasses.asdict(a), "seed": seed, "tokens": t.tolist()} for a, seed, t in drawn]
    with open(path, "w") as f:
        json.dump(rows, f)
    print(f"\nwrote {len(rows)} examples to {path}; workload: {_workload(drawn)}")


def _read_workload(path: str, package) -> list:
    """``[(Arch, seed, tokens)]`` of a saved workload, the Arch of ``package`` (a circuitproof module)."""
    import json

    with open(path) as f:
        rows = json.load(f)
    drawn = []
    for row in rows:
        fields = dict(row["arch"])
        if fields.get("sliding_layers") is not None:
            fields["sliding_layers"] = tuple(fields["sliding_layers"])
        drawn.append((package.Arch(**fields), row["seed"], torch.tensor(row["tokens"])))
    return drawn


def _checks(package, drawn) -> list:
    """One function an example: a fresh ``Model`` of ``package`` checking every claim of its ``CLAIMS`` (weights, trace, claims)."""
    import importlib

    name = package.__name__
    claims = list(importlib.import_module(f"{name}.properties.claims").CLAIMS.values())
    model = importlib.import_module(f"{name}.properties.strategies").Model
    return [lambda a=a, s=s, t=t: _check_all(model(a, s), claims, t) for a, s, t in drawn]


def fixed_workload(path: str, repeat: int) -> None:
    """Weights, trace and every claim on the examples of ``path``, no drawing: a speed that compares code, not strategies.

    Only the ``circuitproof`` on the path is timed, so ``PYTHONPATH=<another checkout> python benchmarks/claims_per_second.py
    --workload FILE`` times another version of the code on the same examples (:func:`compare` times two in one process).
    """
    import circuitproof

    drawn = _read_workload(path, circuitproof)
    checks = [(f,) for f in _checks(circuitproof, drawn)]
    _loop(checks, lambda f: f())  # warm-up: every identity these examples meet compiled once
    gc.freeze()  # as the reference's figures do (module docstring)
    timing = _best([_loop(checks, lambda f: f()) for _ in range(repeat)])
    print(f"\nfixed workload {path}: {len(drawn)} examples ({_workload(drawn)})")
    print(f"  circuitproof from {os.path.dirname(circuitproof.__file__)}")
    print(f"  {'step':<30}{'ms/arch':>9}{'archs/s':>10}{'(CPU)':>10}")
    print(_row("weights + forward + every claim", timing, None))


def count_calls(path: str) -> None:
    """Torch calls an architecture, claim by claim, on the examples of ``path``: figures the machine's drift does not move.

    Counts every call through torch's Python API (a ``torch.overrides.TorchFunctionMode``: operations, indexing,
    conversions) except reads of a tensor's properties (``.shape``, ``.dtype``, ...), step by step of the full check
    (:func:`_steps`); and the reference's forward passes (calls of ``circuitproof.numeric.reference._forward``, patched
    with a counting wrapper for the count). After a warm-up pass, what is kept per Weights object is dropped: the count
    is that of a first pass over the examples. NumPy's operations (the compiled programs, the error measurements) are
    not counted. The counts are a function of the code and the examples alone: two versions compare by them without
    interleaving (``PYTHONPATH=<checkout> ... --workload FILE --count-calls`` counts another checkout's).
    """
    from unittest import mock

    import circuitproof
    from circuitproof.numeric import _kept
    from circuitproof.numeric import reference as ref
    from circuitproof.properties import _model
    from circuitproof.properties.claims import CLAIMS
    from torch.overrides import TorchFunctionMode

    drawn, claims = _read_workload(path, circuitproof), list(CLAIMS.values())
    calls: dict[str, int] = dict.fromkeys([_TRACE_STEP] + [c.id for c in claims], 0)
    where = [_TRACE_STEP]

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") != "__get__":  # a property read (.shape, .dtype): not an operation
                calls[where[0]] += 1
            return func(*args, **(kwargs or {}))

    for _, run in _steps(drawn, claims):  # warm-up: every identity these examples meet compiled, and the caches kept per shape
        run()
    # what is kept per Weights object (drawn weights, their traces and transformed copies) is dropped, so that the count
    # is of a first pass over these examples whatever ran before in the process: each example's weights drawn and its
    # passes run, except where the workload repeats an example (as the Hypothesis run it was drawn from does)
    _kept._KEPT.clear()
    _model._random_weights.cache_clear()
    with mock.patch.object(ref, "_forward", side_effect=ref._forward) as forward, Count():
        for where[0], run in _steps(drawn, claims):
            run()
    k, total = len(drawn), sum(calls.values())
    print(f"\ntorch calls, fixed workload {path}: {k} examples ({_workload(drawn)})")
    print(f"  circuitproof from {os.path.dirname(circuitproof.__file__)}")
    print(f"  {total / k:.1f} torch calls an architecture in all; {forward.call_count / k:.2f} reference forward passes")
    print(f"  {'':<34}{'calls/arch':>11}{'share':>7}")
    for name in sorted(calls, key=calls.get, reverse=True):
        print(f"  {name:<34}{calls[name] / k:>11.1f}{calls[name] / (total or 1):>7.0%}")


def _import_checkout(checkout: str):
    """The ``circuitproof`` package of another checkout, imported as ``circuitproof_other`` beside this one (its imports
    are relative, so it runs as itself)."""
    import importlib.util

    init = os.path.join(checkout, "circuitproof", "__init__.py")
    if not os.path.exists(init):
        raise SystemExit(f"--compare-with {checkout}: no circuitproof/__init__.py there")
    spec = importlib.util.spec_from_file_location("circuitproof_other", init,
                                                  submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["circuitproof_other"] = module
    spec.loader.exec_module(module)
    return module


def compare(path: str, checkout: str, repeat: int) -> None:
    """This checkout's code against ``checkout``'s, on the examples of ``path``, in one process, example by example.

    Each pass runs every example with both versions back to back, the order alternating from one
    example to the next, so that both see the machine in the same state (its speed drifts by up to 2x
    from one minute to the next, which timing the versions in turn, pass by pass, does not cancel):
    the ratio of their times is steady to about 1% from pass to pass where separate runs differ by 30%.
    """
    import circuitproof

    other = _import_checkout(checkout)
    ours, theirs = (_checks(p, _read_workload(path, p)) for p in (circuitproof, other))
    for f in ours + theirs:  # warm-up: every identity compiled once, in each version
        f()
    gc.freeze()  # a full collection in one version's turn would count against it alone (module docstring)
    clock = time.perf_counter
    rows = []
    for p in range(repeat):
        t_ours = t_theirs = 0.0
        for i, (a, b) in enumerate(zip(ours, theirs)):
            first, second = (a, b) if (i + p) % 2 else (b, a)
            t0 = clock()
            first()
            t1 = clock()
            second()
            t2 = clock()
            t_a, t_b = (t1 - t0, t2 - t1) if first is a else (t2 - t1, t1 - t0)
            t_ours, t_theirs = t_ours + t_a, t_theirs + t_b
        rows.append((1e3 * t_theirs / len(ours), 1e3 * t_ours / len(ours)))
    print(f"\nfixed workload {path}: {len(ours)} examples, weights + forward + every claim, the two versions interleaved")
    print(f"  this:  circuitproof from {os.path.dirname(circuitproof.__file__)}")
    print(f"  other: circuitproof from {os.path.dirname(other.__file__)}")
    print(f"  {'pass':<6}{'other ms/arch':>15}{'this ms/arch':>14}{'other / this':>14}")
    for k, (t_other, t_this) in enumerate(rows, 1):
        print(f"  {k:<6}{t_other:>15.3f}{t_this:>14.3f}{t_other / t_this:>14.3f}")
    total_other, total_this = (sum(r[i] for r in rows) for i in (0, 1))
    print(f"  {'all':<6}{total_other / len(rows):>15.3f}{total_this / len(rows):>14.3f}{total_other / total_this:>14.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=400, help="reference examples (default 400)")
    parser.add_argument("--family-examples", type=int, default=12, help="examples per transformers family (default 12; 0 skips)")
    parser.add_argument("--families", default="gpt2,bert,llama,qwen2,gpt_neox,gptj,gemma2,olmo2")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per figure, the best reported (default 3)")
    parser.add_argument("--save-workload", metavar="FILE", help="draw --examples reference examples, write them to FILE, and stop")
    parser.add_argument("--workload", metavar="FILE", help="time only weights, forward and every claim on FILE's examples")
    parser.add_argument("--by-claim", action="store_true", help="also time each claim's check on the reference's examples")
    parser.add_argument("--compare-with", metavar="CHECKOUT", help="with --workload: time this code against CHECKOUT's, "
                        "interleaved example by example in one process (the ratio cancels the machine's drift)")
    parser.add_argument("--count-calls", action="store_true", help="with --workload: count torch calls an architecture, claim by "
                        "claim, and the reference's forward passes, instead of timing (figures the machine's drift does not move)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import hypothesis

    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread; hypothesis {hypothesis.__version__}; python {platform.python_version()}")
    if not args.count_calls:
        print(f"figures: the best of {args.repeat} passes; archs/s by the wall clock and, in brackets, by the process' CPU time")
    if args.save_workload:
        save_workload(args.save_workload, args.examples)
        return
    if args.compare_with and not args.workload:
        parser.error("--compare-with needs --workload FILE (the examples both versions check)")
    if args.count_calls and not args.workload:
        parser.error("--count-calls needs --workload FILE (the examples to count on)")
    if args.workload:
        if args.count_calls:
            count_calls(args.workload)
        elif args.compare_with:
            compare(args.workload, args.compare_with, args.repeat)
        else:
            fixed_workload(args.workload, args.repeat)
        return
    reference(args.examples, args.repeat, args.by_claim)
    if args.family_examples:
        try:
            import transformers
        except ImportError:
            print("\ntransformers is not installed: no family figures")
            return
        print(f"\ntransformers {transformers.__version__}")
        families([f for f in args.families.split(",") if f], args.family_examples, args.repeat)


if __name__ == "__main__":
    main()
