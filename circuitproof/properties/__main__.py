"""``python -m circuitproof.properties --seed``: the seed register in Markdown (docs/seed-register.md).

Options: ``--write PATH`` writes it to PATH instead of printing it (byte for byte what
``--seed`` prints); ``--rich`` renders it for the terminal. Regenerate the docs with
``python -m circuitproof.properties --seed --write docs/seed-register.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m circuitproof.properties", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", action="store_true", help="the seed register: every formal statement of the seed, its claims and verdict")
    parser.add_argument("--write", metavar="PATH", help="write the Markdown to PATH (e.g. docs/seed-register.md) instead of printing it")
    parser.add_argument("--rich", action="store_true", help="render the Markdown for the terminal (with rich)")
    args = parser.parse_args(argv)
    if not args.seed:
        parser.error("nothing to print: pass --seed (e.g. python -m circuitproof.properties --seed --write docs/seed-register.md)")
    if args.write and args.rich:
        parser.error("--write writes the Markdown itself; drop --rich")
    from .seed_register import markdown

    text = markdown()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"wrote {args.write}", file=sys.stderr)
    elif args.rich:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
