"""The properties layer: the claims catalogue, public Hypothesis strategies, counterexamples and the seed register.

============================ =================================================================================
module                       what it holds
============================ =================================================================================
``claims``                   ``CLAIMS``: every claim of DESIGN.md as a ``Claim`` (``applies(arch)``,
                             ``check(arch, weights, trace) -> Evidence``), evaluating the symbolic layer's
                             compiled identities
``seed_claims``              ``SEED_CLAIMS``: the seed's stricter forms (``seed.*``), on the same machinery
``strategies``               public Hypothesis strategies: ``archs``, ``family_archs``, ``weights``, ``tokens``,
                             ``models`` (the reference or a real transformers model), and ``Model``
``counterexamples``          each conditional claim with one condition dropped: ``find_counterexample`` returns
                             Hypothesis' minimal failing model, rendered for a person
``seed_register``            every formal statement of the seed with its claims, verdict and the runs behind it
                             (``python -m circuitproof.properties --seed``; docs/seed-register.md)
============================ =================================================================================
"""

from . import claims, counterexamples, seed_claims, seed_register, strategies

__all__ = ["claims", "counterexamples", "seed_claims", "seed_register", "strategies"]
