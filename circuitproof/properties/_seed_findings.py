"""What the seed register runs besides the claims: hand-built circuits and the seed's analogies.

Each finding is a function returning a :class:`Finding`: what was run, what it measured
(numbers to 3 significant digits) and whether the seed's statement held on that run.
The circuits are :mod:`circuitproof.numeric.circuits`; token sequences are drawn from
seeded generators; the analogies evaluate the symbolic layer's refutations
(:mod:`~circuitproof.symbolic.seed`, :mod:`~circuitproof.symbolic.seed_strict`) at the
first assignment of 0s and 1s, fewest 1s first, on which the refuted form differs.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..numeric import circuits, run
from ._evidence import PASS
from .counterexamples import Counterexample, circuit_counterexample, claim, one_torch_thread

__all__ = ["FINDINGS", "Finding", "finding"]


@dataclass(frozen=True)
class Finding:
    """A run backing a statement: ``holds`` says whether the seed's statement held; ``lines`` what was measured."""

    name: str
    title: str
    lines: tuple[str, ...]
    holds: bool
    counterexample: Counterexample | None = None


def _g(x: float) -> str:
    return f"{x:.3g}"


def _err(x: float) -> str:
    """A measured error: 3 significant digits, or "< 1e-12" at rounding level (whose digits vary with the platform)."""
    return "< 1e-12" if x < 1e-12 else _g(x)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(float(b.abs().max()), float(a.abs().max()), 1e-300)
    return float((a - b).abs().max()) / scale


# ------------------------------------------------------------------ the residual stream
def _eraser() -> Finding:
    c = circuits.eraser_head()
    toks = torch.zeros(1, 1, dtype=torch.long)
    ce = circuit_counterexample("seed.no_erasure/eraser", "seed.no_erasure", "generic weights: a head with W_OV = -I", c, toks)
    assumed = ce.check(assume=True)
    return Finding("eraser", "a head that writes -x (no norm anywhere)",
                   (f"with the claim's conditions assumed (no post-norm holds): {assumed.verdict}",), False, ce)


# ------------------------------------------------------------------ the induction circuit
def _last_before(toks: list[int], token: int, before: int) -> int | None:
    """The last position ``k < before`` holding ``token``."""
    found = [k for k in range(before) if toks[k] == token]
    return found[-1] if found else None


def _after(toks: list[int], k: int | None) -> int | None:
    return toks[k + 1] if k is not None and k + 1 < len(toks) else None


def _readings(toks: list[int], q: int) -> dict[str, int | None]:
    """The pseudocode at query position ``q``, read two ways.

    A: ``i = q`` (the current token is ``t_i``): attends to the prior occurrence ``k`` of
    ``t_{i-1}``; its OV line and its Result line both give the token after it.
    B: ``i = q + 1`` is the position predicted (the current token is ``t_{i-1} = t_q``):
    attends to the prior occurrence ``k`` of ``t_q``; the OV line gives the token after
    it; the Result line gives the token after the prior occurrence of ``t_{q-1}``.
    """
    a = _last_before(toks, toks[q - 1], q - 1)
    b = _last_before(toks, toks[q], q)
    b_result = _last_before(toks, toks[q - 1], q - 1)
    return {"A_pos": a, "A_tok": _after(toks, a), "B_pos": b, "B_ov": _after(toks, b), "B_result": _after(toks, b_result)}


def _induction() -> Finding:
    c = circuits.induction_circuit(8, 16)
    toks = circuits.repeated_sequence(8, 5, seed=0)
    trace = run(c.arch, c.weights, toks)
    pos, weight = circuits.attended(trace, 1)
    pred = circuits.predicted(trace)
    t = toks[0].tolist()
    n = len(t) // 2
    rows, agree = [], dict.fromkeys(("A_pos", "A_tok", "B_pos", "B_ov", "B_result"), 0)
    correct = 0
    for q in range(n, 2 * n):
        k, p = int(pos[0, q]), int(pred[0, q])
        r = _readings(t, q)
        for key in agree:
            agree[key] += r[key] == (k if key.endswith("pos") else p)
        correct += q + 1 < len(t) and p == t[q + 1]
        rows.append(f"| {q} | {t[q]} | {k} (t_{{k-1}} = {t[k - 1]}) | {_g(float(weight[0, q]))} | {p} | "
                    f"{t[q + 1] if q + 1 < len(t) else '-'} | {r['A_pos']} | {r['A_tok']} | {r['B_pos']} | {r['B_ov']} | {r['B_result']} |")
    q = n + 2
    r, k = _readings(t, q), int(pos[0, q])
    lines = (f"circuit: `circuits.{c.call}`; tokens (drawn: `repeated_sequence(8, 5, seed=0)`): {t}",
             "", "Read A: position i is the query (current token t_i). Read B: position i is the one predicted (the query is i - 1, "
                 "current token t_(i-1)). For each query q of the repeated half:",
             "", "| q | t_q | circuit attends k | weight | circuit predicts | t_(q+1) | A: attends | A: predicts | B: attends | "
                 "B: OV line copies | B: Result line |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
             f"The circuit attends to the k with t_(k-1) = t_q and predicts t_k = t_(q+1) at {correct} of {n - 1} queries that have "
             f"a next token. Reading A agrees with it on the attended position at {agree['A_pos']} of {n} queries and on the "
             f"predicted token at {agree['A_tok']} of {n}: it predicts t_q, the current token again. Reading B agrees on the "
             f"attended position at {agree['B_pos']} of {n} (it names the earlier occurrence itself, one before the position the "
             f"head attends to), its OV line on the token at {agree['B_ov']} of {n}, and its Result line at {agree['B_result']} of "
             f"{n} (the predecessor's successor is the current token again).",
             f"Concretely at q = {q} (t_q = {t[q]}, t_(q-1) = {t[q - 1]}): the circuit attends to k = {k} and predicts {t[k]} "
             f"(= t_(q+1) = {t[q + 1]}); reading A attends to {r['A_pos']} and predicts {r['A_tok']} (= t_q); reading B attends to "
             f"{r['B_pos']}, and its Result line predicts {r['B_result']}. The pseudocode is off by one: the induction head attends "
             "to the positions k where t_(k-1) = t_i and copies t_k.")
    return Finding("induction", "the hand-built two-layer induction circuit against the pseudocode read literally", lines,
                   all(v == n for v in agree.values()))


def _accuracy(c: circuits.Circuit, toks: torch.Tensor) -> float:
    """Share of positions ``i`` of the repeated half (with a next token) where the model predicts ``t_{i+1}``."""
    n = toks.shape[1] // 2
    pred = circuits.predicted(run(c.arch, c.weights, toks))
    return float((pred[:, n:-1] == toks[:, n + 1 :]).double().mean())


def _ablated(c: circuits.Circuit, layer: int) -> circuits.Circuit:
    W_O = c.weights.W_O.clone()
    W_O[layer] = 0
    return circuits.Circuit(f"{c.call} with layer {layer}'s W_O = 0", c.arch, c.weights.replace(W_O=W_O), c.layout)


def _induction_ablation() -> Finding:
    c = circuits.induction_circuit(8, 16)
    toks = circuits.repeated_sequence(8, 6, seed=1, batch=200)
    whole, no_prev, no_ih = _accuracy(c, toks), _accuracy(_ablated(c, 0), toks), _accuracy(_ablated(c, 1), toks)
    lines = (f"200 fresh sequences (`repeated_sequence(8, 6, seed=1, batch=200)`), next-token accuracy on the repeated half: "
             f"the circuit {_g(whole)}; previous-token head ablated {_g(no_prev)}; induction head ablated {_g(no_ih)}.",)
    return Finding("induction_ablation", "each head of the induction circuit ablated", lines, whole == 1.0 and no_prev < 1 and no_ih < 1)


def _last_occurrence() -> Finding:
    c = circuits.induction_circuit(8, 16)
    a, b, d = torch.randperm(8, generator=torch.Generator().manual_seed(2))[:3].tolist()
    toks = torch.tensor([[a, b, a, d, a]])
    trace = run(c.arch, c.weights, toks)
    row = trace.pattern[1, 0, 0, 4]
    logits = trace.logits[0, 4]
    lines = (f"tokens (three drawn with seed 2, in the pattern a b a d a): {toks[0].tolist()}; at the last position the current "
             f"token occurred before at 0 and 2, followed by {b} and {d}.",
             f"The induction head's weights on positions 1 and 3: {_g(float(row[1]))} and {_g(float(row[3]))}; the logits of {b} and "
             f"{d}: {_g(float(logits[b]))} and {_g(float(logits[d]))}. It copies every earlier successor equally, not the last one's.")
    return Finding("last_occurrence", "the induction circuit when the current token occurred twice before", lines,
                   float(row[3]) > 0.99)


def _previous_token() -> Finding:
    c = circuits.previous_token(8, 16)
    toks = circuits.repeated_sequence(8, 8, seed=3)[:, :8]
    trace = run(c.arch, c.weights, toks)
    pos, weight = circuits.attended(trace, 0)
    wrote = trace.head_out[0, 0, :, 0, c.layout.prev_].argmax(-1)
    t = toks[0].tolist()
    ok = all(int(pos[0, i]) == i - 1 for i in range(1, 8)) and all(int(wrote[i]) == t[i - 1] for i in range(1, 8))
    lines = (f"`circuits.{c.call}` on {t}: attended positions {pos[0].tolist()}, smallest weight {_g(float(weight.min()))}; the "
             f"token written into the prev subspace {wrote.tolist()} (position 0 sees only itself).",)
    return Finding("previous_token", "the previous-token head", lines, ok)


# ------------------------------------------------------------------ the copy head
@dataclass(frozen=True)
class _CopyRun:
    """A copy head run on six distinct tokens: every destination ``i >= 1`` attends to its source ``i - 1``."""

    circuit: circuits.Circuit
    tokens: torch.Tensor
    trace: object
    alpha: torch.Tensor  # [5, 1] the weight on the source
    write: torch.Tensor  # [5, D] Delta x_dest
    x_src: torch.Tensor  # [5, D] the source stream the head reads
    src: torch.Tensor  # [5] the source positions


def _copy_run(lam: float) -> _CopyRun:
    c = circuits.copy_head(8, 16, lam=lam)
    toks = circuits.repeated_sequence(8, 8, seed=4)[:, :6]
    trace = run(c.arch, c.weights, toks)
    pos, alpha = circuits.attended(trace, 0)
    src = pos[0, 1:]
    return _CopyRun(c, toks, trace, alpha[0, 1:, None], trace.head_out[0, 0, 1:, 0], trace.resid_pre[0, 0, src], src)


def _copy_signature() -> Finding:
    c = circuits.copy_head(8, 16, lam=2.0)
    w = c.weights
    W_OV = w.W_V[0, 0] @ w.W_O[0, 0]
    copying = w.W_E @ W_OV @ w.W_U
    eig = torch.linalg.eigvals(copying).real
    lines = (f"`circuits.{c.call}`: W_E W_OV W_U = lambda I: max deviation {_err(float((copying - 2 * torch.eye(8)).abs().max()))}; "
             f"its eigenvalues lie in [{_g(float(eig.min()))}, {_g(float(eig.max()))}]; W_OV on the position subspace: max "
             f"{_err(float(W_OV[c.layout.pos].abs().max()))}.",)
    return Finding("copy_signature", "the copy head's OV signature", lines, True)


def _copy_write() -> Finding:
    r = _copy_run(1.0)
    tok = torch.zeros_like(r.x_src)
    tok[:, r.circuit.layout.tok] = r.x_src[:, r.circuit.layout.tok]
    full, on_tok = _rel(r.write, r.alpha * r.x_src), _rel(r.write, r.alpha * tok)
    lines = (f"`circuits.{r.circuit.call}` on {r.tokens[0].tolist()} (each position attends to the previous one, weight alpha = "
             f"{_g(float(r.alpha.min()))}): Delta x_dest against alpha x_source: relative error {_err(full)}; against alpha times "
             f"x_source's token part: {_err(on_tok)}. W_OV = I on the token embeddings only, so the source's position is not written.",)
    return Finding("copy_write", "what a copy head writes", lines, full < 1e-10)


def _copy_logits() -> Finding:
    lines, ok = [], True
    for lam in (1.0, 2.0):
        r = _copy_run(lam)
        W_U = r.circuit.weights.W_U
        err = _rel(r.write @ W_U, r.alpha * (r.x_src @ W_U))
        lines.append(f"`circuits.{r.circuit.call}`: W_U Delta x_dest against alpha W_U x_source: relative error {_err(err)}"
                     + ("" if lam == 1.0 else f" (the head writes lambda = {lam:g} times it)"))
        ok &= err < 1e-10
        if lam == 1.0:
            onehot = torch.nn.functional.one_hot(r.tokens[0, r.src], 8).double()
            own = r.trace.logits[0, r.src]
            lines.append(f"W_U x_source against the one-hot logits of the source token: {_err(_rel(r.x_src @ W_U, onehot))}; against "
                         f"the model's own logits at the source position: {_err(_rel(r.x_src @ W_U, own))}.")
    return Finding("copy_logits", "a copy head's logit contribution", tuple(lines), ok)


def _copy_exact() -> Finding:
    r = _copy_run(2.0)
    w = r.circuit.weights
    chain = r.x_src @ w.W_V[0, 0] @ w.W_O[0, 0] @ w.W_U
    evidence = claim("ablation.direct_effect").check(r.circuit.arch, w, r.trace)
    lines = (f"`circuits.{r.circuit.call}`: the head's logits Delta x_dest W_U against W_U W_O W_V x_source (row: x_source W_V W_O "
             f"W_U): relative error {_err(_rel(r.write @ w.W_U, chain))} (one-hot attention, no b_V, no norm).",
             f"On the same circuit `ablation.direct_effect`: {evidence.verdict}, relative error {_err(evidence.max_rel)} "
             f"(tolerance {evidence.tolerance:g}).")
    return Finding("copy_exact", "the copy head's logits as one chain of matrices", lines, evidence.verdict == PASS)


# ------------------------------------------------------------------ the analogies
def _first_assignment(symbols, differs, valid=lambda v: True) -> dict | None:
    """The first assignment of 0/1 to ``symbols`` (fewest 1s, then in order) where ``differs``, among the ``valid`` ones."""
    for ones in range(len(symbols) + 1):
        for chosen in itertools.combinations(symbols, ones):
            values = {s: int(s in chosen) for s in symbols}
            if valid(values) and differs(values):
                return values
    return None


def _factor(refuted, valid=lambda v: True) -> tuple[dict, object, object]:
    model, effects = refuted.steps[0].rule.mapping, refuted.failing.rule.mapping
    ((_, definition),) = model.items()
    claimed = refuted.failing.expr
    symbols = sorted(definition.free_symbols | set().union(*(e.free_symbols for e in effects.values())), key=lambda s: s.name)
    actual = lambda v: definition.subs(v)
    attributed = lambda v: claimed.xreplace(effects).subs(v)
    values = _first_assignment(symbols, lambda v: actual(v) != attributed(v), valid)
    return values, actual(values), attributed(values)


def _assigned(values: dict) -> str:
    ones = [s.name for s, v in values.items() if v]
    return (", ".join(ones) + " = 1, every other symbol 0") if ones else "every symbol 0"


def _factor_model() -> Finding:
    from ..symbolic import seed

    refuted = seed.factor_model()["factor_model.interaction.refuted"]
    values, actual, attributed = _factor(refuted)
    lines = (f"With an interaction r = sum_k beta_k f_k + beta_12 f_1 f_2 + epsilon, the first 0/1 assignment on which the ablation "
             f"effects do not add up: {_assigned(values)}: r = {actual}, sum_k phi_k + epsilon = {attributed} (remainder "
             f"{refuted.remainder}).",)
    return Finding("factor_model", "per-factor attribution with an interaction", lines, False)


def _factor_risk() -> Finding:
    from ..symbolic import seed_strict

    risk = seed_strict.factor_risk()
    refuted = risk["ablation.refuted"]

    def psd(v):
        c11, c12, c22 = (next(val for s, val in v.items() if s.name == n) for n in ("C_11", "C_12", "C_22"))
        return c11 >= 0 and c22 >= 0 and c11 * c22 >= c12 * c12

    values, actual, attributed = _factor(refuted, psd)
    euler = risk["euler"]
    at_values = euler.rhs.subs(values)
    lines = (f"Portfolio variance sigma^2 = beta^T C beta, two factors: the first 0/1 assignment with C a covariance on which the "
             f"ablation effects do not add up: {_assigned(values)}: sigma^2 = {actual}, phi_1 + phi_2 = {attributed} (remainder "
             f"{refuted.remainder}). Euler's attribution sum_k beta_k d(sigma^2)/d beta_k / 2 gives {at_values} there (proved: "
             f"`{euler.id}`).",)
    return Finding("factor_risk", "per-factor attribution of risk", lines, False)


def _recurrence() -> Finding:
    import sympy as sp

    from ..symbolic import compile_expr, seed

    gen = torch.Generator().manual_seed(5)
    A = torch.randn(3, 3, generator=gen, dtype=torch.float64) / 2
    b, state = torch.randn(3, 1, generator=gen, dtype=torch.float64), torch.randn(3, 1, generator=gen, dtype=torch.float64)
    x0, worst = state.clone(), 0.0
    proof = seed.recurrence()
    for identity in proof.parts[3:]:
        state = A @ state + b
        explicit = identity.rhs.replace(lambda e: isinstance(e, sp.MatPow), lambda e: sp.MatMul(*[e.base] * int(e.exp)))
        worst = max(worst, _rel(compile_expr(explicit)({"A^{rec}": A, "b^{rec}": b, "x^{rec}_{0}": x0}), state))
    lines = (f"`{proof.id}` proved by induction; its unrolled forms n = 1..6 against iterating x_(n+1) = A x_n + b (A, b, x_0 drawn "
             f"with seed 5, 3 dimensions): largest relative error {_err(worst)}.",)
    return Finding("recurrence", "the linear recurrence, unrolled", lines, worst < 1e-12)


def _convolution() -> Finding:
    gen = torch.Generator().manual_seed(6)
    x, g1, g2 = (torch.randn(n, generator=gen, dtype=torch.float64) for n in (16, 3, 4))

    def conv(a, k):  # full discrete convolution
        return torch.nn.functional.conv1d(a[None, None], k.flip(0)[None, None], padding=len(k) - 1)[0, 0]

    err = _rel(conv(conv(x, g1), g2), conv(x, conv(g1, g2)))
    lines = (f"(x * g_1) * g_2 against x * (g_1 * g_2) for signals drawn with seed 6 (lengths 16, 3, 4): relative error {_err(err)}.",)
    return Finding("convolution", "two filters in sequence are one filter", lines, err < 1e-12)


FINDINGS: dict[str, Callable[[], Finding]] = {
    "eraser": _eraser, "previous_token": _previous_token, "induction": _induction, "induction_ablation": _induction_ablation,
    "last_occurrence": _last_occurrence, "copy_signature": _copy_signature, "copy_write": _copy_write, "copy_logits": _copy_logits,
    "copy_exact": _copy_exact, "recurrence": _recurrence, "factor_model": _factor_model, "factor_risk": _factor_risk,
    "convolution": _convolution,
}


@functools.cache
def finding(name: str) -> Finding:
    """Run the finding ``name`` once (cached), with one torch thread."""
    with one_torch_thread():
        return FINDINGS[name]()

