"""A drawn model: an architecture, its weights and a target that runs them, with the traces it ran kept.

:class:`Model` is what ``strategies.models`` draws (and what a failing example prints
as a constructor call). It runs its target once per distinct tokens, checks claims on
that trace with the target's own tolerance, reruns and interventions, and checks every
claim of a list on one forward pass (:meth:`Model.check_all`). Models of one architecture
and seed share one read-only Weights object, and what is computed from the weights alone
(gauged and folded copies, bound weight atoms) is kept with it, since Hypothesis draws the
same architecture and seed many times over.
"""

from __future__ import annotations

import functools

import torch

from .. import UnsupportedError
from ..arch import Arch
from ..numeric import Trace, Weights, run
from ..numeric._kept import kept_per_weights

__all__ = ["Model"]

_KEEP_TRACES = 4


@functools.lru_cache(maxsize=64)
def _random_weights(arch: Arch, seed: int, dtype: torch.dtype) -> Weights:
    """``Weights.random(arch, seed, dtype)``, kept for the next Model of the same architecture and seed.

    Hypothesis draws an architecture and a seed many times over (mutating and shrinking
    examples: 400 examples of the ci profile hold about 220 distinct pairs), and Weights
    are read-only, so one object serves them all.
    """
    return Weights.random(arch, seed, dtype=dtype)


def _reference_run(arch: Arch, weights: Weights, tokens: torch.Tensor, dtype: torch.dtype) -> Trace:
    """``run(arch, weights, tokens, dtype=dtype)``, kept with the Weights object per Arch, dtype and tokens (by shape and values).

    A pure function of immutable inputs: a drawn model's weights are shared by every
    example of its architecture and seed, and Hypothesis draws the same tokens for them
    now and then (one ci example in fifteen), so the forward pass, and the transformed
    weights' reruns, are run once for them (:func:`~circuitproof.numeric._kept.kept_per_weights`).
    Kept apart in inference mode (its tensors are not ordinary ones).
    """
    key = ("reference run", arch, dtype, torch.is_inference_mode_enabled(), _tokens_key(tokens))
    # the kept trace's tokens are its own, whatever the caller does with theirs
    return kept_per_weights(weights, key, lambda: run(arch, weights, torch.as_tensor(tokens).clone(), dtype=dtype))


def _tokens_key(tokens: torch.Tensor) -> tuple:
    """What identifies a batch of token ids: shape, dtype and the ids themselves."""
    t = torch.as_tensor(tokens)
    return tuple(t.shape), t.dtype, t.detach().cpu().contiguous().numpy().tobytes()


class Model:
    """An architecture, its weights (``Weights.random(arch, seed)``) and a target that runs them.

    ``target`` is ``"reference"`` (:func:`~circuitproof.numeric.run`) or a family of
    :data:`~circuitproof.numeric.adapters.FAMILIES`, built once with
    ``build(arch, weights, family)`` and traced through its adapter. ``repr`` is a
    valid constructor call, so a failing example can be pasted back.
    """

    def __init__(self, arch: Arch, seed: int = 0, target: str = "reference", dtype: torch.dtype = torch.float64):
        from ..numeric.adapters import FAMILIES

        if not isinstance(arch, Arch):
            raise ValueError(f"Model: arch={arch!r} must be an Arch")
        if target != "reference" and target not in FAMILIES:
            raise ValueError(f"Model: target={target!r} must be 'reference' or one of {FAMILIES}")
        self.arch, self.seed, self.target, self.dtype = arch, seed, target, dtype
        self._traces: dict[tuple, Trace] = {}  # tokens' key -> the target's trace of them (the last _KEEP_TRACES)
        self._last: tuple | None = None  # (tokens tensor, its version, trace) of the last call

    def __repr__(self) -> str:
        dtype = "" if self.dtype == torch.float64 else f", dtype={self.dtype}"
        return f"Model({self.arch!r}, seed={self.seed}, target={self.target!r}{dtype})"

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(repr(self))

    @functools.cached_property
    def weights(self) -> Weights:
        """``Weights.random(arch, seed, dtype)``: the same (read-only) object for every Model of that architecture and seed."""
        return _random_weights(self.arch, self.seed, self.dtype)

    @functools.cached_property
    def _adapter(self):
        from ..numeric.adapters import adapt, build

        return adapt(build(self.arch, self.weights, self.target))

    def trace(self, tokens: torch.Tensor) -> Trace:
        """The target's forward pass on ``tokens``, run once per distinct tokens (by shape and values) and kept.

        The last few traces are kept, so that checking every claim on the same tokens
        runs the model once; other tokens get a fresh forward pass.
        """
        last = self._last
        if last is not None and last[0] is tokens and last[1] == tokens._version:
            return last[2]  # the very tensor of the last call, not changed in place since (its version counter)
        key = _tokens_key(tokens)
        trace = self._traces.get(key)
        if trace is None:
            if self.target == "reference":
                trace = _reference_run(self.arch, self.weights, tokens, self.dtype)
            else:  # the kept trace's tokens are its own, whatever the caller does with theirs
                trace = self._adapter.trace(torch.as_tensor(tokens).clone())
            if len(self._traces) >= _KEEP_TRACES:
                del self._traces[next(iter(self._traces))]  # the oldest
            self._traces[key] = trace
        if isinstance(tokens, torch.Tensor):
            self._last = (tokens, tokens._version, trace)
        return trace

    def trace_of(self, arch: Arch, weights: Weights, tokens: torch.Tensor) -> Trace:
        """The same target carrying other weights (a transformed model); UnsupportedError if its family cannot express ``arch``."""
        if self.target == "reference":
            return _reference_run(arch, weights, tokens, self.dtype)
        from ..numeric.adapters import adapt, adapter_class, build

        reason = adapter_class(self.target).cannot_express(arch)
        if reason is not None:
            raise UnsupportedError(f"{self.target} cannot express {reason}")
        return adapt(build(arch, weights, self.target)).trace(tokens)

    @functools.cached_property
    def tolerance(self) -> tuple[float, str]:
        """The relative tolerance for checks on this target, and why it has that size."""
        from ._claim import RTOL_FLOAT32, RTOL_FLOAT32_REASON, RTOL_FLOAT64, RTOL_FLOAT64_REASON

        if self.dtype != torch.float64:
            return RTOL_FLOAT32, RTOL_FLOAT32_REASON
        if self.target == "reference":
            return RTOL_FLOAT64, RTOL_FLOAT64_REASON
        from ..numeric.adapters import adapter_class

        steps = adapter_class(self.target).below_dtype_steps
        if not steps:
            return RTOL_FLOAT64, f"{self.target} computes in float64 throughout; " + RTOL_FLOAT64_REASON
        short = "; ".join(step.split(":")[0] for step in steps)
        return RTOL_FLOAT32, f"{self.target} computes {len(steps)} steps in float32 whatever its dtype ({short}); " + RTOL_FLOAT32_REASON

    def check(self, claim, tokens: torch.Tensor, *, assume: bool = True):
        """``claim.check`` on this target's trace of ``tokens``, with its tolerance, its own reruns and interventions."""
        rtol, reason = self.tolerance
        return claim.check(self.arch, self.weights, self.trace(tokens), rtol=rtol, rtol_reason=reason,
                           rerun=lambda arch, weights: self.trace_of(arch, weights, tokens), assume=assume,
                           target=self.intervention_target)

    @functools.cached_property
    def intervention_target(self):
        """What runs this model with a component replaced (``numeric.interventions``): the reference, or the family's adapter."""
        from ..numeric.interventions import Reference

        return Reference(self.weights, self.dtype) if self.target == "reference" else self._adapter

    def check_all(self, claims, tokens: torch.Tensor, **options) -> list:
        """``[self.check(claim, tokens, **options) for claim in claims]``: every claim on one forward pass of ``tokens``.

        The trace is computed once (:meth:`trace` keeps it) and every claim reads it;
        each Evidence is exactly what :meth:`check` returns for that claim.
        """
        return [self.check(claim, tokens, **options) for claim in claims]
