"""``python -m circuitproof.symbolic``: every derivation of the catalogue in Markdown, step by step.

Options: ``--text`` for plain text; ``--only ID`` for the identities whose id starts with ID.
"""

from __future__ import annotations

import argparse
import sys

from ._render import ROW_CONVENTION
from .catalogue import general, refutations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m circuitproof.symbolic", description=__doc__.splitlines()[0])
    parser.add_argument("--text", action="store_true", help="plain text instead of Markdown")
    parser.add_argument("--only", default="", help="only identities whose id starts with this")
    args = parser.parse_args(argv)
    fmt = "text" if args.text else "markdown"
    out = ["# circuitproof: the framework's identities, derived and checked", "", ROW_CONVENTION, ""]
    for identity in general():
        if identity.id.startswith(args.only):
            out += [identity.render(fmt), ""]
    out += ["## Where claims break", ""]
    for refutation in refutations():
        if refutation.claim.startswith(args.only):
            out += [f"- `{refutation.claim}`: the step *{refutation.failing.why}* fails; remainder "
                    + (f"${__import__('sympy').latex(refutation.remainder)}$" if fmt == "markdown" else str(refutation.remainder))
                    + f" — {refutation.term}"]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
