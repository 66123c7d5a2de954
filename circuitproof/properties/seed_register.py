"""The seed register: every formal statement of the seed, the claims it maps to, a verdict, and the runs that back it.

:data:`~._seed_statements.STATEMENTS` lists the statements (quote, section, verdict,
reason, and what backs the verdict by name). :func:`build` runs what backs them:

- each counterexample case (:func:`~.counterexamples.find_counterexample`: the claim
  checked with one condition dropped, Hypothesis' minimal failing model);
- each finding (:mod:`._seed_findings`: the hand-built circuits, the analogies);
- each proof is looked up in the symbolic layer (its derivation checked as it is built).

:func:`render` writes the result as Markdown, deterministically: the searches are
derandomized, numbers are printed to 3 significant digits, and rounding-level errors
are not printed at all. ``python -m circuitproof.properties --seed`` prints it;
``docs/seed-register.md`` keeps it (``tests/properties/test_seed_register.py``
regenerates and compares).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ._seed_findings import Finding, finding
from ._seed_statements import CONDITIONAL, EXACT, FALSE, INFORMAL, STATEMENTS, Statement
from .counterexamples import MAX_EXAMPLES, Counterexample, claim, find_counterexample

__all__ = ["COMMAND", "OPTIONAL_CLAIMS", "Entry", "build", "markdown", "proofs", "render"]

COMMAND = "python -m circuitproof.properties --seed --write docs/seed-register.md"
# claims another part of the library adds: listed where they exist when the register is built
OPTIONAL_CLAIMS = frozenset({"patching.direct_effect"})


@functools.lru_cache(maxsize=1)
def proofs() -> dict[str, object]:
    """The symbolic layer's seed identities by id (``seed`` and ``seed_strict``), each derivation checked as it is built."""
    from ..symbolic import Identity, seed, seed_strict

    found = [v for v in seed.seed_formulas().values() if isinstance(v, Identity)]
    found += [seed_strict.head_linear("none")[0], seed_strict.qk_d_model()[0]]
    found += [v for v in seed_strict.factor_risk().values() if isinstance(v, Identity)]
    return {identity.id: identity for identity in found}


@dataclass(frozen=True)
class Entry:
    """One statement with what was run for it: the claims present, the counterexamples found, the findings, the proofs."""

    number: int
    statement: Statement
    claims: tuple[str, ...]
    counterexamples: tuple[Counterexample, ...]
    findings: tuple[Finding, ...]


def _present(claim_id: str) -> bool:
    try:
        claim(claim_id)
        return True
    except KeyError:
        if claim_id in OPTIONAL_CLAIMS:
            return False
        raise


def build(*, max_examples: int = MAX_EXAMPLES) -> tuple[Entry, ...]:
    """Run every counterexample search and finding the statements name (each once: cached)."""
    return tuple(Entry(n, s, tuple(c for c in s.claims if _present(c)),
                       tuple(find_counterexample(case, max_examples=max_examples) for case in s.cases if _present(case.split("/")[0])),
                       tuple(finding(name) for name in s.findings))
                 for n, s in enumerate(STATEMENTS, 1))


# ------------------------------------------------------------------ rendering
def _cell(text: str, width: int = 90) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _claim_line(claim_id: str) -> str:
    c = claim(claim_id)
    return f"`{claim_id}`: {c.statement} (holds when: {c.holds_when})"


def _counterexample(ce: Counterexample, shown: dict[str, int], number: int) -> list[str]:
    """The counterexample in full the first time, then a reference to where it is shown."""
    if ce.case in shown:
        return [f"- Counterexample `{ce.case}` (dropped: {ce.dropped}): as in entry {shown[ce.case]}: {ce.evidence.verdict}, "
                f"relative error {ce.evidence.max_rel:.2e}.", ""]
    shown[ce.case] = number
    lines = [f"- Counterexample `{ce.case}` (dropped: {ce.dropped}):", "", "  ```text"]
    lines += [f"  {line.strip()}" for line in ce.render().splitlines()[1:]]
    return lines + ["  ```", ""]


def _finding(f: Finding, shown: dict[str, int], number: int) -> list[str]:
    """What the run measured the first time, then a reference to where it is shown."""
    outcome = "holds" if f.holds else "does not hold"
    key = f"run:{f.name}"
    if key in shown:
        return [f"- Run: {f.title}: as in entry {shown[key]} (the seed's statement {outcome} there).", ""]
    shown[key] = number
    out = [f"- Run: {f.title} (the seed's statement {outcome} here).", ""]
    for i, line in enumerate(f.lines):
        out.append(f"  {line}" if line else "")
        following = f.lines[i + 1] if i + 1 < len(f.lines) else ""
        if line and following and not (line.startswith("|") and following.startswith("|")):
            out.append("")  # one paragraph a line; a table's rows stay together
    out.append("")
    if f.counterexample is not None:
        out += _counterexample(f.counterexample, shown, number)
    return out


def _entry(e: Entry, shown: dict[str, int]) -> list[str]:
    s = e.statement
    out = [f"### {e.number}. {_cell(s.quote, 80)}", "", f"> {s.quote}", "", f"**Verdict: {s.verdict}.** {s.reason}", ""]
    if e.claims:
        out += ["Claims:", ""] + [f"- {_claim_line(c)}" for c in e.claims] + [""]
    if s.proofs:
        table = proofs()
        out += ["Proved (symbolic derivations, every step checked):", ""]
        out += [f"- `{p}`: {table[p].statement}" for p in s.proofs] + [""]
    for ce in e.counterexamples:
        out += _counterexample(ce, shown, e.number)
    for f in e.findings:
        out += _finding(f, shown, e.number)
    return out


_INTRO = """\
Every formal statement of the seed (`seed/transformer-circuits-framework.txt`, beside
DESIGN.md), quoted with its section, mapped to the claims that check it, with a verdict:

- **exact**: holds for every architecture of the family (or by definition, or by proof);
- **exact under conditions**: holds under the stated conditions; each condition dropped
  gives a counterexample;
- **false**: fails in the seed's own setting (the counterexample is shown);
- **not a formal statement**: a framing or metaphor, listed at the end.

Nothing here is written by hand but the quotes, the verdicts and their reasons: every
counterexample is produced by running its claim with one condition dropped
(`circuitproof.properties.counterexamples`: `hypothesis.find`, derandomized, no database,
{budget} examples, shrunk to the simplest model) or on a hand-built circuit
(`circuitproof.numeric.circuits`), and the Evidence line is the claim's own report
(relative error against the tolerance, and where). Claims `seed.*` evaluate the seed's
formulas as it writes them (`circuitproof.properties.seed_claims`). Row convention
throughout (DESIGN.md): the seed's `W_U x` is our `x W_U`, its `W_O W_V` our `W_V W_O`.

Generated by `{command}`; do not edit by hand."""


def render(entries: tuple[Entry, ...], *, max_examples: int = MAX_EXAMPLES) -> str:
    """The register as Markdown."""
    counts = {v: sum(e.statement.verdict == v for e in entries) for v in (EXACT, CONDITIONAL, FALSE, INFORMAL)}
    out = ["# The seed register", "", _INTRO.format(budget=max_examples, command=COMMAND), "",
           "## Summary", "", ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", "",
           "| # | section | statement | verdict |", "| --- | --- | --- | --- |"]
    out += [f"| {e.number} | {_cell(e.statement.section, 60)} | {_cell(e.statement.quote, 70)} | {e.statement.verdict} |"
            for e in entries]
    out.append("")
    section, shown = None, {}
    for e in entries:
        if e.statement.verdict == INFORMAL:
            continue
        if e.statement.section != section:
            section = e.statement.section
            out += [f"## {section}", ""]
        out += _entry(e, shown)
    out += ["## Not formal statements", ""]
    for e in entries:
        if e.statement.verdict == INFORMAL:
            out += [f"- {e.number}. *{e.statement.section}*: \"{e.statement.quote}\" {e.statement.reason}"]
    out.append("")
    return "\n".join(out)


def markdown(*, max_examples: int = MAX_EXAMPLES) -> str:
    """Build and render the register."""
    return render(build(max_examples=max_examples), max_examples=max_examples)

