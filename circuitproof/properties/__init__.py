"""The properties layer: the claims catalogue, public Hypothesis strategies and the seed register.

Will hold ``claims`` (each ``Claim`` with ``applies(arch)`` and ``check(...) -> Evidence``,
evaluating the symbolic layer's compiled identities), ``strategies`` (``archs``,
``weights``, ``tokens``, ``models``) and the register mapping every sentence of the
seed to claim ids and verdicts.
"""

__all__: list[str] = []
