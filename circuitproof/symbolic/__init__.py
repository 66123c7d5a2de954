"""The symbolic layer (sympy only): checked derivations of the framework's identities.

Will hold ``Identity`` objects (id, lhs, rhs, assumptions as predicates on an
``Arch``, a list of checked derivation steps), their rendering to Markdown and
plain text, and ``compile()`` into functions of named tensors. Never imports torch.
"""

__all__: list[str] = []
