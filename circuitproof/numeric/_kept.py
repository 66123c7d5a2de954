"""What is computed from a Weights object and kept with it, for every later caller with the same object.

Weights are immutable, and a drawn model's are shared by every example of its
architecture and seed, so a value computed from them alone (a transformed copy, the
atoms bound from them, a forward pass on given tokens) serves each of those examples.
One bounded store serves every such use; its entries are keyed by the Weights object's
id and the caller's key, and keep the object itself, so that its id cannot be reused
while the entry lives.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from ._weights import Weights

__all__ = ["kept_per_weights"]

_KEPT_MAX = 256
_KEPT: dict[tuple, tuple] = {}  # (id(weights), key) -> (weights, value)


def kept_per_weights(weights: Weights, key: Hashable, make: Callable[[], object]) -> object:
    """``make()``, computed once per Weights object and ``key`` and kept (at most ``_KEPT_MAX`` entries, the oldest go first).

    The value is shared: callers must not change it (a dict the caller fills, such as the bound atoms, is its own to fill).
    """
    entry = _KEPT.get((id(weights), key))
    if entry is not None and entry[0] is weights:
        return entry[1]
    value = make()
    if len(_KEPT) >= _KEPT_MAX:
        del _KEPT[next(iter(_KEPT))]
    _KEPT[id(weights), key] = (weights, value)
    return value
