"""Causal interventions: zero-ablation, mean-ablation and activation patching of one component.

A *component* is what writes to the residual stream, addressed as

============== ================================ =======================================================
address        value replaced (one forward)     what the stream receives
============== ================================ =======================================================
``Head(l, h)`` ``z_h`` ``[B, P, d_head]``        ``head_{l,h} = z_h W_O[l, h]`` (before the sum over heads
                                                 and ``b_O``); ``h`` a query head (GQA: heads share K, V)
``MLP(l)``     ``mlp_l`` ``[B, P, d_model]``     the MLP's output before any output norm and the add
``Embed()``    ``e`` ``[B, P, d_model]``         ``e = m (W_E[t] + W_pos[p])``, before the embedding norm
============== ================================ =======================================================

A head is replaced in ``z`` space because real implementations never materialise
``head_{l,h}``: their output projection reads the heads' concatenated ``z``, so replacing
``z_h`` by ``z'_h`` replaces the head's write by ``z'_h W_O[l, h]`` and nothing else. The
three interventions choose the replacement ``v'`` of a component's clean value ``v``:

- zero-ablation:     ``v' = 0``
- mean-ablation:     ``v' = mean_{b, p} v(reference_tokens)[b, p]``, one vector broadcast to every
  batch row and position (the mean over a reference batch's batch and position axes)
- activation patching: ``v' = v(source_tokens)``, the value a run on other tokens of the same
  shape computed (position by position)

and return :class:`Intervened`: the clean and the intervened :class:`Trace`, with
``effect = logits(v') - logits(v)`` ``[B, P, d_vocab]``. Everything downstream of the
component is recomputed by the target's own forward pass: a :class:`Reference` runs
:func:`~circuitproof.numeric.run` with its ``edit`` hook; an
:class:`~circuitproof.numeric.adapters.Adapter` runs the real model with forward hooks at the
hook points its family names (``embed_point``, ``out_proj``, ``mlp_module``), registered
inside :func:`~circuitproof.numeric.adapters.preserved`, so the model comes back unchanged,
also on error. Both traces record the replaced value (``z``, ``head_out``, ``mlp_out`` or
``embed``) and all it changed.

``freeze_final_norm=True`` keeps the final norm's divisor ``s`` ``[B, P, 1]`` at the clean run's
(``N_f(x) = (x - mean) / s g + b`` with ``s`` fixed, as in direct logit attribution): the
intervened run is then linear from the last layer's writes to the logits, and patching a
last-layer head moves the logits by exactly its direct effect
(``circuitproof.symbolic.interventions``); with the divisor live it does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import CircuitproofError, ShapeError, UnsupportedError
from ..arch import Arch
from ._trace import Trace
from ._weights import Weights
from .reference import norm, run

__all__ = ["Head", "MLP", "Embed", "Component", "ComponentError", "Reference", "as_target", "Intervened", "value", "final_scale",
           "run_replaced", "run_replaced_each", "zero_ablate", "mean_ablate", "patch"]


class ComponentError(CircuitproofError, ValueError):
    """A component address the architecture does not have: a layer or head out of range, an MLP in an attention-only model.

    The message names the address, the offending field and the valid range. Fix: address
    a component of ``arch`` (``Head(layer, head)`` with ``0 <= layer < n_layers``, ``0 <= head < n_heads``).
    """


def _index(owner: str, name: str, value: object, bound: int, bound_name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ComponentError(f"{owner}: {name}={value!r} must be an int")
    if not 0 <= value < bound:
        raise ComponentError(f"{owner}: {name}={value} is out of range; the architecture has {bound_name}={bound}")


# ------------------------------------------------------------------ addresses
@dataclass(frozen=True)
class Head:
    """Query head ``head`` of layer ``layer``: its value is ``z_h`` ``[B, P, d_head]``, its write ``z_h W_O[layer, head]``."""

    layer: int
    head: int

    def check(self, arch: Arch) -> None:
        """ComponentError unless ``arch`` has this head."""
        _index(repr(self), "layer", self.layer, arch.n_layers, "n_layers")
        _index(repr(self), "head", self.head, arch.n_heads, "n_heads")


@dataclass(frozen=True)
class MLP:
    """The MLP of layer ``layer``: its value is its output ``[B, P, d_model]`` before any output norm."""

    layer: int

    def check(self, arch: Arch) -> None:
        """ComponentError unless ``arch`` has this MLP."""
        if not arch.has_mlp:
            raise ComponentError(f"{self!r}: an attention-only architecture has no MLP")
        _index(repr(self), "layer", self.layer, arch.n_layers, "n_layers")


@dataclass(frozen=True)
class Embed:
    """The embedding ``m (W_E[t] + W_pos[p])`` ``[B, P, d_model]``, before the embedding norm."""

    def check(self, arch: Arch) -> None:
        """Every architecture has an embedding."""


Component = Head | MLP | Embed


def _check_component(component: object, arch: Arch) -> None:
    if not isinstance(component, (Head, MLP, Embed)):
        raise ComponentError(f"component={component!r} must be Head(layer, head), MLP(layer) or Embed()")
    component.check(arch)


# ------------------------------------------------------------------ targets
@dataclass(frozen=True)
class Reference:
    """The reference model (:func:`~circuitproof.numeric.run`) with ``weights``, computing in ``dtype`` (float64 by default)."""

    weights: Weights
    dtype: torch.dtype = torch.float64

    @property
    def arch(self) -> Arch:
        return self.weights.arch

    def trace(self, tokens: torch.Tensor, *, edit: Callable | None = None) -> Trace:
        return run(self.arch, self.weights, tokens, dtype=self.dtype, edit=edit)


def as_target(target: object):
    """A Reference or an Adapter: Weights become ``Reference(weights)``, a torch module ``adapt(module)``."""
    from .adapters import Adapter, adapt

    if isinstance(target, (Reference, Adapter)):
        return target
    if isinstance(target, Weights):
        return Reference(target)
    if isinstance(target, torch.nn.Module):
        return adapt(target)
    raise UnsupportedError(f"target={type(target).__name__} must be Weights, a Reference, an Adapter or a transformers model")


def _tokens(tokens: object) -> torch.Tensor:
    """``[B, P]`` (a ``[P]`` sequence gets a batch axis)."""
    t = torch.as_tensor(tokens)
    return t[None] if t.dim() == 1 else t


# ------------------------------------------------------------------ values
def value(trace: Trace, component: Component) -> torch.Tensor:
    """The component's value in ``trace``, where an intervention replaces it.

    ``Head(l, h)``: ``z_h`` = ``trace.z[l, :, :, h]`` ``[B, P, d_head]``; ``MLP(l)``:
    ``trace.mlp_out[l]`` ``[B, P, d_model]``; ``Embed()``: ``trace.embed`` ``[B, P, d_model]``.
    """
    _check_component(component, trace.arch)
    if isinstance(component, Head):
        found = None if trace.z is None else trace.z[component.layer, :, :, component.head]
    elif isinstance(component, MLP):
        found = None if trace.mlp_out is None else trace.mlp_out[component.layer]
    else:
        found = trace.embed
    if found is None:
        raise UnsupportedError(f"value: the trace does not record the value of {component!r}")
    return found


def _width(arch: Arch, component: Component) -> int:
    """The last axis of the component's value: d_head for a head (``z_h``), d_model otherwise."""
    return arch.d_head if isinstance(component, Head) else arch.d_model


def final_scale(target, trace: Trace) -> torch.Tensor:
    """The final norm's divisor ``s`` ``[B, P, 1]`` in ``trace`` of ``target``: observed, or by the norm's definition from its input."""
    target = as_target(target)
    nt = trace.norms.get("final")
    if not trace.arch.final_norm or nt is None:
        raise UnsupportedError("final_scale: the trace has no final norm")
    if nt.scale is not None:
        return nt.scale
    w = target.weights
    b = w.get("ln_final_b")
    return norm(trace.arch, nt.input, w.ln_final_w.to(nt.input), None if b is None else b.to(nt.input)).scale


def _edit(target, items: list[tuple[Component, torch.Tensor]], rows: int, frozen_scale: torch.Tensor | None) -> Callable:
    """The ``edit`` hook that puts item ``k``'s replacement in place of its component in batch rows ``[k rows, (k+1) rows)``
    (reference: head_out; adapters: z) and, if given, ``frozen_scale`` in place of the final norm's divisor."""
    wanted = {}  # (hook point name, layer or None) -> [(k, component, replacement)]
    for k, (component, replacement) in enumerate(items):
        if isinstance(component, Embed):
            key = ("embed", None)
        elif isinstance(component, MLP):
            key = ("mlp_out", component.layer)
        else:
            key = ("head_out" if isinstance(target, Reference) else "z", component.layer)
        wanted.setdefault(key, []).append((k, component, replacement))

    def edit(name: str, layer: int | None, v: torch.Tensor) -> torch.Tensor:
        if name == "final_scale":
            return v if frozen_scale is None else frozen_scale.to(dtype=v.dtype, device=v.device)
        here = wanted.get((name, layer if name != "embed" else None))
        if not here:
            return v
        v = v.clone()
        for k, component, replacement in here:
            new, chunk = replacement.to(dtype=v.dtype, device=v.device), slice(k * rows, (k + 1) * rows)
            if isinstance(component, Head):
                if name == "head_out":  # the reference's per-head writes [B, P, H, D]: z'_h W_O[l, h]
                    new = new @ target.weights.W_O[component.layer, component.head].to(v.dtype)  # [B, P, Dh] @ [Dh, D]
                v[chunk, :, component.head] = new
            else:
                v[chunk] = new
        return v

    return edit


def _replacement(target, tokens: torch.Tensor, component: Component, replacement: object) -> torch.Tensor:
    """``replacement`` expanded to the component's value shape ``[B, P, width]``; ShapeError if it does not broadcast."""
    _check_component(component, target.arch)
    shape = (*tokens.shape, _width(target.arch, component))
    replacement = torch.as_tensor(replacement)
    try:
        ok = torch.broadcast_shapes(replacement.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ShapeError(f"run_replaced: replacement for {component!r} has shape {list(replacement.shape)}; "
                         f"it must be {list(shape)} or broadcast to it")
    return replacement.expand(shape)


def run_replaced(target, tokens: torch.Tensor, component: Component, replacement: torch.Tensor, *,
                 final_scale: torch.Tensor | None = None) -> Trace:
    """The target's forward pass on ``tokens`` ``[B, P]`` with ``component``'s value replaced by ``replacement``.

    ``replacement`` has the component's value shape ``[B, P, width]`` (``width`` d_head for a
    head, d_model otherwise) or broadcasts to it (``[width]``). ``target``: a
    :class:`Reference`, an :class:`~circuitproof.numeric.adapters.Adapter`, ``Weights``
    (the reference) or a transformers model (adapted). ``final_scale`` ``[B, P, 1]``, if
    given, freezes the final norm's divisor at it (e.g. the clean run's, :func:`final_scale`).
    Raises ComponentError for an address the architecture lacks, ShapeError for a
    replacement or final scale of another shape, UnsupportedError for a family that names
    no hook point or an architecture without a final norm to freeze.
    """
    return run_replaced_each(target, tokens, [(component, replacement)], final_scale=final_scale)


def run_replaced_each(target, tokens: torch.Tensor, items, *, final_scale: torch.Tensor | None = None) -> Trace:
    """:func:`run_replaced` for each ``(component, replacement)`` of ``items``, all in one forward pass of ``K`` copies of ``tokens``.

    Copy ``k`` (batch rows ``[k B, (k+1) B)`` of the returned Trace, ``K B`` rows in all) is the run
    with item ``k``'s component replaced and nothing else: the rows of a batch never read each
    other, so each copy is the forward pass :func:`run_replaced` would do for its item alone.
    ``final_scale`` ``[B, P, 1]`` freezes the final norm's divisor in every copy. Raises as
    :func:`run_replaced` does.
    """
    target = as_target(target)
    tokens = _tokens(tokens)
    items = [(component, _replacement(target, tokens, component, replacement)) for component, replacement in items]
    if not items:
        raise ValueError("run_replaced_each: items is empty; give at least one (component, replacement)")
    K, B = len(items), tokens.shape[0]
    if final_scale is not None:
        if not target.arch.final_norm:
            raise UnsupportedError(f"run_replaced: final_scale given, but {target.arch!r} has no final norm")
        if tuple(final_scale.shape) != (*tokens.shape, 1):
            raise ShapeError(f"run_replaced: final_scale has shape {list(final_scale.shape)}; it must be {[*tokens.shape, 1]}")
        final_scale = final_scale.repeat(K, 1, 1)
    trace = target.trace(tokens.repeat(K, 1), edit=_edit(target, items, B, final_scale))
    if isinstance(target, Reference) and trace.z is not None and any(isinstance(c, Head) for c, _ in items):
        z = trace.z.clone()  # the reference replaced the write; record the z that writes it, as an adapter's trace does
        for k, (component, replacement) in enumerate(items):
            if isinstance(component, Head):
                z[component.layer, k * B:(k + 1) * B, :, component.head] = replacement.to(z.dtype)
        trace = dataclasses.replace(trace, z=z)
    return trace


# ------------------------------------------------------------------ the three interventions
@dataclass(frozen=True)
class Intervened:
    """The clean and the intervened forward passes of one intervention on ``component``."""

    component: Component
    clean: Trace
    intervened: Trace

    @property
    def effect(self) -> torch.Tensor:
        """``logits(intervened) - logits(clean)`` ``[B, P, d_vocab]``."""
        if self.clean.logits is None or self.intervened.logits is None:
            raise UnsupportedError("Intervened.effect: the target computes no logits (a model without its LM head)")
        return self.intervened.logits - self.clean.logits


def _intervene(target, component: Component, tokens: torch.Tensor, replacement: Callable[[object], torch.Tensor],
               freeze_final_norm: bool) -> Intervened:
    target = as_target(target)
    _check_component(component, target.arch)
    tokens = _tokens(tokens)
    clean = target.trace(tokens)
    frozen = final_scale(target, clean) if freeze_final_norm and target.arch.final_norm else None
    return Intervened(component, clean, run_replaced(target, tokens, component, replacement(target), final_scale=frozen))


def zero_ablate(target, component: Component, tokens: torch.Tensor, *, freeze_final_norm: bool = False) -> Intervened:
    """Zero-ablate ``component`` on ``tokens``: its value replaced by 0 (a head's write ``0 W_O = 0``).

    ``freeze_final_norm``: keep the final norm's divisor at the clean run's (no effect without a final norm).
    """
    return _intervene(target, component, tokens, lambda t: torch.zeros(_width(t.arch, component)), freeze_final_norm)


def mean_ablate(target, component: Component, tokens: torch.Tensor, *, reference_tokens: torch.Tensor,
                freeze_final_norm: bool = False) -> Intervened:
    """Mean-ablate ``component`` on ``tokens``: its value replaced by its mean over ``reference_tokens``' batch and positions.

    ``v' = (1 / (B_r P_r)) sum_{b, p} v(reference_tokens)[b, p]`` (``[width]``), broadcast to every
    batch row and position; ``reference_tokens`` ``[B_r, P_r]`` may have any shape.
    """
    ref = _tokens(reference_tokens)
    return _intervene(target, component, tokens, lambda t: value(t.trace(ref), component).mean(dim=(0, 1)), freeze_final_norm)


def patch(target, component: Component, tokens: torch.Tensor, *, source_tokens: torch.Tensor,
          freeze_final_norm: bool = False) -> Intervened:
    """Patch ``component`` on ``tokens`` with its activation on ``source_tokens`` (same shape ``[B, P]``), position by position.

    ``v' = v(source_tokens)`` ``[B, P, width]``; ``freeze_final_norm`` as :func:`zero_ablate`.
    """
    tokens, source = _tokens(tokens), _tokens(source_tokens)
    if source.shape != tokens.shape:
        raise ShapeError(f"patch: source_tokens has shape {list(source.shape)}; it must have the shape of tokens, {list(tokens.shape)}")
    return _intervene(target, component, tokens, lambda t: value(t.trace(source), component), freeze_final_norm)
