"""The named matrices of the framework, in the row convention, and how the numeric layer finds them.

One sequence of ``P`` positions is a ``P x d_model`` matrix whose rows are the
positions' stream vectors (``x W`` applies ``W`` to every position at once); a
batch axis, where present, is carried along by the numeric evaluation. A bias is a
``1 x n`` row broadcast to every position by the column of ones ``1`` (``P x 1``).

============== ================ =============== ===========================================
atom           kind             shape           meaning
============== ================ =============== ===========================================
x_{l}          stream           P x d_model     the stream entering layer l (x_{L}: after the last)
x_{l}^{mid}    mid              P x d_model     the stream between attention and MLP
a_{l}          attn             P x d_model     what attention adds to the stream (after an output norm)
o_{l}          attn_raw         P x d_model     the attention output before any output norm
m_{l}          mlp              P x d_model     the MLP sublayer's output
h_{l,h}        head             P x d_model     one head's output z_h W_O^h
z_{l,h}        z                P x d_head      one head's value mix A v
A_{l,h}        pattern          P x P           one head's attention pattern (frozen)
X_{l}          attn_input       P x d_model     what attention reads (the normalised stream)
W_Q^{l,h} ...  W_Q, W_K, W_V    d_model x d_head
W_O^{l,h}      W_O              d_head x d_model
b_Q^{l,h} ...  b_Q, b_K, b_V    1 x d_head
b_O^{l}        b_O              1 x d_model
W_E, W_U       W_E, W_U         d_vocab x d_model, d_model x d_vocab
b_U            b_U              1 x d_vocab
1              ones             P x 1
============== ================ =============== ===========================================

Every atom is made by a function here, which records its kind and indices, so
that :func:`atom_of` tells the numeric layer which tensor an atom stands for.
Indices may be integers or sympy symbols (``x_{L}``, ``x_{L + 1}`` for induction).
"""

from __future__ import annotations

import sympy as sp

__all__ = ["P", "D_MODEL", "D_HEAD", "D_VOCAB", "D_MLP", "atom", "atom_of", "ones", "stream", "mid", "attn", "attn_raw", "mlp", "head",
           "pattern", "z", "attn_input", "weight", "bias", "ATOM_KINDS"]

P = sp.Symbol("P", integer=True, positive=True)
D_MODEL = sp.Symbol("d_model", integer=True, positive=True)
D_HEAD = sp.Symbol("d_head", integer=True, positive=True)
D_VOCAB = sp.Symbol("d_vocab", integer=True, positive=True)
D_MLP = sp.Symbol("d_mlp", integer=True, positive=True)

_REGISTRY: dict[str, tuple[str, tuple]] = {}
ATOM_KINDS: set[str] = set()


def _index(indices: tuple) -> str:
    return ",".join(str(i) for i in indices)


def atom(kind: str, name: str, rows: sp.Expr, cols: sp.Expr, *indices: object, sup: bool = False) -> sp.MatrixSymbol:
    """A named matrix of ``kind`` with ``indices``, registered for :func:`atom_of`."""
    full = name if not indices else (f"{name}^{{{_index(indices)}}}" if sup else f"{name}_{{{_index(indices)}}}")
    previous = _REGISTRY.get(full)
    if previous is not None and previous != (kind, indices):
        raise ValueError(f"atom name {full!r} already stands for {previous}")
    _REGISTRY[full] = (kind, tuple(indices))
    ATOM_KINDS.add(kind)
    return sp.MatrixSymbol(full, rows, cols)


def atom_of(symbol: sp.MatrixSymbol) -> tuple[str, tuple]:
    """(kind, indices) of an atom made here; KeyError for any other symbol."""
    return _REGISTRY[symbol.name]


def ones() -> sp.MatrixSymbol:
    """The column of ones, ``P x 1``: ``1 b`` adds the row ``b`` to every position."""
    return atom("ones", "1", P, 1)


def stream(l: object) -> sp.MatrixSymbol:
    return atom("stream", "x", P, D_MODEL, l)


def mid(l: object) -> sp.MatrixSymbol:
    return atom("mid", "x^{mid}", P, D_MODEL, l)


def attn(l: object) -> sp.MatrixSymbol:
    return atom("attn", "a", P, D_MODEL, l)


def attn_raw(l: object) -> sp.MatrixSymbol:
    """The attention sublayer's output before any output norm: ``sum_h h_{l,h} + 1 b_O``."""
    return atom("attn_raw", "o", P, D_MODEL, l)


def mlp(l: object) -> sp.MatrixSymbol:
    return atom("mlp", "m", P, D_MODEL, l)


def head(l: object, h: object) -> sp.MatrixSymbol:
    return atom("head", "h", P, D_MODEL, l, h)


def pattern(l: object, h: object) -> sp.MatrixSymbol:
    return atom("pattern", "A", P, P, l, h)


def z(l: object, h: object) -> sp.MatrixSymbol:
    return atom("z", "z", P, D_HEAD, l, h)


def attn_input(l: object) -> sp.MatrixSymbol:
    """What layer ``l``'s attention reads: the stream after its input norm (the stream itself without one)."""
    return atom("attn_input", "X", P, D_MODEL, l)


_WEIGHT_SHAPES = {
    "W_Q": (D_MODEL, D_HEAD), "W_K": (D_MODEL, D_HEAD), "W_V": (D_MODEL, D_HEAD), "W_O": (D_HEAD, D_MODEL),
    "W_E": (D_VOCAB, D_MODEL), "W_U": (D_MODEL, D_VOCAB), "W_in": (D_MODEL, D_MLP), "W_out": (D_MLP, D_MODEL),
}
_BIAS_WIDTH = {"b_Q": D_HEAD, "b_K": D_HEAD, "b_V": D_HEAD, "b_O": D_MODEL, "b_U": D_VOCAB, "b_in": D_MLP, "b_out": D_MODEL}


def weight(name: str, *indices: object) -> sp.MatrixSymbol:
    """A weight matrix by its canonical name, e.g. ``weight("W_Q", l, h)`` (``d_model x d_head``)."""
    rows, cols = _WEIGHT_SHAPES[name]
    return atom(name, name, rows, cols, *indices, sup=True)


def bias(name: str, *indices: object) -> sp.MatrixSymbol:
    """A bias row, ``1 x n``, e.g. ``bias("b_O", l)``."""
    return atom(name, name, 1, _BIAS_WIDTH[name], *indices, sup=True)
