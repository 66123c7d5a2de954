"""The symbolic layer (sympy only): checked derivations of the framework's identities.

An :class:`Identity` holds an id, ``lhs`` and ``rhs`` (sympy matrix expressions,
row convention), its :class:`Assumption` s on the ``Arch``, and its derivation,
every :class:`Step` checked when it is built. ``catalogue.general()`` proves the
whole catalogue (for every depth, by induction); ``catalogue.instances(arch)``
gives the concrete identities for one architecture, which ``Identity.compile()``
turns into functions of named tensors for the numeric layer. A
:class:`Refutation` shows where a claim breaks and the term that breaks it.
``python -m circuitproof.symbolic`` prints every derivation in Markdown. This
layer never imports torch.
"""

from . import _compile_extra, norms  # noqa: F401 - importing them registers the opaque functions' meaning with the compiler
from ._compile import CompiledIdentity, compile_expr
from ._core import ALWAYS, Assumption, DerivationError, Identity, Refutation, Rule, Step, check_step, is_zero
from .catalogue import general, instances, refutations

__all__ = ["Identity", "Assumption", "Rule", "Step", "Refutation", "DerivationError", "ALWAYS", "check_step", "is_zero",
           "CompiledIdentity", "compile_expr", "general", "instances", "refutations"]
