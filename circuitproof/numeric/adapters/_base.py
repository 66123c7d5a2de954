"""What every adapter shares: the Adapter interface, a state guard for the user's model, and hook recording.

An adapter reads a real implementation into circuitproof's canonical terms:

- ``Adapter.arch`` and ``Adapter.weights``: read from the model's config and
  parameters, converted to DESIGN.md's row convention (no forward pass needed);
- ``Adapter.trace(tokens)``: the implementation's *own* forward pass, captured
  with forward hooks on its own modules and returned as a
  :class:`~circuitproof.numeric.Trace`;
- ``Adapter.build(arch, weights)``: the inverse, a real model of the family
  carrying exactly those weights.

The user's model comes back exactly as it was: :func:`preserved` restores the
train/eval mode and the attention implementation and removes every hook, also
when the trace raises; the trace runs in the model's own dtype and device and
never changes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import ClassVar

import torch

from ... import CircuitproofError, UnsupportedError
from ...arch import Arch
from .._trace import Trace
from .._weights import Weights

__all__ = ["Adapter", "AdapterError", "preserved", "Recorder"]


class AdapterError(CircuitproofError):
    """A model could not be read, traced or built.

    The message names the model class, the module or tensor concerned and what
    was expected. Cause: a config this adapter does not cover, or a model whose
    modules were replaced. Fix: as the message says.
    """


class Adapter:
    """One family's reader, tracer and builder (subclasses fill in the class attributes and methods).

    Class attributes:
        family: the family name passed to ``build`` ("gpt2", "llama", ...).
        model_classes: the transformers class names this adapter reads.
        below_dtype_steps: the steps this implementation computes below the model's
            dtype whatever that dtype is (e.g. "softmax in float32"), each with the
            place in the source; empty when it computes in the model's dtype throughout.
    """

    family: ClassVar[str] = ""
    model_classes: ClassVar[tuple[str, ...]] = ()
    below_dtype_steps: ClassVar[tuple[str, ...]] = ()
    # Arch fields this family fixes, as values or Hypothesis strategies, passed to
    # properties.strategies.archs(**pinned) to draw only what the family can express
    pinned: ClassVar[dict[str, object]] = {}

    @classmethod
    def project(cls, arch: Arch) -> Arch:
        """Make switches that the family couples agree (default: unchanged), e.g. one bias flag for q, k, v, o."""
        return arch

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.arch: Arch = self.read_arch(model)
        self.weights: Weights = self.read_weights(model, self.arch)

    # ---------------------------------------------------------- per family
    @classmethod
    def read_arch(cls, model: torch.nn.Module) -> Arch:
        """The Arch of ``model``, from its config (raise UnsupportedError naming a config field it cannot express)."""
        raise NotImplementedError

    @classmethod
    def read_weights(cls, model: torch.nn.Module, arch: Arch) -> Weights:
        """The canonical Weights of ``model`` in its own dtype (every transpose and split named)."""
        raise NotImplementedError

    def _trace(self, tokens: torch.Tensor, rec: Recorder) -> Trace:
        """Run the model once with hooks registered through ``rec``; return the Trace."""
        raise NotImplementedError

    @classmethod
    def cannot_express(cls, arch: Arch) -> str | None:
        """None if the family can express ``arch``, else the feature it cannot, with its value."""
        raise NotImplementedError

    @classmethod
    def _build(cls, arch: Arch, weights: Weights) -> torch.nn.Module:
        """A model of the family with exactly ``weights`` (called after ``cannot_express`` said None)."""
        raise NotImplementedError

    # ------------------------------------------------------------- shared
    @classmethod
    def build(cls, arch: Arch, weights: Weights) -> torch.nn.Module:
        """A real model of this family, in ``weights``' dtype, eval mode, carrying exactly ``weights``."""
        if weights.arch != arch:
            raise AdapterError(f"build: weights are for {weights.arch!r}, not {arch!r}")
        reason = cls.cannot_express(arch)
        if reason is not None:
            raise UnsupportedError(f"build({arch!r}, family={cls.family!r}): {cls.family} cannot express {reason}")
        model = cls._build(arch, weights)
        return model.to(weights.dtype).eval()

    def trace(self, tokens: torch.Tensor) -> Trace:
        """The implementation's own forward pass on ``tokens`` ([B, P] or [P]), in the model's dtype.

        Forces eager attention for the duration of the call (to observe the
        patterns) and restores everything afterwards, also on error.
        """
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 1:
            tokens = tokens[None]
        device = next(self.model.parameters()).device
        with preserved(self.model) as rec, torch.no_grad():
            return self._trace(tokens.to(device).long(), rec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, {self.arch!r})"


class Recorder:
    """Registers forward hooks on a model's modules and keeps what they see, by key.

    ``rec.output(module, key, pick)`` stores ``pick(output)`` under ``key`` on
    every call (one entry a call, in call order); ``rec.input(module, key, pick)``
    the same for the positional/keyword inputs. ``rec.stack(key)`` stacks the
    entries along a new leading axis (the layer axis). Every handle is removed
    by :func:`preserved` on exit.
    """

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def _keep(self, key: str, value: torch.Tensor) -> None:
        self.values.setdefault(key, []).append(value.detach())

    def output(self, module: torch.nn.Module, key: str, pick: Callable[[object], torch.Tensor] = lambda out: out) -> None:
        """Keep ``pick(output)`` of each call of ``module``."""

        def hook(mod, args, kwargs, out):
            self._keep(key, pick(out))

        self.handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def input(self, module: torch.nn.Module, key: str, pick: Callable[[tuple, dict], torch.Tensor] | None = None) -> None:
        """Keep ``pick(args, kwargs)`` of each call of ``module`` (default: the first positional or ``hidden_states``)."""

        def first(args: tuple, kwargs: dict) -> torch.Tensor:
            return args[0] if args else kwargs["hidden_states"]

        chooser = pick or first

        def hook(mod, args, kwargs):
            self._keep(key, chooser(args, kwargs))

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def stack(self, key: str) -> torch.Tensor:
        if key not in self.values:
            raise AdapterError(f"trace: no value was recorded for {key!r}; the module hooked for it never ran")
        return torch.stack(self.values[key])

    def last(self, key: str) -> torch.Tensor:
        if key not in self.values:
            raise AdapterError(f"trace: no value was recorded for {key!r}; the module hooked for it never ran")
        return self.values[key][-1]

    def get(self, key: str) -> torch.Tensor | None:
        return self.stack(key) if key in self.values else None


def _attn_implementation(model: torch.nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


@contextlib.contextmanager
def preserved(model: torch.nn.Module) -> Iterator[Recorder]:
    """Eval mode and eager attention inside; the model's mode, attention implementation,
    dtypes, devices and hooks exactly as before on exit, also on error. Yields a Recorder."""
    training = model.training
    attn = _attn_implementation(model)
    dtypes = {name: (p.dtype, p.device) for name, p in model.named_parameters()}
    rec = Recorder()
    try:
        model.eval()
        if attn is not None and attn != "eager":
            model.set_attn_implementation("eager")
        yield rec
    finally:
        for handle in rec.handles:
            handle.remove()
        if attn is not None and _attn_implementation(model) != attn:
            model.set_attn_implementation(attn)
        model.train(training)
        for name, p in model.named_parameters():
            if (p.dtype, p.device) != dtypes[name]:  # pragma: no cover - we never cast; guard against a family that does
                raise AdapterError(f"trace changed {name} to {p.dtype} on {p.device}; this is a circuitproof bug")


def check_shape(model_name: str, tensor_name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``tensor`` if it has ``shape``, else AdapterError naming the model, the tensor and both shapes."""
    if tuple(tensor.shape) != tuple(shape):
        raise AdapterError(f"{model_name}: {tensor_name} has shape {list(tensor.shape)}, expected {list(shape)}")
    return tensor


def require(condition: bool, what: str) -> None:
    """Raise UnsupportedError(what) unless ``condition``: for config values an adapter cannot read."""
    if not condition:
        raise UnsupportedError(what)
