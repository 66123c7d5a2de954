"""Render an Identity as Markdown with LaTeX, or as plain text, step by step with justifications."""

from __future__ import annotations

import sympy as sp

__all__ = ["render"]

ROW_CONVENTION = (
    "Row convention: each position's stream is a row, so a sequence is a P x d_model matrix X and a linear map "
    "is X W. The seed's column convention writes W x; its W_Q^T W_K is our W_Q W_K^T and its W_O W_V our W_V W_O."
)


def _tex(e: sp.Basic) -> str:
    return sp.latex(e)


def render(identity, fmt: str = "markdown") -> str:
    """The identity, its assumptions and every derivation step (parts such as induction cases follow)."""
    if fmt not in ("markdown", "text"):
        raise ValueError(f"render: fmt={fmt!r} must be 'markdown' or 'text'")
    md = fmt == "markdown"
    lines = [f"### `{identity.id}`" if md else f"== {identity.id} ==", "", identity.statement, ""]
    if md:
        lines += [f"$$ {_tex(identity.lhs)} = {_tex(identity.rhs)} $$", ""]
    else:
        lines += [f"  {identity.lhs} = {identity.rhs}", ""]
    lines.append("Assumptions: " + "; ".join(f"{a.name} ({a.reason})" for a in identity.assumptions))
    if identity.frozen:
        lines.append("Frozen (named symbols, not recomputed): " + ", ".join(identity.frozen))
    if identity.notes:
        lines.append(f"Notes: {identity.notes}")
    lines += ["", "Derivation:" if not md else "**Derivation**", ""]
    lines.append(f"{'1.' if md else ' 0.'} {'$' + _tex(identity.lhs) + '$' if md else identity.lhs}  (left-hand side)")
    for number, step in enumerate(identity.steps, 1):
        rule = f" [{step.rule.kind}: {step.rule.name}]" if step.rule else " [algebra: expansion]"
        form = f"$= {_tex(step.expr)}$" if md else f"= {step.expr}"
        lines.append(f"{'1.' if md else f'{number:2d}.'} {form}  — {step.why}{rule}")
    for part in identity.parts:
        lines += ["", render(part, fmt).replace("### ", "#### ", 1) if md else render(part, fmt)]
    return "\n".join(lines)
