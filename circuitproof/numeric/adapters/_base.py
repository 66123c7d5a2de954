"""What every adapter shares: the Adapter interface, a state guard for the user's model, and hook recording.

An adapter reads a real implementation into circuitproof's canonical terms:

- ``Adapter.arch`` and ``Adapter.weights``: read from the model's config and
  parameters, converted to DESIGN.md's row convention (no forward pass needed);
- ``Adapter.trace(tokens)``: the implementation's *own* forward pass, captured
  with forward hooks on its own modules and returned as a
  :class:`~circuitproof.numeric.Trace`;
- ``Adapter.build(arch, weights)``: the inverse, a real model of the family
  carrying exactly those weights;
- ``Adapter.trace(tokens, edit=...)``: the same forward pass with components
  replaced by forward hooks at three hook points each family names
  (``embed_point``, ``out_proj``, ``mlp_module``), for causal interventions
  (:mod:`circuitproof.numeric.interventions`).

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

from ... import CircuitproofError, ShapeError, UnsupportedError
from ...arch import Arch
from .._trace import Trace
from .._weights import Weights

__all__ = ["Adapter", "AdapterError", "preserved", "Recorder", "Edit"]

# edit(name, layer, value) -> value of the same shape: see Adapter.trace
Edit = Callable[[str, "int | None", torch.Tensor], torch.Tensor]


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

    # hook points of an intervention (per family; the default says the family names none)
    def embed_point(self) -> tuple[torch.nn.Module, str]:
        """The module where ``m (W_E[t] + W_pos[p])`` ``[B, P, D]`` passes, before any embedding norm, and whether
        it is that module's ``"input"`` or ``"output"`` (where ``trace`` records ``embed``)."""
        raise UnsupportedError(f"{type(self).__name__} names no embedding hook point; interventions need embed_point()")

    def out_proj(self, layer: int) -> torch.nn.Module:
        """Layer ``layer``'s attention output projection, whose input is ``z`` ``[B, P, H*Dh]`` (query heads, head-major)."""
        raise UnsupportedError(f"{type(self).__name__} names no output projection; interventions need out_proj(layer)")

    def mlp_module(self, layer: int) -> torch.nn.Module:
        """The module whose output is layer ``layer``'s MLP output ``[B, P, D]``, before any output norm and the residual add."""
        raise UnsupportedError(f"{type(self).__name__} names no MLP module; interventions need mlp_module(layer)")

    def final_norm_module(self) -> torch.nn.Module:
        """The final norm: its input is ``x_L`` ``[B, P, D]``, its output ``N_f(x_L)`` (only where ``arch.final_norm``)."""
        raise UnsupportedError(f"{type(self).__name__} names no final norm; freezing its scale needs final_norm_module()")

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

    def trace(self, tokens: torch.Tensor, *, edit: Edit | None = None) -> Trace:
        """The implementation's own forward pass on ``tokens`` ([B, P] or [P]), in the model's dtype.

        Forces eager attention for the duration of the call (to observe the
        patterns) and restores everything afterwards, also on error.
        ``edit(name, layer, value) -> value`` replaces, through forward hooks, what
        passes the family's hook points: ``"embed"`` (layer None, ``[B, P, D]``, at
        ``embed_point``), ``"z"`` (``[B, P, H, Dh]``, the input of ``out_proj(layer)``
        split into query heads: head h writes ``z_h W_O[h]``) and ``"mlp_out"``
        (``[B, P, D]``, the output of ``mlp_module(layer)``) and, with a final norm,
        ``"final_scale"`` (layer None, ``[B, P, 1]``: its divisor ``s``, computed by the norm's
        definition from its input; an edited ``s'`` rescales the output to
        ``(N_f(x) - b_f) s / s' + b_f``, the norm with its divisor frozen at ``s'``). The hooks
        run before the trace's own, so the Trace records the edited values and all they change.
        """
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 1:
            tokens = tokens[None]
        device = next(self.model.parameters()).device
        with preserved(self.model) as rec, torch.no_grad():
            if edit is not None:
                self._hook_edit(rec, edit)
            return self._trace(tokens.to(device).long(), rec)

    def _hook_edit(self, rec: Recorder, edit: Edit) -> None:
        """Register ``edit`` at every hook point (before the trace's own hooks)."""
        H, Dh = self.arch.n_heads, self.arch.d_head

        def edited(name: str, layer: int | None, value: torch.Tensor) -> torch.Tensor:
            new = edit(name, layer, value)
            if not isinstance(new, torch.Tensor) or new.shape != value.shape:
                got = list(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                raise ShapeError(f"trace: edit({name!r}, layer={layer}) returned {got}; it must return a tensor of shape {list(value.shape)}")
            return new.to(dtype=value.dtype, device=value.device)

        module, side = self.embed_point()
        rec.replace(module, side, lambda v: edited("embed", None, v))
        for l in range(self.arch.n_layers):
            rec.replace(self.out_proj(l), "input", lambda z, l=l: edited("z", l, z.unflatten(-1, (H, Dh))).flatten(-2))
            if self.arch.has_mlp:
                rec.replace(self.mlp_module(l), "output", lambda v, l=l: edited("mlp_out", l, v))
        if self.arch.final_norm:
            rec.handles.append(self.final_norm_module().register_forward_hook(self._final_scale_hook(edited), with_kwargs=True))

    def _final_scale_hook(self, edited: Callable) -> Callable:
        """A forward hook on the final norm that offers its divisor to ``edited("final_scale", None, s)`` and applies the result."""
        from ..reference import norm as reference_norm

        arch, w = self.arch, self.weights

        def hook(mod, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            b = w.get("ln_final_b")
            b = None if b is None else b.to(out)
            live = reference_norm(arch, x, w.ln_final_w.to(x), b).scale  # [B, P, 1], by the norm's definition
            frozen = edited("final_scale", None, live)
            if frozen is live:
                return out
            ratio = (live / frozen).to(out)
            return out * ratio if b is None else (out - b) * ratio + b

        return hook

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, {self.arch!r})"


class Recorder:
    """Registers forward hooks on a model's modules and keeps what they see, by key.

    ``rec.output(module, key, pick)`` stores ``pick(output)`` under ``key`` on
    every call (one entry a call, in call order); ``rec.input(module, key, pick)``
    the same for the positional/keyword inputs. ``rec.stack(key)`` stacks the
    entries along a new leading axis (the layer axis); ``rec.replace(module, side, fn)``
    replaces what passes instead of keeping it (interventions). Every handle is
    removed by :func:`preserved` on exit.
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

    def replace(self, module: torch.nn.Module, side: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace ``module``'s ``side`` ("input": its first positional or ``hidden_states``; "output": its output, or the
        first element of a tuple output) by ``fn`` of it, on every call."""
        if side == "output":
            def hook(mod, args, kwargs, out):
                return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)

            self.handles.append(module.register_forward_hook(hook, with_kwargs=True))
        elif side == "input":
            def pre_hook(mod, args, kwargs):
                if args:
                    return (fn(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

            self.handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            raise ValueError(f"Recorder.replace: side={side!r} must be 'input' or 'output'")

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
