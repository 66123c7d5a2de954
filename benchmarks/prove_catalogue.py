"""How long proving the whole symbolic catalogue takes: every identity, the inductions, the unrollings for L = 1..6.

Run: python benchmarks/prove_catalogue.py
Prints the wall time of each phase (one process, cold sympy caches first, then warm).
"""

from __future__ import annotations

import time

import sympy


def main() -> None:
    from circuitproof import Arch
    from circuitproof.symbolic import catalogue

    t0 = time.perf_counter()
    identities = catalogue.general()
    t1 = time.perf_counter()
    refutations = catalogue.refutations()
    t2 = time.perf_counter()
    steps = sum(len(i.steps) + sum(len(p.steps) for p in i.parts) for i in identities)
    print(f"sympy {sympy.__version__}")
    print(f"catalogue.general():      {t1 - t0:6.2f} s  ({len(identities)} identities, {steps} checked steps incl. induction parts and unrollings)")
    print(f"catalogue.refutations():  {t2 - t1:6.2f} s  ({len(refutations)} refutations)")
    archs = [Arch(n_layers=3, n_heads=4), Arch(n_layers=3, n_heads=4, n_kv_heads=2, positional="rotary", norm="rmsnorm", gated=True),
             Arch(n_layers=3, n_heads=4, parallel=True, parallel_shared_norm=True), Arch(n_layers=3, n_heads=4, attn_only=True, norm="none")]
    for arch in archs:
        t = time.perf_counter()
        n = len(catalogue.instances(arch))
        print(f"catalogue.instances({arch.describe()[:40]}...): {time.perf_counter() - t:6.2f} s  ({n} identities)")
    print(f"total: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
